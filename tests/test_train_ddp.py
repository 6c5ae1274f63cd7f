"""CPU processes under torchrun (gloo): same path on both ranks every iteration, identical weights at the end; a
one-process launch takes the same process-group path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.train import image_folder, write_space


def _torchrun_cls(tmp_path: Path, processes: int, iterations: int) -> Path:
    """`torchrun -m detnas train supernet-cls` on a tiny ImageFolder, 2 images per process per step; the run folder."""
    data = image_folder(tmp_path / "data", classes=2, per_class=2 * processes, size=32)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
           "-m", "detnas", "train", "supernet-cls", "--images", str(data), "--out", str(out),
           "--space", write_space(tmp_path), "-n", str(iterations), "--device", "cpu",
           "--set", f"batch_size={2 * processes}", "--set", "image_size=32", "--set", f"checkpoint_every={iterations}",
           "--set", "log_every=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_process_gloo_training_keeps_ranks_in_lockstep(tmp_path):
    out = _torchrun_cls(tmp_path, processes=2, iterations=4)
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["paths_sha256"] == ranks[1]["paths_sha256"]
    assert ranks[0]["parameters_sha256"] == ranks[1]["parameters_sha256"]
    # rank 0 alone wrote the run: one checkpoint, one metrics log with the paths it trained
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in logged if "loss" in r] == [2, 4]
    assert (out / "checkpoints" / "iter_0000004.state.json").is_file()
    meta = json.loads((out / "checkpoints" / "iter_0000004.state.json").read_text())
    assert sorted(meta["rng"]) == ["0", "1"]  # both ranks' RNG states are saved for an exact resume


@pytest.mark.slow
def test_one_process_torchrun_takes_the_process_group_path(tmp_path):
    """torchrun with one process joins a process group like any other launch (one GPU: NCCL, DDP, SyncBN)."""
    rank = json.loads((_torchrun_cls(tmp_path, processes=1, iterations=2) / "ranks" / "rank0.json").read_text())
    assert rank["world"] == 1 and rank["backend"] == "gloo" and rank["sync_bn"] is False  # SyncBN: CUDA detection runs only
