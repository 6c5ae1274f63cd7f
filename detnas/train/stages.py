"""The four training stages of DetNAS, callable from Python and from `detnas train`.

* `train_supernet_cls`: single-path pre-training of the classification supernet on an ImageFolder.
* `train_supernet_det`: FPN / RetinaNet fine-tuning of the supernet on COCO or VOC, backbone from the former.
* `train_child_cls` / `train_child_det`: the found architecture retrained alone, classification from scratch,
  then detection from that classification checkpoint.

Each returns the path of the final weights (`<out>/final.safetensors`, sidecar `final.json`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from detnas.arch import Arch, resolve_arch, sample_arch
from detnas.checkpoint import CheckpointMeta, read_checkpoint
from detnas.data.decodable import require_decodable
from detnas.distributed import DistContext, init_distributed, shutdown_distributed
from detnas.errors import DetnasError
from detnas.pixels import DEFAULT_PIXELS, Normalize, PixelConvention
from detnas.space import SearchSpace, get_space
from detnas.supernet import ChildNet, Supernet, materialize, official_classifier_
from detnas.train.loop import StageSpec, fit
from detnas.train.optim import freeze_bn_affine
from detnas.train.recipes import TrainConfig

STAGES = ("supernet-cls", "supernet-det", "child-cls", "child-det")
#: the fixed path a supernet is evaluated on during training (a progress signal, not a search result)
EVAL_PATH_SEED = 0


class Classifier(nn.Module):
    """Normalisation + network: takes float RGB in [0, 1] like every detnas model; the supernet path is set
    with `set_arch` so the module's forward (and DDP's) sees only images."""

    def __init__(self, net: Supernet | ChildNet, pixels: PixelConvention = DEFAULT_PIXELS) -> None:
        super().__init__()
        self.net = net
        self.normalize = Normalize(pixels)
        self.arch: Arch | None = None

    def set_arch(self, arch: Arch) -> None:
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if isinstance(self.net, Supernet):
            if self.arch is None:
                raise DetnasError("supernet classifier has no path; call set_arch(arch) first")
            return self.net(x, self.arch)
        return self.net(x)


# ----------------------------------------------------------------------------------------------- data


def _classification_sets(cfg: TrainConfig) -> tuple[Any, list[str], Any]:
    """Train/val ImageFolders. Training crops like SPOS (random-resized crop + flip, + colour jitter in the detnas
    style); validation is the data room's square resize (the view search and evaluation use), or in the detnas
    style the official short side 256 and centre crop 224 (scaled with image_size)."""
    from detnas.data.classification import center_crop_transform, image_folder, train_transform

    official = cfg.classifier_style == "detnas"
    train = image_folder(cfg.data, cfg.image_size)
    train.transform = train_transform(cfg.image_size, color_jitter=official)
    if len(train.classes) < 2:
        raise DetnasError(f"{cfg.data}: found {len(train.classes)} class folder ({', '.join(train.classes)}); "
                          "classification needs at least 2 classes")
    require_decodable([Path(p) for p, _ in train.samples], cfg.data)
    val = image_folder(cfg.val_data, cfg.image_size) if cfg.val_data else None
    if val is not None and official:
        val.transform = center_crop_transform(cfg.image_size)
    if val is not None and val.classes != train.classes:
        raise DetnasError(f"{cfg.val_data}: class folders {val.classes[:5]}... differ from the training "
                          f"folders {train.classes[:5]}...; use the same class list")
    return train, list(train.classes), val


def _detection_set(root: str, ann: str, cfg: TrainConfig, train: bool) -> Any:
    """The data set; in the detnas style training drops images without boxes, as the official loader does."""
    dataset = _read_detection_set(root, ann, cfg, train)
    if train and cfg.detector_style == "detnas":
        dataset.records = [r for r in dataset.records if len(r.boxes)]
    return dataset


def _read_detection_set(root: str, ann: str, cfg: TrainConfig, train: bool) -> Any:
    from detnas.data.transforms import detection_transforms

    transforms = detection_transforms(train, cfg.min_size, cfg.max_size)
    fmt = cfg.data_format
    if fmt == "auto":
        fmt = "coco" if ann.endswith(".json") else "voc"
    if fmt == "coco":
        from detnas.data.coco import CocoDetection

        if not ann.endswith(".json"):
            raise DetnasError(f"{root}: COCO data needs its annotations JSON; pass --ann FILE.json")
        return CocoDetection(ann, root, transforms=transforms)
    if fmt == "voc":
        from detnas.data.voc import VocDetection

        return VocDetection(root, image_set=ann or None, transforms=transforms)
    raise DetnasError(f"data_format '{fmt}' is a classification format; detection takes coco or voc")


def _classification_loss(smoothing: float) -> Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, int]]:
    criterion = nn.CrossEntropyLoss(label_smoothing=smoothing)

    def loss(model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
        images, labels = batch
        x = DEFAULT_PIXELS.to_model_input(images.to(device, non_blocking=True))
        return criterion(model(x), labels.to(device, non_blocking=True)), len(labels)

    return loss


def _detection_loss(model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]:
    images, targets = batch
    images = [DEFAULT_PIXELS.to_model_input(im).to(device, non_blocking=True) for im in images]
    targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
    losses = model(images, targets)
    return sum(losses.values()), len(images)


def _top1(model: Classifier, dataset: Any, limit: int, device: torch.device) -> dict[str, float]:
    from torch.utils.data import DataLoader, Subset

    count = min(limit, len(dataset)) if limit else len(dataset)
    subset = Subset(dataset, np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist())
    correct = 0
    for images, labels in DataLoader(subset, batch_size=64):
        logits = model(DEFAULT_PIXELS.to_model_input(images.to(device)))
        correct += int((logits.argmax(1).cpu() == labels).sum())
    return {"top1": correct / count, "images": count}


# ----------------------------------------------------------------------------------------------- checkpoints


def _backbone_from_init(path: str, kind: str, space: SearchSpace, arch: Arch | None) -> dict[str, torch.Tensor]:
    """Backbone tensors (no classification head) from a classification checkpoint, checked against the run."""
    tensors, meta = read_checkpoint(path)
    allowed = {"supernet-det": ("supernet-cls",), "child-det": ("child-cls", "supernet-cls")}[kind]
    if meta.kind not in allowed:
        raise DetnasError(f"{path}: a '{meta.kind}' checkpoint cannot initialise {kind}; pass a "
                          f"{' or '.join(allowed)} checkpoint")
    if meta.space.digest != space.digest:
        raise DetnasError(f"{path}: checkpoint is of space '{meta.space.name}' ({meta.space.digest}) but this run "
                          f"trains space '{space.name}' ({space.digest}); use a checkpoint of the same space")
    body = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    if meta.kind == "supernet-cls" and arch is not None:
        supernet = Supernet(space)
        _load_strict(supernet, body, path)
        return materialize(supernet, arch).state_dict()
    if arch is not None and (meta.arch is None or meta.arch.hash != arch.hash):
        raise DetnasError(f"{path}: checkpoint arch {meta.arch.compact() if meta.arch else None} differs from --arch "
                          f"{arch.compact()}; initialise from the classification run of the same arch")
    return body


def _load_strict(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise DetnasError(f"{where}: weights do not fit the model ({first}); was it written for another "
                          "space, arch or number of classes?") from None


# ----------------------------------------------------------------------------------------------- stages


def _meta(kind: str, space: SearchSpace, arch: Arch | None, classes: list[str], cfg: TrainConfig,
          detector: str | None = None, label_to_cat_id: dict[int, int] | None = None) -> CheckpointMeta:
    """The sidecar of this stage's checkpoints (`num_classes` kept beside the record for readers of the JSON)."""
    return CheckpointMeta(kind, space, tuple(classes), DEFAULT_PIXELS, arch, detector, label_to_cat_id,
                          {"name": cfg.recipe, **cfg.recipe_dict()}, {"num_classes": len(classes)})


