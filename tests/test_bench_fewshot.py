"""Few-shot device profile: the transfer (per-stage scales + intercept) recovers a known device from a few whole
archs, the CLI builds one from a reference profile with refusals of bad --archs, and it is judged against a full
profile's random archs."""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stdout

import numpy as np
import pytest

from detnas.arch import Arch, sample_arch
from detnas.bench.fewshot import judge_on
from detnas.bench.predictor import LatencyPredictor
from detnas.bench.profile import PROFILE_FORMAT, DeviceProfile
from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.space import SearchSpace, get_space

TINY = {"name": "fewshot-tiny", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [2, 2], "head_width": 32,
        "choices": [0, 3]}


def _reference(space: SearchSpace, seed: int = 0) -> LatencyPredictor:
    rng = np.random.default_rng(seed)
    table = tuple({c: float(v) for c, v in zip(space.choices, rng.uniform(0.5, 2.0, len(space.choices)) * (1 + p / 4))}
                  for p in range(space.num_blocks))
    stage_of = tuple(s for s, depth in enumerate(space.stage_depths) for _ in range(depth))
    counts = len(space.choices) - 1
    return LatencyPredictor(table, stage_of, 1.0, (1.0,) * len(space.stage_depths) + (0.0,) * counts + (1.0,))


def test_the_transfer_recovers_a_device_that_scales_each_stage() -> None:
    """Known answer: a device 1.5x / 2x / 0.8x / 3x slower per stage plus 4 ms per run is recovered exactly from
    20 random archs, and predicts 200 others exactly."""
    space = get_space("detnas-300m")
    reference = _reference(space)
    scales, intercept = (1.5, 2.0, 0.8, 3.0), 4.0

    def device(choices: tuple[int, ...]) -> float:
        sums = reference.features(choices)[:4]
        return float(np.dot(scales, sums) + intercept)

    rng = random.Random(0)
    fit_on = [sample_arch(space, rng).choices for _ in range(20)]
    moved = LatencyPredictor.transfer(reference, fit_on, [device(a) for a in fit_on])
    assert moved.coef[:4] == pytest.approx(scales) and moved.coef[-1] == pytest.approx(intercept)
    held_out = [sample_arch(space, rng).choices for _ in range(200)]
    assert max(abs(moved.predict(a) / device(a) - 1) for a in held_out) < 1e-9
    with pytest.raises(DetnasError, match="needs at least 6 measured archs, got 5"):
        LatencyPredictor.transfer(reference, fit_on[:5], [device(a) for a in fit_on[:5]])


@pytest.fixture
def reference_file(tmp_path):
    space = SearchSpace.from_dict(TINY)
    path = tmp_path / "reference.json"
    path.write_text(json.dumps({"format": PROFILE_FORMAT, "space": space.to_dict(), "space_digest": space.digest,
                                "backend": "ort", "fingerprint_hash": "another-device", "scope": "backbone",
                                "detector": None, "input_shape": [1, 3, 32, 32], "fixed_ms": {"stem": 0.1},
                                "predictor": _reference(space).to_dict()}))
    return path


@pytest.mark.parametrize("archs, message", [("0", "--archs 0: a few-shot profile times 4 to 16 archs"),
                                            ("17", "--archs 17: a few-shot profile times 4 to 16 archs")])
def test_bad_archs_are_one_line_and_nothing_written(reference_file, tmp_path, capsys, archs, message) -> None:
    out = tmp_path / "fewshot.json"
    assert main(["bench", "profile", "--from", str(reference_file), "--archs", archs, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists(), err


def test_cli_builds_a_fewshot_profile_the_search_can_use(reference_file, tmp_path) -> None:
    out = tmp_path / "fewshot.json"
    with redirect_stdout(io.StringIO()) as printed:
        code = main(["bench", "profile", "--from", str(reference_file), "--archs", "6", "--backend", "torch",
                     "--runs", "4", "--rounds", "2", "--warmup", "1", "--out", str(out)])
    assert code == 0, printed.getvalue()
    profile = json.loads(out.read_text())
    assert profile["transfer"]["archs"] == 6 and len(profile["transfer"]["stage_scales"]) == 2
    assert profile["scope"] == "backbone" and profile["input_shape"] == [1, 3, 32, 32]
    assert [a["split"] for a in profile["archs"]] == ["loo"] * 6 and profile["report"]["n"] == 6
    assert "few-shot from" in printed.getvalue() and "stage scales" in printed.getvalue()
    # it loads as this machine's profile of the space, for `detnas search --latency-profile`
    from detnas.bench.profile import load_profile, predict_latency

    space = SearchSpace.from_dict(TINY)
    loaded = load_profile(out, space, "torch", fingerprint=profile["fingerprint_hash"])
    assert predict_latency(loaded, Arch(space, (0, 3, 3, 0))) > 0


def test_judged_beside_a_full_profile_on_the_same_held_out_runs() -> None:
    space = SearchSpace.from_dict(TINY)
    reference = _reference(space)
    rng = random.Random(1)
    fitted = [sample_arch(space, rng) for _ in range(6)]
    moved = LatencyPredictor.transfer(reference, [a.choices for a in fitted],
                                      [2 * reference.predict(a.choices) for a in fitted])
    header = {"format": PROFILE_FORMAT, "space": space.to_dict(), "space_digest": space.digest, "backend": "torch",
              "fingerprint_hash": "here"}
    fewshot = DeviceProfile.from_dict({**header, "predictor": moved.to_dict(),
                                       "archs": [{"choices": a.compact(), "hash": a.hash, "split": "loo",
                                                  "measured_ms": 2 * reference.predict(a.choices)} for a in fitted]},
                                      "fewshot.json")
    # the other session's table, unscaled: half as fast
    full = DeviceProfile.from_dict({**header, "predictor": reference.to_dict(), "archs": []}, "full.json")
    others = [Arch(space, c) for c in ((0, 0, 0, 0), (3, 3, 3, 3), (0, 3, 0, 3), (3, 0, 3, 0), (0, 0, 3, 3),
                                       (3, 3, 0, 0), (0, 3, 3, 0))]
    others = [a for a in others if a.hash not in {f.hash for f in fitted}]
    runs = [[2 * reference.predict(a.choices) * (1 + 0.001 * (i % 3 - 1)) for i in range(6)] for a in others]
    judged = judge_on({"fewshot": fewshot, "full": full}, others, runs, rounds=2)
    assert judged["fewshot"].n == len(others) >= 5 and judged["fewshot"].predictor.within_5 == 1.0
    assert judged["fewshot"].predictor.r2 > 0.99 and judged["full"].predictor.within_10 == 0.0
    with pytest.raises(DetnasError, match="none of them fitted on"):
        judge_on({"fewshot": fewshot}, fitted, [[1.0, 1.0]] * len(fitted), rounds=1)
