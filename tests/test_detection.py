import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet

from detnas.arch import resolve_arch, sample_arch
from detnas.detection import build_detector, convert_sync_bn, set_arch
from detnas.errors import DetnasError
from detnas.evaluation import detector_predictor
from detnas.pixels import PixelConvention
from detnas.space import get_space
from detnas.supernet import ChildNet, Supernet, materialize

# small proposal budgets keep the 4-conv box head cheap on CPU; the structure is the paper's
SMALL = {"fpn": dict(rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=64, rpn_pre_nms_top_n_test=100,
                     rpn_post_nms_top_n_test=32, box_batch_size_per_image=32),
         "retinanet": dict(topk_candidates=100)}
ARCH = resolve_arch("COCO-FPN-300M")


def _batch():
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 112)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 80.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [50.0, 60.0, 100.0, 120.0]]),
                "labels": torch.tensor([2, 3])}]
    return images, targets


def _detector(kind, body):
    torch.manual_seed(0)
    return build_detector(kind, body, num_classes=4, min_size=128, max_size=160, **SMALL[kind])


@pytest.mark.slow  # detnas-300m detectors: 11-17 s of CPU a variant
@pytest.mark.parametrize("kind", ["fpn", "retinanet"])
@pytest.mark.parametrize("body", ["supernet", "child"])
def test_detector_trains_one_step_and_infers(kind, body):
    net = Supernet(get_space("detnas-300m")) if body == "supernet" else ChildNet(ARCH)
    detector = _detector(kind, net)
    assert isinstance(detector, FasterRCNN if kind == "fpn" else RetinaNet)
    if body == "supernet":
        set_arch(detector, ARCH)
    images, targets = _batch()
    detector.train()
    losses = detector(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    opt = torch.optim.SGD([p for p in detector.parameters() if p.requires_grad], lr=0.01)
    opt.zero_grad()
    loss.backward()
    used = [p for p in net.parameters() if p.grad is not None]
    assert used, "no gradient reached the backbone"
    before = [p.detach().clone() for p in used]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, used))
    out = detector_predictor(detector, batch_size=2)([(im * 255).to(torch.uint8) for im in images])
    assert detector.training, "the predictor must restore the previous mode"
    assert len(out) == 2
    for o in out:
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        assert (o["labels"] >= 1).all() and (o["labels"] <= 3).all()


def test_fpn_levels_and_box_head_follow_detnas():
    detector = _detector("fpn", ChildNet(ARCH))
    features = detector.backbone(torch.rand(1, 3, 128, 128))
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    assert [f.shape[-1] for f in features.values()] == [32, 16, 8, 4, 2]
    assert all(f.shape[1] == 256 for f in features.values())
    convs = [m for m in detector.roi_heads.box_head.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in detector.roi_heads.box_head.modules() if isinstance(m, nn.Linear)]
    bns = [m for m in detector.roi_heads.box_head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert (len(convs), len(fcs), len(bns)) == (4, 1, 4)
    retina = _detector("retinanet", ChildNet(ARCH))
    levels = retina.backbone(torch.rand(1, 3, 128, 128))
    assert list(levels) == ["p3", "p4", "p5", "p6", "p7"]
    assert [f.shape[-1] for f in levels.values()] == [16, 8, 4, 2, 1]


def test_supernet_detector_path_matches_materialized_child():
    supernet = Supernet(get_space("detnas-300m")).eval()
    arch = sample_arch(supernet.space, 5)
    det_super = _detector("fpn", supernet).eval()
    with pytest.raises(DetnasError, match="set_arch"):
        det_super.backbone(torch.rand(1, 3, 64, 64))
    set_arch(det_super, arch)
    det_child = _detector("fpn", materialize(supernet, arch)).eval()
    det_child.backbone.fpn.load_state_dict(det_super.backbone.fpn.state_dict())
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        a, b = det_super.backbone(x), det_child.backbone(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    set_arch(det_super, sample_arch(supernet.space, 6))
    with torch.no_grad():
        assert not torch.equal(det_super.backbone(x)["p2"], a["p2"])


def test_bad_detector_arguments():
    with pytest.raises(DetnasError, match="kind"):
        build_detector("ssd", ChildNet(ARCH), 4)
    with pytest.raises(DetnasError, match="K \\+ 1"):
        build_detector("fpn", ChildNet(ARCH), 1)
    with pytest.raises(DetnasError, match="num_classes=None"):
        build_detector("fpn", ChildNet(ARCH, num_classes=10), 4)
    with pytest.raises(DetnasError, match="fixed architecture"):
        set_arch(_detector("retinanet", ChildNet(ARCH)), sample_arch(ARCH.space, 1))
    other = resolve_arch("COCO-FPN-1.3G")
    with pytest.raises(DetnasError, match="space"):
        set_arch(_detector("retinanet", Supernet(get_space("detnas-300m"))), other)


def test_pixels_reach_the_transform_and_sync_bn_is_a_noop_without_distributed():
    pixels = PixelConvention(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    detector = build_detector("retinanet", ChildNet(ARCH), 3, min_size=128, max_size=160, pixels=pixels)
    assert detector.transform.image_mean == [0.5, 0.5, 0.5] and detector.transform.image_std == [0.25] * 3
    assert detector.pixels is pixels
    assert convert_sync_bn(detector) is detector
    assert any(isinstance(m, nn.BatchNorm2d) for m in detector.modules())


def test_sync_bn_when_distributed(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        detector = convert_sync_bn(build_detector("retinanet", ChildNet(ARCH), 3, min_size=128, max_size=160))
    finally:
        dist.destroy_process_group()
    bns = [m for m in detector.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, nn.SyncBatchNorm) for m in bns)