def _classification_spec(kind: str, cfg: TrainConfig, space: SearchSpace, arch: Arch | None,
                         ctx: DistContext) -> StageSpec:
    train, classes, val = _classification_sets(cfg)
    net: Supernet | ChildNet = Supernet(space, len(classes)) if arch is None else ChildNet(arch, len(classes))
    if cfg.classifier_style == "detnas":
        official_classifier_(net)
    model = Classifier(net).to(ctx.device)
    eval_arch = sample_arch(space, EVAL_PATH_SEED) if arch is None else None

    def evaluate(m: nn.Module) -> dict[str, float]:
        if eval_arch is not None:
            model.set_arch(eval_arch)
        return _top1(model, val, cfg.eval_images, ctx.device)

    return StageSpec(kind=kind, cfg=cfg, model=model, weights=net.state_dict,
                     load_weights=lambda t: _load_strict(net, t, cfg.out),
                     meta=_meta(kind, space, arch, classes, cfg), train_set=train, collate=None,
                     loss=_classification_loss(cfg.label_smoothing),
                     supernet=net if arch is None else None, set_arch=model.set_arch,
                     evaluate=evaluate if val is not None else None)


def _detection_spec(kind: str, cfg: TrainConfig, space: SearchSpace, arch: Arch | None,
                    ctx: DistContext) -> StageSpec:
    from detnas.data.detection import collate
    from detnas.detection import build_detector, convert_sync_bn, set_arch
    from detnas.detection.kinds import detector_kind
    from detnas.evaluation import detector_predictor, evaluate

    body: Supernet | ChildNet = Supernet(space) if arch is None else ChildNet(arch)
    if cfg.init:
        _load_strict(body, _backbone_from_init(cfg.init, kind, space, arch), cfg.init)
    train = _detection_set(cfg.data, cfg.ann, cfg, train=True)
    train.require_boxes("training")
    require_decodable([r.path for r in train.records], cfg.ann or cfg.data)
    val = _detection_set(cfg.val_data, cfg.val_ann, cfg, train=False) if cfg.val_data else None
    if val is not None:
        val.require_boxes("evaluation during training", cfg.eval_images)
    if val is not None and val.classes != train.classes:
        raise DetnasError(f"{cfg.val_ann or cfg.val_data}: classes differ from the training set's; use the same "
                          "category list")
    detector = build_detector(cfg.detector, body, train.num_classes + 1, cfg.min_size, cfg.max_size,
                              DEFAULT_PIXELS, cfg.detector_style, cfg.proposals,
                              **detector_kind(cfg.detector).train_options(cfg))
    if arch is None and not cfg.supernet_bn_affine:
        freeze_bn_affine(detector)
    if ctx.active and ctx.device.type == "cuda":
        detector = convert_sync_bn(detector)  # DetNAS: BN is trained, synchronised across GPUs
    detector = detector.to(ctx.device)
    eval_arch = sample_arch(space, EVAL_PATH_SEED) if arch is None else None

    def run_eval(m: nn.Module) -> dict[str, float]:
        if eval_arch is not None:
            set_arch(detector, eval_arch)
        metrics = evaluate(detector_predictor(detector, ctx.device), val, max_images=cfg.eval_images or None)
        return {k: metrics[k] for k in ("AP", "AP50", "AP75", "images")}

    return StageSpec(kind=kind, cfg=cfg, model=detector, weights=detector.state_dict,
                     load_weights=lambda t: _load_strict(detector, t, cfg.out),
                     meta=_meta(kind, space, arch, list(train.classes), cfg, cfg.detector, train.label_to_cat_id),
                     train_set=train, collate=collate, loss=_detection_loss,
                     supernet=body if arch is None else None,  # an elastic supernet detector's widest body too
                     set_arch=lambda a: set_arch(detector, a),
                     evaluate=run_eval if val is not None else None)


