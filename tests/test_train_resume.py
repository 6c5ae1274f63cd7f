"""Exact resume, run-folder contents, and the bad-input contract (one line, exit 2, checkpoints untouched)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from detnas.cli import main
from detnas.errors import DetnasError
from detnas.train import train_child_cls, train_supernet_cls

from helpers.spaces import TINY, tiny_arch_json
from helpers.train import tiny_cls_config, write_space

pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(path):
    return load_file(str(path))


def test_resume_gives_identical_weights(tmp_path):
    """4 iterations in one go == 2, stop, resume, 2 more: weights, BN statistics, momentum, RNG all equal."""
    small = dict(iterations=4, checkpoint_every=2, batch_size=4)
    one_go = train_supernet_cls(tiny_cls_config(tmp_path, out=str(tmp_path / "a"), **small))
    stopped = train_supernet_cls(tiny_cls_config(tmp_path, out=str(tmp_path / "b"), stop_at=2, **small))
    assert stopped.name == "iter_0000002.safetensors" and not (tmp_path / "b" / "final.json").exists()
    resumed = train_supernet_cls(tiny_cls_config(tmp_path, out=str(tmp_path / "b"), resume=True, **small))
    a, b, half = _weights(one_go), _weights(resumed), _weights(stopped)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa, sb = (load_file(str(tmp_path / r / "checkpoints" / "iter_0000004.state.safetensors")) for r in "ab")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # the second half did train: weights moved after the stop
    assert any(not torch.equal(half[k], a[k]) for k in a if a[k].is_floating_point())


def test_run_folder_contents(tmp_path):
    cfg = tiny_cls_config(tmp_path, iterations=6, checkpoint_every=2, keep_last=2, val_data=str(tmp_path / "data"),
                          eval_every=3)
    final = train_supernet_cls(cfg)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text()) == cfg.to_dict()
    kept = sorted(p.name for p in (run / "checkpoints").glob("*.state.json"))
    assert kept == ["iter_0000004.state.json", "iter_0000006.state.json"]
    meta = json.loads((run / "final.json").read_text())
    assert meta["kind"] == "supernet-cls" and meta["arch"] is None and meta["classes"] == ["class0", "class1",
                                                                                          "class2"]
    assert meta["space"]["stage_widths"] == [16, 32, 48, 64] and meta["pixels"]["channel_order"] == "RGB"
    assert meta["recipe"]["lr"] == cfg.lr and meta["iteration"] == 6 and final == run / "final.safetensors"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if r.get("event") == "eval"]
    assert [r["iteration"] for r in steps] == [4, 6] and all(r["img_s"] > 0 and "path" in r for r in steps)
    assert [r["iteration"] for r in evals] == [0, 3, 6] and 0 <= evals[0]["top1"] <= 1


def test_child_cls_records_its_arch(tmp_path):
    final = train_child_cls(tiny_cls_config(tmp_path, arch=tiny_arch_json("3|2|1|0"), iterations=2))
    meta = json.loads(final.with_suffix(".json").read_text())
    assert meta["kind"] == "child-cls" and meta["arch"]["choices"] == "3|2|1|0"
    assert not any(".candidates." in k for k in _weights(final))


def test_resume_refuses_another_arch(tmp_path):
    """The resumed checkpoint's sidecar (read as a CheckpointMeta) must describe the run: another arch is one line."""
    arch = [tiny_arch_json(c) for c in ("3|2|1|0", "0|1|2|3")]
    small = dict(iterations=4, checkpoint_every=2, batch_size=4)
    train_child_cls(tiny_cls_config(tmp_path, arch=arch[0], stop_at=2, **small))
    with pytest.raises(DetnasError, match=r"iter_0000002: checkpoint 'arch' is '3\|2\|1\|0' but this run has "
                                          r"'0\|1\|2\|3'; resume with the same data, arch and stage"):
        train_child_cls(tiny_cls_config(tmp_path, arch=arch[1], resume=True, **small))


def _cli(tmp_path, *extra):
    args = ["train", "supernet-cls", "--images", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--space", write_space(tmp_path), "-n", "4", "--device", "cpu", "--set", "batch_size=6",
            "--set", "image_size=32", "--set", "checkpoint_every=2"]
    return main([*args, *extra])


def _snapshot(run):
    return {p.name: p.read_bytes() for p in sorted((run / "checkpoints").iterdir())}


def test_cli_trains_and_bad_inputs_fail_cleanly(tmp_path, capsys):
    tiny_cls_config(tmp_path)  # writes the image folder
    assert _cli(tmp_path) == 0
    run = tmp_path / "run"
    before = _snapshot(run)

    def fails(code_args, match):
        capsys.readouterr()
        assert _cli(tmp_path, *code_args) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
        assert _snapshot(run) == before

    fails([], "pass --resume")  # fresh start into a folder with checkpoints
    fails(["--resume", "--set", "lr=0.3"], "changed recipe (lr: 0.1 -> 0.3)")
    # corrupted latest checkpoint: truncated weights file
    latest = run / "checkpoints" / "iter_0000004.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    before = _snapshot(run)
    fails(["--resume", "-n", "4"], "corrupted safetensors")


def test_bad_data_and_foreign_checkpoints(tmp_path, capsys):
    tiny_cls_config(tmp_path)
    (tmp_path / "empty").mkdir()
    one = tmp_path / "one" / "only"
    shutil.copytree(tmp_path / "data" / "class0", one)
    for folder, match in ((tmp_path / "empty", "no images found"), (tmp_path / "one", "at least 2 classes")):
        capsys.readouterr()
        assert main(["train", "supernet-cls", "--images", str(folder), "--out", str(tmp_path / "x"),
                     "--space", write_space(tmp_path), "--device", "cpu"]) == 2
        assert match in capsys.readouterr().err
    capsys.readouterr()
    assert main(["train", "supernet-cls", "--images", str(tmp_path / "data"), "--set", "init=some.safetensors"]) == 2
    assert "trains from scratch" in capsys.readouterr().err
    # a supernet-cls checkpoint of another space cannot start a detection run of this space
    final = train_supernet_cls(tiny_cls_config(tmp_path, iterations=1))
    capsys.readouterr()
    code = main(["train", "supernet-det", "--images", str(tmp_path), "--ann", str(tmp_path / "x.json"),
                 "--init", str(final), "--out", str(tmp_path / "det"), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"checkpoint is of space '{TINY.name}'" in err and "Traceback" not in err
    # a corrupted init checkpoint: one line naming the file
    final.with_suffix(".json").write_text("{not json")
    capsys.readouterr()
    assert main(["train", "supernet-det", "--images", str(tmp_path), "--ann", str(tmp_path / "x.json"),
                 "--init", str(final), "--out", str(tmp_path / "det"), "--device", "cpu"]) == 2
    assert "corrupted sidecar JSON" in capsys.readouterr().err
    assert not (tmp_path / "det").exists()


@pytest.mark.gpu
def test_cuda_amp_run_resumes_with_its_grad_scaler(tmp_path):
    cfg = tiny_cls_config(tmp_path, device="cuda", iterations=4, checkpoint_every=2, stop_at=2)
    train_supernet_cls(cfg)
    state = json.loads((tmp_path / "run" / "checkpoints" / "iter_0000002.state.json").read_text())
    assert state["scaler"]["scale"] > 0 and "rng.0.cuda.0" in load_file(
        str(tmp_path / "run" / "checkpoints" / "iter_0000002.state.safetensors"))
    final = train_supernet_cls(cfg.replace(resume=True, stop_at=0))
    assert all(torch.isfinite(t).all() for t in _weights(final).values() if t.is_floating_point())
