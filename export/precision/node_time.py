"""Where an ONNX file spends its time: ONNX Runtime's own profiler, per node, on the CPU.

The partial-INT8 table gives each layer kept in FP32 its share of the file's node time, so the cost of keeping it
is visible next to its sensitivity. ORT's profile names a node's kernel `<node name>_kernel_time`. The session runs
with basic graph optimizations only: the extended level's NCHWc layout transformation renames the Conv nodes it
converts (after their output tensor), so no layer could be found; a node it still fused is named after the first
one plus `_token_N`, which is stripped, and a layer it renamed otherwise has no share (the table prints '-').
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PROFILE_RUNS = 3  # runs profiled after one warm-up


def node_time_shares(path: str | Path, batch: np.ndarray, runs: int = PROFILE_RUNS) -> dict[str, float]:
    """Node name -> its share of the summed kernel time of `runs` runs of `batch` (the first run is a warm-up)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory(prefix="detnas-profile-") as work:
        options.profile_file_prefix = str(Path(work) / "ort")  # ORT writes the trace to the working folder otherwise
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.ascontiguousarray(batch, dtype=np.float32)}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, float] = {}
    for event in _timed_runs(events, runs):
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = re.sub(r"_token_\d+$", "", name[: -len("_kernel_time")])
            times[node] = times.get(node, 0.0) + float(event.get("dur", 0))
    total = sum(times.values())
    return {node: t / total for node, t in times.items()} if total else {}


def _timed_runs(events: Sequence[dict], runs: int) -> list[dict]:
    """The events of the last `runs` model runs (the warm-up's are dropped): those after the (runs+1)-th last
    `model_run` start."""
    starts = [e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first = sorted(starts)[-runs] - 1 if len(starts) >= runs else -1
    return [e for e in events if e.get("ts", 0) >= first]
