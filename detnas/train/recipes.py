"""Training configuration: named recipe presets, a config file, `key=value` overrides, one resolved `TrainConfig`.

The fields split in two: *recipe* fields decide what is learned (optimiser, schedule, sizes, seed) and must not
change when a run is resumed; *run* fields say where data and outputs live and how often to log, and may change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError
from detnas.io import read_mapping_file
from detnas.registry import Registry
from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, check_side

TASKS = ("cls", "det")
SCHEDULES = ("linear", "step")
SAMPLERS = ("uniform", "flops-bins", "detnas-bins", "sandwich")
STYLES = ("torchvision", "detnas")  # detnas: as the official code (docs/deviations.md)
PARAM_GROUPS = ("conv-fc", "detectron")
DATA_FORMATS = ("auto", "imagefolder", "coco", "voc")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; saved as `config.json` in the run folder."""

    # --- recipe: fixed for the life of a run (a resume with other values is refused) ---
    task: str = "cls"
    space: str = "detnas-300m"
    iterations: int = 200
    batch_size: int = 32  # global: split evenly over the ranks
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5  # conv and FC weights only
    label_smoothing: float = 0.1  # classification only
    schedule: str = "linear"  # linear: to 0 at the last iteration; step: /10 at each milestone
    milestones: tuple[int, ...] = ()
    warmup_iters: int = 0
    warmup_factor: float = 1.0 / 3.0
    image_size: int = 64  # classification crop
    min_size: int = DEFAULT_MIN_SIZE  # detection short side
    max_size: int = DEFAULT_MAX_SIZE  # detection long side cap
    detector: str = "fpn"
    roi_batch: int = 512  # FPN: RoIs sampled per image for the box head (DetNAS / the 1x schedule: 512)
    proposals: int = 1000  # FPN: RPN proposals kept per image at evaluation (1x schedule: 1000)
    sampler: str = "uniform"  # how single paths are drawn (supernet stages); detnas-bins: the official 7 bins;
    # sandwich (elastic spaces): widest, narrowest, then 2 uniform paths, cycling over iterations
    flops_bins: int = 10  # flops-bins only: bins between the FLOPs quantiles
    seed: int = 0
    amp: bool = True  # autocast + GradScaler, only ever on CUDA
    param_groups: str = "conv-fc"  # conv-fc: decay on conv/FC weights; detectron: biases 2x lr no decay, rest decay
    supernet_bn_affine: bool = True  # supernet-det: train BN gamma/beta (the official code leaves them untrained)
    detector_style: str = "torchvision"  # detnas: FPN BN, RetinaNet coder/loss/test and BN momentum as official
    classifier_style: str = "torchvision"  # detnas: official init, channel dropout, colour jitter, 256/224 eval crop
    # --- run: may differ between the first start and a resume ---
    recipe: str = "custom"
    data: str = ""
    ann: str = ""  # detection: COCO annotations JSON, or the VOC image set name (e.g. trainval; empty: all)
    data_format: str = "auto"
    val_data: str = ""
    val_ann: str = ""
    out: str = "runs/train"
    init: str = ""  # checkpoint to initialise the backbone from
    arch: str = ""  # child stages: released name, arch JSON file or inline JSON
    device: str = "auto"
    workers: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end (when val_data is given)
    eval_images: int = 500  # cap on validation images per evaluation; 0: all
    checkpoint_every: int = 100
    keep_last: int = 3
    resume: bool = False  # continue the latest checkpoint in `out`
    stop_at: int = 0  # stop (with a checkpoint) after this iteration, e.g. to fit a job time limit; 0: the end

    def recipe_dict(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run it continues."""
        data = self.to_dict()
        return {k: data[k] for k in RECIPE_KEYS}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["milestones"] = list(self.milestones)
        return data

    def replace(self, **changes: Any) -> TrainConfig:
        return from_mapping({**self.to_dict(), **changes}, source="config")


_FIELDS = {f.name: f for f in fields(TrainConfig)}
RECIPE_KEYS: tuple[str, ...] = tuple(_FIELDS)[: list(_FIELDS).index("recipe")]

# The paper's recipes (spec section 5) behave as the official code (megvii-model/DetNAS, ShuffleNet-Series/DetNAS,
# SinglePathOneShot) does: FP32, its FLOPs bins, optimiser groups, detector and classifier details; docs/deviations.md
# lists what stays different on purpose. Detection warm-up follows the 1x
# schedule (500 iterations from a third of the learning rate). The cpu-* recipes are small, keep torchvision's
# detectors and classifiers, uniform paths, AMP on CUDA, the ImageNet optimiser grouping and trained supernet BN.
_PAPER_CLS = dict(task="cls", iterations=300_000, batch_size=1024, lr=0.5, weight_decay=4e-5, schedule="linear",
                  image_size=224, label_smoothing=0.1, sampler="detnas-bins", amp=False, classifier_style="detnas",
                  eval_images=0)
_PAPER_DET = dict(task="det", batch_size=16, weight_decay=1e-4, schedule="step", warmup_iters=500,
                  min_size=DEFAULT_MIN_SIZE, max_size=DEFAULT_MAX_SIZE, amp=False, param_groups="detectron", supernet_bn_affine=False,
                  detector_style="detnas")
_BUILTIN: dict[str, dict[str, Any]] = {
    "paper-cls": dict(_PAPER_CLS, checkpoint_every=5000, log_every=100, eval_every=10_000),
    "paper-det-fpn": dict(_PAPER_DET, detector="fpn", lr=0.02, iterations=90_000, milestones=(60_000, 80_000),
                          checkpoint_every=5000, log_every=20, eval_every=10_000),
    "paper-det-retinanet": dict(_PAPER_DET, detector="retinanet", lr=0.01, iterations=90_000,
                                milestones=(60_000, 80_000), checkpoint_every=5000, log_every=20, eval_every=10_000),
    "paper-det-fpn-voc": dict(_PAPER_DET, detector="fpn", lr=0.02, iterations=22_500, milestones=(15_000, 20_000),
                              checkpoint_every=2500, log_every=20, eval_every=5000),
    "paper-det-retinanet-voc": dict(_PAPER_DET, detector="retinanet", lr=0.01, iterations=22_500,
                                    milestones=(15_000, 20_000), checkpoint_every=2500, log_every=20,
                                    eval_every=5000),
    "cpu-cls": dict(task="cls", iterations=200, batch_size=32, lr=0.1, weight_decay=4e-5, schedule="linear",
                    image_size=64, checkpoint_every=50, log_every=10, eval_every=100, eval_images=500),
    "cpu-det": dict(task="det", iterations=100, batch_size=2, lr=0.01, weight_decay=1e-4, schedule="step",
                    milestones=(70, 90), warmup_iters=10, min_size=192, max_size=320, detector="fpn",
                    roi_batch=32, proposals=100, checkpoint_every=50, log_every=5, eval_every=50, eval_images=50),
    "cpu-det-retinanet": dict(task="det", iterations=100, batch_size=2, lr=0.005, weight_decay=1e-4,
                              schedule="step", milestones=(70, 90), warmup_iters=10, min_size=192, max_size=320,
                              detector="retinanet", checkpoint_every=50, log_every=5, eval_every=50,
                              eval_images=50),
}

#: recipe presets by name (`--recipe NAME`, or `recipe: NAME` in a config file): the fields each sets over the
#: `TrainConfig` defaults. Filled by `register_recipe`, which checks them, so a user's preset is refused when it is
#: registered, not when a run starts.
RECIPES: Registry[dict[str, Any]] = Registry("recipe", "--recipe", same=lambda a, b: a == b)


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a file value or a command-line string into the field's type."""
    kind = _FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "tuple[int, ...]":
            if isinstance(value, str):
                return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
            return tuple(int(v) for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise DetnasError(f"{source}: '{name}' must be of type {kind}, got {value!r}") from None


def _validate(cfg: TrainConfig, source: str) -> None:
    from detnas.detection import DETECTOR_KINDS  # any registered kind trains, plug-ins included

    for name, allowed in (("task", TASKS), ("schedule", SCHEDULES), ("sampler", SAMPLERS),
                          ("detector", tuple(DETECTOR_KINDS)), ("data_format", DATA_FORMATS), ("param_groups", PARAM_GROUPS),
                          ("detector_style", STYLES), ("classifier_style", STYLES)):
        if getattr(cfg, name) not in allowed:
            raise DetnasError(f"{source}: '{name}' is {getattr(cfg, name)!r}; choose one of {', '.join(allowed)}")
    for name in ("iterations", "batch_size", "image_size", "min_size", "max_size", "roi_batch", "proposals",
                 "flops_bins", "log_every",
                 "checkpoint_every", "keep_last"):
        if getattr(cfg, name) < 1:
            raise DetnasError(f"{source}: '{name}' must be >= 1, got {getattr(cfg, name)}")
    for name in ("image_size", "min_size", "max_size"):
        check_side([getattr(cfg, name)], f"{source}: '{name}' {getattr(cfg, name)}")
    if not cfg.lr > 0 or not cfg.weight_decay >= 0 or not 0 <= cfg.momentum < 1 or not 0 <= cfg.label_smoothing < 1:
        raise DetnasError(f"{source}: need lr > 0, weight_decay >= 0, 0 <= momentum < 1, 0 <= label_smoothing < 1")
    if list(cfg.milestones) != sorted(cfg.milestones) or any(m < 1 for m in cfg.milestones):
        raise DetnasError(f"{source}: 'milestones' {list(cfg.milestones)} must be increasing positive iterations")
    if min(cfg.workers, cfg.eval_every, cfg.warmup_iters, cfg.stop_at, cfg.eval_images) < 0:
        raise DetnasError(f"{source}: 'workers', 'eval_every', 'warmup_iters', 'stop_at' and 'eval_images' must be "
                          ">= 0")


def from_mapping(data: dict[str, Any], source: str = "config") -> TrainConfig:
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise DetnasError(f"{source}: unknown keys {unknown}; allowed keys are {', '.join(_FIELDS)}")
    cfg = TrainConfig(**{k: _coerce(k, v, source) for k, v in data.items()})
    _validate(cfg, source)
    return cfg



def register_recipe(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Add a recipe preset: `settings` are `TrainConfig` recipe or run fields (checked now, with the field's type
    and allowed values); re-registering the same settings is a no-op, other settings under a known name an error."""
    if "recipe" in settings:
        raise DetnasError(f"recipe '{name}': leave 'recipe' out of its settings (the preset's name is its recipe)")
    from_mapping({**settings, "recipe": name}, source=f"recipe '{name}'")
    return RECIPES.register(name)(dict(settings))


for _name, _settings in _BUILTIN.items():
    register_recipe(_name, _settings)

def read_config_file(path: str | Path) -> dict[str, Any]:
    """A flat mapping of config keys from a .json or .yaml file."""
    data = read_mapping_file(path, "config file") or {}
    if not isinstance(data, dict):
        raise DetnasError(f"{path}: a config file is a mapping of keys to values")
    return data


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["lr=0.1", "milestones=60,80"]` -> {"lr": "0.1", "milestones": "60,80"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DetnasError(f"--set '{item}' must be KEY=VALUE, e.g. --set lr=0.05")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def rescale_milestones(preset: str | None, overrides: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """`-n N` on a preset's step schedule: its milestones at the same fractions of the new length (cpu-det's
    70, 90 of 100 become 14, 18 at -n 20), so the learning rate still steps; with the note that says so. Milestones
    given explicitly, or no preset, leave the overrides as they are."""
    recipe = RECIPES.get(preset) if preset in RECIPES else None
    if not recipe or not recipe.get("milestones") or "iterations" not in overrides or "milestones" in overrides:
        return overrides, None
    total, wanted = int(recipe["iterations"]), int(overrides["iterations"])
    if wanted == total or wanted < 1:
        return overrides, None
    scaled = sorted({max(1, round(m * wanted / total)) for m in recipe["milestones"]})
    note = (f"-n {wanted}: recipe {preset}'s milestones {', '.join(map(str, recipe['milestones']))} of {total} "
            f"iterations rescaled to {', '.join(map(str, scaled))} (--set milestones=... to choose)")
    return {**overrides, "milestones": scaled}, note


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < preset < config file < overrides; the file may name its own preset with `recipe: NAME`."""
    file_data = read_config_file(config_file) if config_file else {}
    name = preset or file_data.get("recipe")
    data: dict[str, Any] = {}
    if name:
        if name not in RECIPES:
            raise DetnasError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)} (see `detnas train recipes`)")
        data.update(RECIPES.get(name), recipe=name)
    data.update(file_data)
    if name:
        data["recipe"] = name
    data.update(overrides or {})
    return from_mapping(data, source=str(config_file) if config_file else "config")
