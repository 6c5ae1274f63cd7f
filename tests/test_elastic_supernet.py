"""The elastic weight-sharing supernet: a path is a slice of the widest weights, a child equals its path, and the
analytic MACs of every path equal `torch.utils.flop_counter` on the built child."""

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from detnas.arch import extreme_arch, sample_arch
from detnas.detection import build_detector, set_arch
from detnas.detection.cost import CostModel, detector_macs, stage_sizes
from detnas.detection.deployable import DeployableDetector
from detnas.detection.elastic import extract_child
from detnas.flops import count_flops, flops_table
from detnas.space import get_space
from detnas.supernet import ChildNet, Supernet, materialize

from helpers.spaces import TINY_ELASTIC

SPACE = "detnas-300m-det"


def _paths(space, seed=0):
    """Narrowest and widest (every op), then random paths."""
    return [extreme_arch(space, (c,) * space.num_blocks, widest) for widest in (False, True) for c in (0, 3)] + [
        sample_arch(space, seed + k) for k in range(2)]


def test_backbone_path_is_a_slice_and_child_equals_it():
    torch.manual_seed(0)
    space = TINY_ELASTIC
    net = Supernet(space, num_classes=10)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():  # give BN non-trivial statistics on several paths
        net.train()
        for arch in _paths(space, 5):
            net(x, arch)
    net.eval()
    for arch in _paths(space):
        with torch.no_grad():
            expected, child = net(x, arch), materialize(net, arch)
            assert (child(x) - expected).abs().max() <= 1e-5
        assert sum(isinstance(b, torch.nn.Identity) for b in child.blocks) == len(arch.skipped_blocks())
        assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in net.parameters())
    # training a path reaches exactly the widest weights' slices it used, and nothing else
    net.train()
    arch = sample_arch(space, 11)
    net(x, arch).sum().backward()
    block = next(i for i in range(space.num_blocks) if i not in arch.skipped_blocks() and arch.widths[i] < 1.5)
    assert net.blocks[block].candidates[str(arch.choices[block])].mid > materialize(net, arch).blocks[block].mid
    first = net.blocks[block].candidates[str(arch.choices[block])].main[0].weight
    used = materialize(net, arch).blocks[block].main[0].weight.shape[0]
    assert first.grad[:used].abs().sum() > 0 and first.grad[used:].abs().sum() == 0
    unused = [c for c in space.choices if c != arch.choices[block]]
    assert all(p.grad is None for c in unused for p in net.blocks[block].candidates[str(c)].parameters())
    for skipped in arch.skipped_blocks():
        assert all(p.grad is None for p in net.blocks[skipped].parameters())


@pytest.mark.parametrize("kind", ["fpn", "retinanet"])
def test_detector_child_equals_its_supernet_path(kind):
    torch.manual_seed(0)
    space = TINY_ELASTIC
    detector = build_detector(kind, Supernet(space), 4, min_size=128, max_size=160, style="detnas")
    images = [torch.rand(3, 120, 150), torch.rand(3, 100, 160)]
    targets = [{"boxes": torch.tensor([[10.0, 10, 60, 70]]), "labels": torch.tensor([1])}] * 2
    for arch in _paths(space)[::2]:  # a training step moves the shared weights and BN statistics on these paths
        set_arch(detector.train(), arch)
        sum(detector(images, targets).values()).backward()
    detector.eval()
    for arch in (_paths(space)[0], _paths(space)[3], _paths(space)[4]):  # narrowest, widest, random
        set_arch(detector, arch)
        with torch.no_grad():
            path = detector(images)
            child = extract_child(detector, arch).eval()
            alone = child(images)
            deployed = DeployableDetector(child, child.pixels, 20)(torch.rand(1, 3, *child.transform.min_size * 2))
        assert type(child).__name__ == type(detector.widest).__name__ and not isinstance(child.backbone.body, Supernet)
        for a, b in zip(path, alone):
            assert a["boxes"].shape == b["boxes"].shape
            if len(a["scores"]):
                assert (a["scores"] - b["scores"]).abs().max() <= 1e-5
                assert (a["boxes"] - b["boxes"]).abs().max() <= 1e-4
        assert deployed[1].shape == (1, 20, 4)
        assert child.backbone.out_channels == arch.detector.fpn_width


@pytest.mark.parametrize("kind", ["fpn", "retinanet"])
def test_detector_macs_equal_flop_counter_end_to_end(kind):
    """The deployable graph (proposals padded to their fixed count) of three paths, counted whole."""
    space = get_space(SPACE)
    for arch in (_paths(space)[0], _paths(space)[3], sample_arch(space, 7)):
        size = (96, 160)
        detector = build_detector(kind, ChildNet(arch), 5, min_size=size[0], max_size=size[1]).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            DeployableDetector(detector, detector.pixels, 10)(torch.rand(1, 3, *size))
        assert detector_macs(arch, kind, 5, size).total == counter.get_total_flops() // 2


