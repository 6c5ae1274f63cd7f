"""The paper-* recipes and the search's defaults behave as the official DetNAS code ."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import sigmoid_focal_loss

from detnas.arch import resolve_arch, sample_arch
from detnas.data.coco import coco_from_dict
from detnas.detection import build_detector, convert_sync_bn, set_arch
from detnas.detection.recalibrate import detnas_batches, recalibrate_bn
from detnas.errors import DetnasError
from detnas.evaluation import fitness_metric, voc_metrics
from detnas.flops import count_flops
from detnas.search.objectives import Constraints
from detnas.space import get_space
from detnas.supernet import ChildNet, Supernet, official_classifier_
from detnas.train import RECIPES, resolve_config, train_supernet_det
from detnas.train.optim import build_optimizer, set_lr
from detnas.train.sampling import DETNAS_BINS_MFLOPS, make_sampler

from helpers.search import TINY, FakeAccuracy, FakeLatency
from helpers.train import coco_subset, tiny_cls_config

ARCH = resolve_arch("COCO-FPN-300M")
PAPER = [name for name in RECIPES if name.startswith("paper-")]
SMALL_FPN = dict(rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=40, rpn_pre_nms_top_n_test=60,
                 rpn_post_nms_top_n_test=24, box_batch_size_per_image=16)


def _targets(n: int = 1) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 96, 128) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 80.0], [40.0, 20.0, 120.0, 90.0]]),
                "labels": torch.tensor([1, 2])} for _ in range(n)]
    return images, targets


# 1 ------------------------------------------------------------------------------------------------------------
def test_search_defaults_to_the_space_paper_flops_limit_and_says_so() -> None:
    constraints, note = Constraints().resolve("detnas-300m", 224, "AP")
    assert constraints.flops_max == 300e6 and "300M" in note and "--no-constraint" in note
    assert Constraints().resolve("detnas-1.3g", 224, "AP")[0].flops_max == 1.3e9
    assert all(count_flops(resolve_arch(n), 224) <= 300e6 for n in ("COCO-FPN-300M", "COCO-RetinaNet-300M"))
    assert count_flops(resolve_arch("COCO-FPN-1.3G"), 224) <= 1.3e9
    lifted, note = Constraints(paper_limit=False).resolve("detnas-300m", 224, "AP")
    assert lifted.flops_max is None and "no constraint" in note
    explicit, _ = Constraints(latency_ms=5.0).resolve("detnas-300m", 224, "AP")
    assert explicit.flops_max is None and explicit.latency_ms == 5.0
    for bad in (lambda: Constraints().resolve("my-space", 224, "AP"),
                lambda: Constraints().resolve("detnas-300m", 320, "AP"),
                lambda: Constraints(latency_ms=5.0, paper_limit=False).resolve("detnas-300m", 224, "AP")):
        with pytest.raises(DetnasError):
            bad()


# 2 ------------------------------------------------------------------------------------------------------------
def test_fpn_detector_has_bn_in_its_fpn_which_becomes_sync_bn(tmp_path) -> None:
    import torch.distributed as dist

    assert all(resolve_config(n).detector_style == "detnas" for n in PAPER if RECIPES.get(n)["task"] == "det")
    official = build_detector("fpn", ChildNet(ARCH), 3, 128, 160, style="detnas")
    fpn_norms = [m for m in official.backbone.fpn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(fpn_norms) == 8  # after each of the 4 lateral and 4 output convs (FPN.USE_SYNCBN)
    assert not any(isinstance(m, _BatchNorm) for m in build_detector("fpn", ChildNet(ARCH), 3).backbone.fpn.modules())
    retina = build_detector("retinanet", ChildNet(ARCH), 3, style="detnas")  # official RetinaNet FPN: no norm
    assert not any(isinstance(m, _BatchNorm) for m in retina.backbone.fpn.modules())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        synced = convert_sync_bn(official)
    finally:
        dist.destroy_process_group()
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.backbone.fpn.modules()) == 8


# 3 ------------------------------------------------------------------------------------------------------------
def test_paper_cls_draws_the_seven_official_flops_bins_evenly() -> None:
    assert resolve_config("paper-cls").sampler == "detnas-bins"
    sampler = make_sampler(resolve_config("paper-cls").sampler, get_space("detnas-300m"), seed=0)
    draws = 1400
    bins = Counter()
    for _ in range(draws):
        mflops = count_flops(sampler.sample(), 224, num_classes=1000) / 1e6
        bins[next((i for i, (low, high) in enumerate(DETNAS_BINS_MFLOPS) if low <= mflops <= high), -1)] += 1
    assert set(bins) <= set(range(7)) and len(DETNAS_BINS_MFLOPS) == 7 and DETNAS_BINS_MFLOPS[0] == (290, 300)
    # uniform paths put 1 % into [290, 300] and 31 % into [320, 330]; the official sampler ~1/7 into each
    assert all(abs(bins[i] / draws - 1 / 7) < 0.04 for i in range(7)), bins
    with pytest.raises(DetnasError, match="flops-bins"):
        make_sampler("detnas-bins", get_space("detnas-1.3g"), seed=0)


# 4 ------------------------------------------------------------------------------------------------------------
class _Images:
    """A detection data set of 5 images whose targets name the image."""

    def __len__(self) -> int:
        return 5

    def load_image(self, index: int) -> torch.Tensor:
        return torch.full((3, 96, 128), index * 40, dtype=torch.uint8)

    def target(self, index: int) -> dict[str, torch.Tensor]:
        return {"boxes": torch.tensor([[10.0, 12.0, 60.0, 80.0]]), "labels": torch.tensor([1 + index % 2])}


def test_detnas_bn_recalibration_feeds_the_box_head_the_training_rois(one_thread) -> None:
    from detnas.pixels import DEFAULT_PIXELS

    batches = list(detnas_batches(_Images(), 4, DEFAULT_PIXELS))
    assert [len(images) for images, _ in batches] == [1, 1, 1, 1]  # one image per forward
    order = [int(images[0][0, 0, 0] * 255 / 40 + 0.5) for images, _ in batches]
    assert sorted(order) != order and order == [int(i[0][0, 0, 0] * 255 / 40 + 0.5)
                                                for i, _ in detnas_batches(_Images(), 4, DEFAULT_PIXELS)]
    torch.manual_seed(0)
    detector = build_detector("fpn", ChildNet(ARCH), 3, 96, 128, style="detnas", **SMALL_FPN)
    box_bn = next(m for m in detector.roi_heads.box_head.modules() if isinstance(m, nn.BatchNorm2d))
    seen: list[tuple[int, bool, float | None]] = []
    box_bn.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[0], detector.training, m.momentum)))
    assert recalibrate_bn(detector, batches, mode="detnas") == 4
    assert seen == [(16, True, 0.1)] * 4  # 16 sampled RoIs (box_batch_size_per_image), train mode, EMA 0.1
    assert not detector.training and box_bn.momentum == 0.01
    seen.clear()
    recalibrate_bn(detector, [[images[0]] for images, _ in batches])  # the inference-path mode, for contrast
    assert [s[0] for s in seen] == [24] * 4  # the test proposals (rpn_post_nms_top_n_test)


# 5 ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_paper_supernet_det_trains_no_bn_gamma_beta(tmp_path, coco128, one_thread) -> None:
    from safetensors.torch import load_file

    from detnas.train import train_supernet_cls

    cls_final = train_supernet_cls(tiny_cls_config(tmp_path, iterations=1, out=str(tmp_path / "cls")))
    ann = coco_subset(coco128, tmp_path, images=2)
    images = str(coco128 / "train2017")
    cfg = resolve_config("paper-det-fpn", overrides=dict(
        space=tiny_cls_config(tmp_path).space, data=images, ann=str(ann), init=str(cls_final), out=str(tmp_path / "d"),
        iterations=2, batch_size=1, min_size=64, max_size=96, roi_batch=8, proposals=20, warmup_iters=0,
        log_every=1, checkpoint_every=2, eval_every=0, device="cpu"))
    assert not cfg.supernet_bn_affine
    final = load_file(str(train_supernet_det(cfg)))
    cls = load_file(str(cls_final))
    bns = [k[: -len("running_mean")] for k in final if k.endswith("running_mean")]
    body = [b for b in bns if b.startswith("backbone.body.")]
    heads = [b for b in bns if b.startswith(("backbone.fpn.", "roi_heads.box_head."))]
    assert body and len(heads) == 8 + 4  # FPN: 4 lateral + 4 output; box head: 4 convs
    for b in body:  # as the classification supernet left them
        for name in ("weight", "bias"):
            assert torch.equal(final[b + name], cls[b[len("backbone.body."):] + name]), b
    for b in heads:  # as initialised
        assert torch.all(final[b + "weight"] == 1) and torch.all(final[b + "bias"] == 0), b
    assert not torch.equal(final[heads[0] + "running_mean"], torch.zeros_like(final[heads[0] + "running_mean"]))
    assert not torch.equal(final["backbone.body.stem.0.weight"], cls["stem.0.weight"])  # convs do learn


# 6 ------------------------------------------------------------------------------------------------------------
def test_detection_optimiser_groups_as_maskrcnn_benchmark() -> None:
    cfg = resolve_config("paper-det-fpn")
    detector = build_detector("fpn", ChildNet(ARCH), 3, style="detnas")
    optimizer = build_optimizer(detector, cfg)
    set_lr(optimizer, 0.02)
    names = {id(p): n for n, p in detector.named_parameters()}
    for group in optimizer.param_groups:
        biases = [names[id(p)].endswith("bias") for p in group["params"]]
        assert len(set(biases)) == 1
        assert (group["lr"], group["weight_decay"]) == ((0.04, 0.0) if biases[0] else (0.02, 1e-4))
    decayed = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    assert "backbone.body.stem.1.weight" in decayed  # BN weights decay too
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)
    cpu = build_optimizer(detector, resolve_config("cpu-det"))
    assert "backbone.body.stem.1.weight" not in {names[id(p)] for p in cpu.param_groups[0]["params"]}


# 7 ------------------------------------------------------------------------------------------------------------
def test_paper_recipes_train_in_fp32_cpu_recipes_keep_amp() -> None:
    assert PAPER and all(resolve_config(n).amp is False for n in PAPER)
    assert all(resolve_config(n).amp for n in RECIPES if n.startswith("cpu-"))


# 8 ------------------------------------------------------------------------------------------------------------
def test_voc07_eleven_point_and_all_point_map_and_voc_fitness() -> None:
    def box(x, y):
        return [x, y, 20.0, 20.0]

    gt = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box(0, 0), "area": 400, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": box(100, 100), "area": 400, "iscrowd": 0},
                          {"id": 3, "image_id": 1, "category_id": 1, "bbox": box(50, 150), "area": 400, "iscrowd": 1}]}
    dataset = type("Data", (), {"coco_gt": coco_from_dict(gt), "classes": ["cat", "dog"]})()
    dets = [{"image_id": 1, "category_id": 1, "bbox": box(1, 1), "score": 0.9},  # right
            {"image_id": 1, "category_id": 1, "bbox": box(150, 0), "score": 0.8},  # wrong
            {"image_id": 1, "category_id": 1, "bbox": box(50, 150), "score": 0.7},  # on a difficult box: ignored
            {"image_id": 1, "category_id": 1, "bbox": box(100, 101), "score": 0.6},  # right
            {"image_id": 1, "category_id": 2, "bbox": box(0, 0), "score": 0.5}]  # a class without boxes: left out
    metrics = voc_metrics(dataset, dets, [1])
    # precision/recall: (1, .5), (.5, .5), (2/3, 1): 11-point = (6 * 1 + 5 * 2/3) / 11, area = .5 * 1 + .5 * 2/3
    assert metrics["mAP50_07"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert metrics["mAP50_all"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    from detnas.data.voc import VOC_CLASSES

    assert fitness_metric(type("Voc", (), {"classes": list(VOC_CLASSES)})()) == "mAP50_07"
    assert fitness_metric(dataset) == "AP"
    voc = Constraints().resolve("detnas-300m", 224, "mAP50_07")[0]
    assert voc.metric == "mAP50_07"


class _VocAccuracy(FakeAccuracy):
    def evaluate(self, arch):
        metrics = super().evaluate(arch)
        return {**metrics, "mAP50_07": 1.0 - metrics["AP"]}  # ranks the other way round from COCO AP


def test_search_fitness_is_the_resolved_metric(tmp_path) -> None:
    from detnas.search.evolution import EvolutionSettings, Search
    from detnas.search.interfaces import BackboneCost

    settings = EvolutionSettings(population=4, generations=1, parents=2, mutations=0, crossovers=0, randoms=4)
    for metric in ("AP", "mAP50_07"):
        constraints = Constraints(latency_ms=1e6, metric=metric)
        search = Search(TINY, settings, constraints, _VocAccuracy(), FakeLatency(), BackboneCost(64),
                        tmp_path / f"{metric}.jsonl")
        records = search.run()
        assert records and all(r.fitness == pytest.approx(r.metrics[metric]) for r in records)


# 9 ------------------------------------------------------------------------------------------------------------
def test_retinanet_coder_loss_and_test_settings_are_official() -> None:
    torch.manual_seed(0)
    detector = build_detector("retinanet", ChildNet(ARCH), 3, 96, 128, style="detnas")
    head = detector.head.regression_head
    assert detector.box_coder.weights == head.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert (detector.nms_thresh, detector.detections_per_img) == (0.4, 100)
    stock = build_detector("retinanet", ChildNet(ARCH), 3, 96, 128)
    assert (stock.nms_thresh, stock.detections_per_img, stock.box_coder.weights) == (0.5, 300, (1.0, 1.0, 1.0, 1.0))
    assert set(detector.state_dict()) == set(stock.state_dict())  # same modules, same checkpoint keys
    anchors = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 8.0, 8.0]])] * 2
    targets = [{"boxes": torch.tensor([[2.0, 1.0, 30.0, 35.0], [12.0, 8.0, 47.0, 44.0]])}] * 2
    matched = [torch.tensor([0, 1, -1]), torch.tensor([-1, 1, -2])]  # 3 positive anchors in the batch
    regression = torch.randn(2, 3, 4)
    loss = head.compute_loss(targets, {"bbox_regression": regression}, anchors, matched)
    wanted = [head.box_coder.encode_single(targets[i]["boxes"][matched[i][matched[i] >= 0]],
                                           anchors[i][matched[i] >= 0]) for i in range(2)]
    picked = torch.cat([regression[i][matched[i] >= 0] for i in range(2)])
    expected = nn.functional.smooth_l1_loss(picked, torch.cat(wanted), reduction="sum", beta=0.11) / (4 * 3)
    torch.testing.assert_close(loss, expected)
    # focal loss: summed over the batch (anchors between the thresholds, -2, left out) / (3 positives + 2 images)
    logits = torch.randn(2, 3, 3)
    labelled = [{"labels": torch.tensor([1, 2]), "boxes": t["boxes"]} for t in targets]
    focal = detector.head.classification_head.compute_loss(labelled, {"cls_logits": logits}, matched)
    wanted = torch.zeros(2, 3, 3)
    wanted[0, 0, 1] = wanted[0, 1, 2] = wanted[1, 1, 2] = 1.0
    keep = torch.stack([torch.ones(3, dtype=torch.bool), torch.tensor([True, True, False])])
    expected = sigmoid_focal_loss(logits[keep], wanted[keep], reduction="sum") / (3 + 2)
    torch.testing.assert_close(focal, expected)


# 10 -----------------------------------------------------------------------------------------------------------
def test_imagenet_evaluation_is_short_side_256_centre_crop_224_on_all_images() -> None:
    from detnas.data.classification import center_crop_transform

    cfg = resolve_config("paper-cls")
    assert cfg.classifier_style == "detnas" and cfg.eval_images == 0  # 0: the full validation set
    picture = Image.new("RGB", (512, 256), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 128, 256))
    picture.paste((255, 0, 0), (384, 0, 512, 256))
    crop = center_crop_transform(224)(picture)
    assert crop.shape == (3, 224, 224) and int(crop[0].max()) == 0 and int(crop[2].min()) == 255  # no red margin


# 11 -----------------------------------------------------------------------------------------------------------
def test_imagenet_training_jitters_drops_channels_and_initialises_as_official() -> None:
    from torchvision.transforms import v2 as T

    from detnas.data.classification import train_transform

    jitter = [t for t in train_transform(224, color_jitter=True).transforms if isinstance(t, T.ColorJitter)]
    assert len(jitter) == 1 and jitter[0].brightness == jitter[0].contrast == jitter[0].saturation == (0.6, 1.4)
    assert not any(isinstance(t, T.ColorJitter) for t in train_transform(224).transforms)
    torch.manual_seed(0)
    net = Supernet(get_space("detnas-300m"), num_classes=1000)
    official_classifier_(net)
    assert any(type(m) is nn.Dropout2d for m in net.head) and not any(type(m) is nn.Dropout for m in net.head)
    stem = net.stem[0]
    assert abs(stem.weight.std().item() - 0.01) < 1e-3 and torch.all(stem.bias == 0)
    pointwise = net.blocks[5].candidates["0"].main[0]  # a 1x1 conv, 160/2 inputs
    assert abs(pointwise.weight.std().item() - 1 / pointwise.weight.shape[1]) < 0.1 / pointwise.weight.shape[1]
    bn = net.stem[1]
    assert torch.all(bn.weight == 1) and torch.allclose(bn.bias, torch.full_like(bn.bias, 1e-4))
    fc = net.head[-1]
    assert abs(fc.weight.std().item() - 0.01) < 1e-3 and torch.all(fc.bias == 0)
    assert set(net.state_dict()) == set(Supernet(get_space("detnas-300m"), num_classes=1000).state_dict())


# 12 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fpn", "retinanet"])
def test_bn_momentum_per_model_kind(kind) -> None:
    def momenta(detector: nn.Module) -> set[float]:
        return {m.momentum for m in detector.modules() if isinstance(m, _BatchNorm)}

    supernet = build_detector(kind, Supernet(get_space("detnas-300m")), 3, style="detnas")
    set_arch(supernet, sample_arch(get_space("detnas-300m"), 0))
    assert momenta(supernet) == {0.1}  # supernets and the search
    assert momenta(build_detector(kind, ChildNet(ARCH), 3, style="detnas")) == {0.01}  # final detectors
    assert momenta(build_detector(kind, ChildNet(ARCH), 3)) == {0.1}  # torchvision style (cpu-* recipes)


@pytest.mark.slow
def test_paper_detection_training_drops_images_without_boxes(tmp_path, coco128) -> None:
    from detnas.train.stages import _detection_set

    ann = coco_subset(coco128, tmp_path, images=3)
    data = json.loads(Path(ann).read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != data["images"][0]["id"]]
    Path(ann).write_text(json.dumps(data))
    overrides = dict(data=str(coco128 / "train2017"), ann=str(ann))
    paper = _detection_set(str(coco128 / "train2017"), str(ann), resolve_config("paper-det-fpn", overrides=overrides),
                           train=True)
    cpu = _detection_set(str(coco128 / "train2017"), str(ann), resolve_config("cpu-det", overrides=overrides),
                         train=True)
    assert (len(paper), len(cpu)) == (2, 3)
