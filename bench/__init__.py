"""detnas.bench: the latency oracle (torch / ONNX Runtime / TensorRT), latency cache, device profiles.

Names are resolved lazily so `import detnas.bench` (and `detnas --help`) does not import torch or onnxruntime.
"""

from __future__ import annotations

from detnas.lazy import lazy_exports

_EXPORTS = {
    "DeviceProfile": "detnas.bench.profile_record",
    "load_profile": "detnas.bench.profile",
    "predict_latency": "detnas.bench.profile",
    "build_profile": "detnas.bench.profile",
    "measure_arch": "detnas.bench.oracle",
    "measure_module": "detnas.bench.oracle",
    "measure_onnx": "detnas.bench.oracle",
    "measure_engine": "detnas.bench.oracle",
    "TimingProtocol": "detnas.bench.oracle",
    "BackendOptions": "detnas.bench.oracle",
    "TrainedDetector": "detnas.bench.oracle",
    "LatencyResult": "detnas.bench.result",
    "Scope": "detnas.bench.result",
    "LatencyCache": "detnas.bench.cache",
    "collect_fingerprint": "detnas.bench.fingerprint",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("detnas.bench", _EXPORTS)
