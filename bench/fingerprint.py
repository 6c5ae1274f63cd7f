"""Environment fingerprint stored with every latency number, so a figure is never read out of its context.

The fingerprint names what determines latency (device, driver, runtime versions, CPU, threads). Its hash keys
the latency cache and ties a device profile to the machine it was measured on. Volatile readings (GPU clocks,
throttle reasons) are recorded beside it but kept out of the hash.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from detnas.jsonout import JsonRecord

UNAVAILABLE = "unavailable"


def package_version(*names: str) -> str:
    """Installed version of the first distribution found, read from metadata (nothing is imported)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return UNAVAILABLE


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo on Linux, else what the platform module reports."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNAVAILABLE


@dataclass(frozen=True)
class Fingerprint(JsonRecord):
    """What a latency depends on besides the model; `device` is the GPU name, or the CPU model for CPU runs."""

    device: str
    driver: str
    cuda: str
    tensorrt: str
    onnxruntime: str
    torch: str
    cpu: str
    threads: int

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def differences(self, other: Fingerprint) -> list[str]:
        """Human-readable 'field: a != b' for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {mine[k]} != {theirs[k]}" for k in mine if mine[k] != theirs[k]]


def collect_fingerprint(device: str, threads: int) -> Fingerprint:
    """Fingerprint of this machine for runs on `device` ('cpu' or 'cuda[:N]') with `threads` CPU threads."""
    import torch

    on_gpu = device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        from detnas.errors import DetnasError

        raise DetnasError(f"device '{device}' requested but torch sees no CUDA GPU; use --device cpu")
    index = (torch.device(device).index or 0) if on_gpu else 0
    return Fingerprint(
        device=torch.cuda.get_device_name(index) if on_gpu else cpu_model(),
        driver=nvml_driver_version() if on_gpu else "none",
        cuda=(torch.version.cuda or "none") if on_gpu else "none",
        tensorrt=package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-cu13"),
        onnxruntime=package_version("onnxruntime-gpu", "onnxruntime"),
        torch=torch.__version__,
        cpu=cpu_model(),
        threads=threads,
    )


def _nvml() -> Any | None:
    """The pynvml module (from nvidia-ml-py), initialised, or None when it is missing or finds no driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # ImportError, or NVMLError when no NVIDIA driver is loaded: both mean "cannot read"
        return None


def nvml_driver_version() -> str:
    nvml = _nvml()
    if nvml is None:
        return UNAVAILABLE
    version = nvml.nvmlSystemGetDriverVersion()
    return version.decode() if isinstance(version, bytes) else str(version)


def gpu_state(index: int = 0) -> dict[str, Any]:
    """SM / memory clocks (MHz), temperature and active throttle reasons right now; marked unavailable without NVML."""
    nvml = _nvml()
    if nvml is None:
        return {"nvml": UNAVAILABLE, "reason": "nvidia-ml-py not installed or no NVIDIA driver (pip install nvidia-ml-py)"}
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mask = nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
    reasons = [name[len("nvmlClocksThrottleReason"):] for name in dir(nvml)
               if name.startswith("nvmlClocksThrottleReason") and name != "nvmlClocksThrottleReasonAll"
               and isinstance(getattr(nvml, name), int) and getattr(nvml, name) and mask & getattr(nvml, name)]
    return {
        "sm_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
        "mem_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
        "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        "throttle_reasons": reasons,
    }