def run_stage(kind: str, cfg: TrainConfig) -> Path:
    """Build the stage, train it (joining torchrun's process group if launched by torchrun), return final weights."""
    if kind not in STAGES:
        raise DetnasError(f"unknown stage '{kind}'; choose one of {', '.join(STAGES)}")
    task = kind.rsplit("-", 1)[1]
    if cfg.task != task:
        raise DetnasError(f"recipe '{cfg.recipe}' is a {cfg.task} recipe but stage {kind} needs a {task} one "
                          "(see `detnas train recipes`)")
    if not cfg.data:
        raise DetnasError(f"{kind}: no training data; pass --images")
    if task == "cls" and cfg.init:
        raise DetnasError(f"{kind} trains from scratch (DetNAS); drop --init {cfg.init} or train a det stage")
    space = get_space(cfg.space)
    arch = None
    if kind.startswith("child"):
        if not cfg.arch:
            raise DetnasError(f"{kind}: pass --arch (a released name, an arch JSON file or inline JSON)")
        arch = resolve_arch(cfg.arch)
        if arch.space.digest != space.digest:
            raise DetnasError(f"--arch is of space '{arch.space.name}' but the recipe's space is '{space.name}'; "
                              f"add --set space={arch.space.name} (or the space file)")
    ctx = init_distributed(cfg.device)
    try:
        torch.manual_seed(cfg.seed + ctx.rank)
        random.seed(cfg.seed + ctx.rank)
        np.random.seed(cfg.seed + ctx.rank)
        build = _classification_spec if task == "cls" else _detection_spec
        return fit(build(kind, cfg, space, arch, ctx), ctx, resume=cfg.resume)
    finally:
        shutdown_distributed()


def train_supernet_cls(cfg: TrainConfig) -> Path:
    return run_stage("supernet-cls", cfg)


def train_supernet_det(cfg: TrainConfig) -> Path:
    return run_stage("supernet-det", cfg)


def train_child_cls(cfg: TrainConfig) -> Path:
    return run_stage("child-cls", cfg)


def train_child_det(cfg: TrainConfig) -> Path:
    return run_stage("child-det", cfg)