def _count(module, *inputs):
    """flop_counter's MACs of one forward. In eval mode: a training-mode batch norm counts nothing either way, but
    under the counter on the meta device it decomposes at ~10 ms a call (the test took 3x as long)."""
    module.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops() // 2


@pytest.mark.slow  # 200 paths through the FLOP counter: 358 s in a fast-tier run on 2 loaded cores
def test_macs_of_200_paths_at_two_sizes_equal_flop_counter():
    """Per part on the meta device (no arithmetic): the body of 200 random paths of a small elastic space, and the
    FPN, RPN head and box head at its detector genes (built once per gene combination, every gene value among
    them). The 300m twin's paths are counted whole above; the count is the same code for every space."""
    space, num_classes = TINY_ELASTIC, 5
    heads: dict = {}
    checked = 0
    for seed in range(200):
        arch = sample_arch(space, 1000 + seed)
        with torch.device("meta"):
            body = ChildNet(arch)
        det = arch.detector
        key = (det.fpn_width, det.head_convs, det.head_fc)
        if key not in heads:
            with torch.device("meta"):
                heads[key] = build_detector("fpn", ChildNet(arch), num_classes)
        detector = heads[key]
        for size in ((64, 96), (160, 224)):
            with torch.device("meta"):
                x = torch.empty(1, 3, *size)
                expected = detector_macs(arch, "fpn", num_classes, size)
                assert _count(body, x) == expected.backbone
                features = {f"c{i + 2}": torch.empty(1, w, *hw)
                            for i, (w, hw) in enumerate(zip(space.stage_widths, stage_sizes(space, size)))}
                fpn = detector.backbone.fpn
                assert _count(fpn, features) == expected.fpn
                pyramid = list(fpn(features).values())
                assert _count(detector.rpn.head, pyramid) == expected.dense_head
                rois = torch.empty(expected.rois, det.fpn_width, 7, 7)
                box = _count(torch.nn.Sequential(detector.roi_heads.box_head, detector.roi_heads.box_predictor), rois)
                assert box == expected.box_head
            checked += 1
    assert checked == 400
    assert {key[0] for key in heads} == {16, 32} and {key[1] for key in heads} == {1, 2} \
        and {key[2] for key in heads} == {32, 64}, "every head gene value was counted"
    # the paper spaces' backbone count is the same function
    paper = get_space("detnas-300m")
    arch = sample_arch(paper, 0)
    assert detector_macs(arch, "fpn", 81).backbone == flops_table(paper, (800, 1344), 0)[0] + count_flops(arch, (800, 1344)) \
        - flops_table(paper, (800, 1344), 0)[0]


@pytest.mark.parametrize("kind", ["fpn", "retinanet"])
def test_cost_model_counts_every_path_like_detector_macs(kind):
    space = get_space(SPACE)
    model = CostModel(space, kind, 81)
    genes = model.sample_genes(300, np.random.default_rng(0))
    macs = model.macs(genes)
    for row, value in zip(genes, macs):
        assert detector_macs(model.to_arch(row), kind, 81).total == value
    limit = int(np.percentile(macs, 20))
    archs, drawn = model.sample_under(limit, 50, seed=1)
    assert len(archs) == 50 and drawn >= 50
    assert all(detector_macs(a, kind, 81).total <= limit for a in archs)


def test_a_syncbn_supernet_runs_its_paths_with_syncbn():
    """Under torchrun the trainer converts the supernet's BN to SyncBatchNorm; an elastic path runs its own modules on
    the widest tensors, so those must be SyncBatchNorm as well, or each rank would keep its own batch statistics. On
    one CPU process SyncBatchNorm computes plain BN, so the path's eval outputs equal the unconverted supernet's."""
    torch.manual_seed(0)
    detector = build_detector("fpn", Supernet(TINY_ELASTIC), 4, min_size=96, max_size=128).eval()
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_detector("fpn", Supernet(TINY_ELASTIC), 4, min_size=96,
                                                                          max_size=128)).eval()
    synced.load_state_dict(detector.state_dict())
    arch = sample_arch(TINY_ELASTIC, 3)
    images = [torch.rand(3, 90, 120)]
    outputs = []
    for model in (detector, synced):
        set_arch(model, arch)
        with torch.no_grad():
            outputs.append(model(images)[0])
    child = synced._child(arch)
    norms = [m for m in child.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms), {type(m).__name__ for m in norms}
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in detector._child(arch).modules())
    assert outputs[0]["boxes"].shape == outputs[1]["boxes"].shape
    assert outputs[0]["scores"].numel() > 0 and torch.equal(outputs[0]["scores"], outputs[1]["scores"])  # 21 here
