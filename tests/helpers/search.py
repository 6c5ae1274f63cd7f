"""Deterministic test doubles for the search's evaluator interfaces: functions of the arch, so the algorithm
can be checked exactly (and fast) without a supernet; and the tiny supernet the end-to-end search tests run."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from detnas.arch import Arch
from detnas.bench.stats import TimingStats
from detnas.checkpoint import save_checkpoint
from detnas.search.records import Latency
from detnas.space import SearchSpace, register_space

TINY = register_space(SearchSpace("search-test-tiny", 8, (16, 32, 64, 128), (2, 2, 3, 2), 64))


def _jitter(arch: Arch) -> float:
    return int(hashlib.sha256(arch.hash.encode()).hexdigest()[:8], 16) / 16**8


class FakeAccuracy:
    """AP grows with the kernel size of each block (bigger ops 'see more') plus a hash-derived wiggle."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls: list[str] = []
        self.interrupt_after = interrupt_after
        self.last_timing: dict[str, float] = {}

    def evaluate(self, arch: Arch) -> dict[str, float]:
        if self.interrupt_after is not None and len(self.calls) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(arch.hash)
        ap = 0.1 + 0.02 * sum(arch.choices) + 0.01 * _jitter(arch)
        return {"AP": ap, "AP50": min(1.0, ap * 1.6), "AP75": ap * 0.9}


class FakeLatency:
    """Latency is a per-block sum that grows with the choice index; measured or predicted as asked."""

    fingerprint = "fake-device"

    def __init__(self, source: str = "measured", offset_ms: float = 0.0, fresh_offset_ms: float = 0.0) -> None:
        self.source = source
        self.offset_ms = offset_ms
        self.fresh_offset_ms = fresh_offset_ms
        self.calls: list[str] = []
        self.fresh_calls: list[list[str]] = []

    def latency(self, arch: Arch) -> Latency:
        self.calls.append(arch.hash)
        median = self.median(arch)
        return Latency.predicted(median, median * 1.04) if self.source == "predicted" else self._measured(median, 5)

    def median(self, arch: Arch) -> float:
        return 1.0 + sum(0.25 * (1 + c) for c in arch.choices) + 0.05 * _jitter(arch) + self.offset_ms

    @staticmethod
    def _measured(median: float, n: int) -> Latency:
        return Latency.measured(TimingStats(n=n, median_ms=median, p90_ms=median * 1.05, p99_ms=median * 1.08,
                                            min_ms=median * 0.98, mean_ms=median * 1.01, std_ms=median * 0.02,
                                            cv=0.02 / 1.01), upper_ms=median * 1.03)

    def fresh(self, archs: list[Arch], rounds: int) -> list[Latency]:
        """A fresh timing: `fresh_offset_ms` slower than `latency` says (a device drifting since the search)."""
        self.fresh_calls.append([a.hash for a in archs])
        return [self._measured(self.median(a) + self.fresh_offset_ms, 5 * rounds) for a in archs]


def tiny_search_supernet(root: Path, tmp: Path) -> dict[str, Path]:
    """An untrained FPN supernet of TINY (64-96 px) saved under `tmp`, with a 6-image search-validation split of
    the COCO set at `root`: what the search's end-to-end tests run on. {root, train, val, ckpt, tmp}"""

    from detnas.data import CocoDetection
    from detnas.data.split import split_coco

    train_json, val_json = split_coco(root / "annotations" / "instances_train2017.json", 6, 0, tmp / "split")
    classes = CocoDetection(val_json, root / "train2017").classes
    save_tiny_supernet(tmp / "supernet", classes, 64, 96)
    return {"root": root, "train": train_json, "val": val_json, "ckpt": tmp / "supernet", "tmp": tmp}


def save_tiny_supernet(path: Path, classes: Sequence[str], min_size: int, max_size: int) -> None:
    """An untrained FPN supernet-det checkpoint of TINY (seed 0) for `classes`, trained at min/max size."""
    from detnas.detection import build_detector
    from detnas.pixels import DEFAULT_PIXELS
    from detnas.supernet import Supernet

    torch.manual_seed(0)
    detector = build_detector("fpn", Supernet(TINY), len(classes) + 1, min_size, max_size, DEFAULT_PIXELS)
    meta = {"kind": "supernet-det", "space": TINY.to_dict(), "arch": None, "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": list(classes), "num_classes": len(classes),
            "recipe": {"min_size": min_size, "max_size": max_size}, "detector": "fpn"}
    save_checkpoint(path, detector.state_dict(), meta)


def search_args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """`detnas search run` on `tiny_search_supernet`'s files at the smallest budget."""
    return ["search", "run", "--supernet", str(s["ckpt"]), "--ann", str(s["val"]), "--images",
            str(s["root"] / "train2017"), "--bn-ann", str(s["train"]), "--out", str(out), "--backend", "ort",
            "--latency-runs", "10", "--latency-cache", str(s["tmp"] / "latency.sqlite"), "--population", "2",
            "--parents", "2", "--mutations", "1", "--crossovers", "1", "--randoms", "0", "--bn-count", "2",
            "--bn-batch", "2", "--max-images", "2", "--proposals", "4", *extra]
