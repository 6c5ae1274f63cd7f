"""Sampling, optimiser rules, schedules, recipes and the resumable data order."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest
import torch
from torch import nn

from detnas.arch import Arch
from detnas.errors import DetnasError
from detnas.supernet import Supernet
from detnas.train import RECIPES, resolve_config
from detnas.train.data import SeededBatchSampler
from detnas.train.optim import OffPath, build_optimizer, drop_grads, lr_at, param_groups
from detnas.train.progress import ProgressReporter
from detnas.train.recipes import RECIPE_KEYS, parse_overrides
from detnas.train.sampling import FlopsBinSampler, UniformPathSampler

from helpers.train import TINY_DEEP, tiny_space

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uniform_sampler_is_seeded_uniform_and_resumable():
    space = tiny_space(TINY_DEEP)
    a, b = UniformPathSampler(space, 7), UniformPathSampler(space, 7)
    first = [a.sample() for _ in range(5)]
    assert first == [b.sample() for _ in range(5)]
    state = json.loads(json.dumps(a.state_dict()))  # must survive JSON
    expected = [a.sample() for _ in range(5)]
    b.load_state_dict(state)
    assert [b.sample() for _ in range(5)] == expected
    counts = Counter(c for _ in range(400) for c in a.sample().choices)
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 0.8 * 400 * 8 / 4  # 800 expected per choice


def test_flops_bin_sampler_spreads_flops_evenly():
    space = tiny_space(TINY_DEEP)
    sampler = FlopsBinSampler(space, 0, bins=4)
    uniform = UniformPathSampler(space, 0)
    spos_bins = Counter(sampler.bin_of(sampler.sample()) for _ in range(400))
    uni_bins = Counter(sampler.bin_of(uniform.sample()) for _ in range(400))
    assert set(spos_bins) == {0, 1, 2, 3}
    # every bin is visited about 1/4 of the time, while uniform paths crowd the middle bins
    assert min(spos_bins.values()) > 60
    assert min(uni_bins.values()) < min(spos_bins.values())


def test_weight_decay_only_on_conv_and_fc_weights():
    net = Supernet(tiny_space(), num_classes=5)
    decay, no_decay = param_groups(net, 1e-4)
    decay_ids = {id(p) for p in decay["params"]}
    for module in net.modules():
        for name, p in module.named_parameters(recurse=False):
            wanted = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            assert (id(p) in decay_ids) == wanted
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_off_path_blocks_get_no_update_at_all():
    """A block used in step 1 has a momentum buffer; in step 2 it is off the path: weights AND buffer unchanged."""
    torch.manual_seed(0)
    space = tiny_space()
    net = Supernet(space, num_classes=3)
    cfg = resolve_config("cpu-cls", overrides={"lr": 0.5, "weight_decay": 0.1})
    opt = build_optimizer(net, cfg)
    off_path = OffPath(net)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    path_a, path_b = Arch(space, (0, 0, 0, 0)), Arch(space, (1, 1, 1, 1))

    def step(arch: Arch) -> None:
        nn.functional.cross_entropy(net(x, arch), y).backward()
        drop_grads(off_path(arch))
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(path_a)
    block = net.blocks[2].candidates["0"]
    weights = {k: v.clone() for k, v in block.state_dict().items()}
    buffers = {id(p): opt.state[p]["momentum_buffer"].clone() for p in block.parameters()}
    assert all(b.abs().sum() > 0 for b in buffers.values())  # momentum would move the weights if not skipped
    stem_before = net.stem[0].weight.clone()
    step(path_b)
    for k, v in block.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p in block.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], buffers[id(p)])
    assert not torch.equal(net.stem[0].weight, stem_before)  # on-path parameters did move
    never_used = net.blocks[0].candidates["3"]
    assert all(p not in opt.state or not opt.state[p] for p in never_used.parameters())


def test_schedules_match_the_paper_shapes():
    cls = resolve_config("paper-cls")
    assert lr_at(cls, 0) == 0.5 and lr_at(cls, 150_000) == pytest.approx(0.25) and lr_at(cls, 300_000) == 0
    det = resolve_config("paper-det-fpn")
    assert lr_at(det, 0) == pytest.approx(0.02 / 3)
    assert lr_at(det, 250) == pytest.approx(0.02 * (1 / 3 * 0.5 + 0.5))
    assert lr_at(det, 500) == pytest.approx(0.02)
    assert lr_at(det, 60_000) == pytest.approx(0.002) and lr_at(det, 80_000) == pytest.approx(0.0002)
    assert resolve_config("paper-det-retinanet").lr == 0.01
    assert resolve_config("paper-det-fpn-voc").milestones == (15_000, 20_000)


def test_config_layers_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: cpu-det\nlr: 0.03\nmilestones: [5, 8]\n")
    cfg = resolve_config(None, path, parse_overrides(["iterations=10", "amp=false"]))
    assert (cfg.recipe, cfg.task, cfg.lr, cfg.milestones, cfg.iterations, cfg.amp) == \
        ("cpu-det", "det", 0.03, (5, 8), 10, False)
    assert set(RECIPE_KEYS) >= {"lr", "iterations", "seed", "space", "batch_size"} and "out" not in RECIPE_KEYS
    assert {"paper-cls", "paper-det-fpn", "paper-det-retinanet", "cpu-cls", "cpu-det"} <= set(RECIPES)
    for bad in ({"lr": "fast"}, {"colour": "red"}, {"schedule": "cosine"}, {"milestones": "9,3"}):
        with pytest.raises(DetnasError):
            resolve_config("cpu-cls", overrides=bad)
    with pytest.raises(DetnasError, match="unknown recipe"):
        resolve_config("imagenet-fast")
    with pytest.raises(DetnasError, match="KEY=VALUE"):
        parse_overrides(["lr"])


def test_data_order_depends_only_on_seed_and_iteration():
    full = SeededBatchSampler(10, 4, seed=3)
    it = iter(full)
    batches = [next(it) for _ in range(6)]
    resumed = iter(SeededBatchSampler(10, 4, seed=3, start=3))
    assert [next(resumed) for _ in range(3)] == batches[3:]
    # each epoch is a permutation: the first 10 stream positions cover every index once
    stream = [i for b in batches for i, _ in b]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    # two ranks split the global batch without overlap, like DistributedSampler
    r0, r1 = SeededBatchSampler(10, 2, 3, rank=0, world=2), SeededBatchSampler(10, 2, 3, rank=1, world=2)
    assert r0.batch(0) + r1.batch(0) == full.batch(0)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_on_terminal_plain_lines_otherwise(tmp_path, tty):
    stream = _Terminal() if tty else io.StringIO()
    progress = ProgressReporter(tmp_path, total=4, start=0, enabled=True, label="supernet-cls", stream=stream)
    for i in range(1, 5):
        progress.step(i, {"loss": 1.0 / i, "lr": 0.1, "img_s": 50.0}, log=i % 2 == 0)
    progress.event(4, "eval", {"top1": 0.5})
    progress.close()
    text = stream.getvalue()
    assert "loss" in text and "img_s" in text and "eval" in text
    assert ("━" in text) == tty  # rich draws a bar only on a terminal
    if not tty:
        assert text.count("supernet-cls 2/4") == 1 and "eta" in text
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [2, 4, 4] and records[-1]["event"] == "eval"


def test_n_rescales_a_recipes_milestones_and_says_so(tmp_path, capsys) -> None:
    """`-n 20` on cpu-det (milestones 70, 90 of 100) steps at 14 and 18; explicit milestones are kept."""
    from detnas.cli.main import main
    from detnas.train.recipes import rescale_milestones, resolve_config

    overrides, note = rescale_milestones("cpu-det", {"iterations": 20})
    cfg = resolve_config("cpu-det", overrides=overrides)
    assert (cfg.iterations, cfg.milestones) == (20, (14, 18))
    assert note == "-n 20: recipe cpu-det's milestones 70, 90 of 100 iterations rescaled to 14, 18 (--set milestones=... to choose)"
    assert rescale_milestones("cpu-det", {"iterations": 20, "milestones": "5"}) == ({"iterations": 20, "milestones": "5"}, None)
    assert rescale_milestones("cpu-det", {"iterations": 100})[1] is None and rescale_milestones("cpu-cls", {"iterations": 5})[1] is None
    paper = rescale_milestones("paper-det-fpn", {"iterations": 9000})[0]
    assert resolve_config("paper-det-fpn", overrides=paper).milestones == (6000, 8000)
    # the CLI says it on stderr before anything runs (here the missing data then stops it)
    assert main(["train", "supernet-det", "-n", "20", "--images", str(tmp_path / "none"), "--ann",
                 str(tmp_path / "none.json"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "rescaled to 14, 18" in err and "no --init: the backbone starts from scratch" in err, err


def test_malformed_yaml_config_says_where(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("recipe: cpu-det\nlr: [0.03\n")
    with pytest.raises(DetnasError) as info:
        resolve_config(None, path)
    assert f"{path}: malformed config file YAML at line 3 column 1: expected ',' or ']', but got '<stream end>' " \
        "(while parsing a flow sequence)" in str(info.value) and "\n" not in str(info.value)
