"""Detection stages on real COCO images (tiny sizes) and the loss-goes-down checks of both tasks."""

from __future__ import annotations

import json

import pytest
import torch

from detnas.arch import Arch
from detnas.data.coco import CocoDetection
from detnas.data.detection import collate
from detnas.data.transforms import detection_transforms
from detnas.detection import build_detector, set_arch
from detnas.pixels import DEFAULT_PIXELS
from detnas.supernet import Supernet
from detnas.train import Classifier, resolve_config, train_child_cls, train_child_det, train_supernet_cls, train_supernet_det
from detnas.train.optim import build_optimizer

from helpers.train import coco_subset, tiny_cls_config, tiny_space

DET = dict(iterations=2, batch_size=1, min_size=64, max_size=96, roi_batch=8, proposals=20, log_every=1,
           checkpoint_every=2, eval_images=2, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_supernet_det_fpn_from_cls_supernet_then_child_retinanet(tmp_path, coco128):
    cls_final = train_supernet_cls(tiny_cls_config(tmp_path, iterations=1, out=str(tmp_path / "cls")))
    ann = coco_subset(coco128, tmp_path, images=2)
    images = str(coco128 / "train2017")
    cfg = resolve_config("cpu-det", overrides=dict(DET, space=tiny_cls_config(tmp_path).space, data=images,
                                                   ann=str(ann), val_data=images, val_ann=str(ann),
                                                   init=str(cls_final), out=str(tmp_path / "det")))
    final = train_supernet_det(cfg)
    meta = json.loads(final.with_suffix(".json").read_text())
    assert meta["kind"] == "supernet-det" and meta["detector"] == "fpn" and meta["arch"] is None
    assert meta["num_classes"] == len(meta["classes"]) == len(meta["label_to_cat_id"])
    records = [json.loads(line) for line in (tmp_path / "det" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("event") == "eval"]
    assert [r["iteration"] for r in evals] == [0, 2]  # the starting point and the end
    assert all(0.0 <= r["AP"] <= 1.0 and r["images"] == 2 for r in evals)
    # the backbone really started from the classification supernet (head dropped)
    cls_weights = Supernet(tiny_space(), num_classes=3)
    from safetensors.torch import load_file

    cls_weights.load_state_dict(load_file(str(cls_final)))
    det_weights = load_file(str(final))
    assert not any(k.startswith("backbone.body.head") for k in det_weights)
    # a parameter of a candidate the 2 sampled paths never used is still the classification weight
    untouched = [k for k in det_weights if k.startswith("backbone.body.blocks.") and k.endswith("weight")
                 and torch.equal(det_weights[k], cls_weights.state_dict()[k[len("backbone.body."):]])]
    assert untouched

    # child: classification from scratch, then RetinaNet initialised from it
    arch = json.dumps(Arch(tiny_space(), (3, 0, 2, 1)).to_dict())
    child_cls = train_child_cls(tiny_cls_config(tmp_path, arch=arch, iterations=1, out=str(tmp_path / "ccls")))
    child_cfg = cfg.replace(arch=arch, init=str(child_cls), detector="retinanet", out=str(tmp_path / "cdet"),
                            val_data="", val_ann="")
    child_final = train_child_det(child_cfg)
    meta = json.loads(child_final.with_suffix(".json").read_text())
    assert meta["kind"] == "child-det" and meta["detector"] == "retinanet" and meta["arch"]["choices"] == "3|0|2|1"


def _descends(losses: list[float], factor: float) -> bool:
    return sum(losses[-3:]) / 3 < factor * sum(losses[:3]) / 3


def test_classification_loss_goes_down():
    torch.manual_seed(0)
    space = tiny_space()
    model = Classifier(Supernet(space, num_classes=3))
    model.set_arch(Arch(space, (0, 1, 2, 3)))
    opt = build_optimizer(model, resolve_config("cpu-cls", overrides={"lr": 0.05}))
    x = torch.rand(12, 3, 32, 32)
    y = torch.arange(12) % 3
    x[torch.arange(12), y] += 0.6  # colour tells the class
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert _descends(losses, 0.7), losses


@pytest.mark.slow
def test_detection_loss_goes_down_on_real_images(tmp_path, coco128):
    torch.manual_seed(0)
    space = tiny_space()
    data = CocoDetection(coco_subset(coco128, tmp_path, images=2), coco128 / "train2017",
                         transforms=detection_transforms(False, 64, 128))
    detector = build_detector("retinanet", Supernet(space), data.num_classes + 1, 64, 128, DEFAULT_PIXELS)
    set_arch(detector, Arch(space, (0, 1, 2, 3)))
    opt = build_optimizer(detector, resolve_config("cpu-det", overrides={"lr": 0.02}))
    images, targets = collate([data[0], data[1]])
    images = [DEFAULT_PIXELS.to_model_input(im) for im in images]
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
    detector.train()
    losses = []
    for _ in range(12):
        loss = sum(detector(images, targets).values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert _descends(losses, 0.9), losses  # focal loss falls slowly but steadily


@pytest.mark.slow
def test_supernet_det_reads_voc(tmp_path, coco128):
    """VOC layout (Annotations/*.xml, JPEGImages/, ImageSets/Main) through the same stage, image set via --ann."""
    from PIL import Image

    root = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    names = []
    for i, src in enumerate(sorted((coco128 / "train2017").iterdir())[:2]):
        name = f"img{i}"
        names.append(name)
        width, height = Image.open(src).size
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(src.read_bytes())
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width><height>{height}</height>"
            "<depth>3</depth></size><object><name>cat</name><difficult>0</difficult><bndbox><xmin>11</xmin>"
            f"<ymin>21</ymin><xmax>{width // 2}</xmax><ymax>{height // 2}</ymax></bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(names) + "\n")
    cls_final = train_supernet_cls(tiny_cls_config(tmp_path, iterations=1, out=str(tmp_path / "cls")))
    cfg = resolve_config("cpu-det", overrides=dict(DET, iterations=1, space=tiny_cls_config(tmp_path).space,
                                                   data=str(root), ann="trainval", detector="retinanet",
                                                   init=str(cls_final), out=str(tmp_path / "voc")))
    meta = json.loads(train_supernet_det(cfg).with_suffix(".json").read_text())
    assert meta["num_classes"] == 20 and "cat" in meta["classes"]


class _ToyDense(torch.nn.Module):
    """A toy detector kind: a 1x1 conv on the finest FPN level whose pooled scores learn which classes an image
    holds. Enough to train: training calls the registered kind's builder and losses, never a kind's name."""

    def __init__(self, backbone: torch.nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone, self.num_classes = backbone, num_classes
        self.head = torch.nn.Conv2d(backbone.out_channels, num_classes, 1)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = torch.stack([torch.nn.functional.interpolate(im[None], size=(64, 64))[0] for im in images])
        scores = self.head(next(iter(self.backbone(batch).values()))).mean((2, 3))
        wanted = torch.zeros_like(scores)
        for row, target in zip(wanted, targets):
            row[target["labels"]] = 1.0
        return {"loss_classes": torch.nn.functional.binary_cross_entropy_with_logits(scores, wanted)}


def test_a_registered_detector_kind_trains(tmp_path, coco128) -> None:
    """`detnas train supernet-det --set detector=NAME` accepts any registered kind (it refused all but fpn and
    retinanet) and trains it with the knobs the kind asks for."""
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    from detnas.detection import DETECTOR_KINDS, DetectionBackbone
    from detnas.detection.kinds import DetectorKind

    asked: list[int] = []

    def build(body, num_classes: int, style: str, toy_width: int = 0, **_torchvision) -> _ToyDense:
        asked.append(toy_width)
        return _ToyDense(DetectionBackbone(body, ["c4", "c5"], LastLevelMaxPool(), ["p6"]), num_classes)

    DETECTOR_KINDS.register("toy-dense")(DetectorKind(model=_ToyDense, build=build, dense_outputs=lambda d, f: (),
                                                      deploy=lambda graph, images: [],
                                                      train_options=lambda cfg: {"toy_width": cfg.roi_batch}))
    try:
        cls_final = train_supernet_cls(tiny_cls_config(tmp_path, iterations=1, out=str(tmp_path / "cls")))
        cfg = resolve_config("cpu-det", overrides=dict(
            DET, iterations=1, checkpoint_every=1, detector="toy-dense", space=tiny_cls_config(tmp_path).space,
            data=str(coco128 / "train2017"), ann=str(coco_subset(coco128, tmp_path, images=2)), init=str(cls_final),
            out=str(tmp_path / "det")))
        final = train_supernet_det(cfg)
    finally:
        DETECTOR_KINDS.unregister("toy-dense")
    assert json.loads(final.with_suffix(".json").read_text())["detector"] == "toy-dense" and asked == [DET["roi_batch"]]
    records = [json.loads(line) for line in (tmp_path / "det" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 1 and 0 < losses[0] < 10, records
