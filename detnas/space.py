"""Search spaces as data: a small declarative spec, looked up by name through a registry.

A space fixes the stem width, the width and depth of each stage, the classification head width and the
candidate ops every choice block may pick. Users define new spaces in a JSON or YAML file.

Three optional gene groups make a space elastic (the paper's spaces have none, so their content, digest and
arch hashes stay as they were): `width_multipliers` (each block's middle width as a multiple of its base C/2,
SPOS' channel search), `min_depths` (per stage, how many leading blocks must run: the rest of the stage may be
skipped, OFA's depth) and `detector` (FPN width, box/dense head convs and FC width, test-time proposals and the
input short side). The supernet holds the widest of each; a path is a slice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError
from detnas.registry import Registry

#: choice index -> op name, fixed by DetNAS (spec section 2).
CHOICE_NAMES: tuple[str, ...] = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception")
_SPACE_KEYS = {"name", "stem_width", "stage_widths", "stage_depths", "head_width", "choices", "description",
               "width_multipliers", "min_depths", "detector"}
#: the backbone's total stride: every input side must be a multiple of it
BACKBONE_STRIDE = 32


def _fail(where: str, field_name: str, value: Any, allowed: str) -> DetnasError:
    return DetnasError(f"{where}: {field_name} {value} is not allowed; {allowed}")


@dataclass(frozen=True)
class DetectorGenes:
    """The allowed values of the detector's genes (one tuple per gene; a single value fixes the gene).

    `fpn_widths`: FPN channels (every pyramid level, the RPN and dense heads run at this width); `head_convs`:
    3x3 convs of the FPN box head (RetinaNet: of each dense head tower); `head_fc`: the FPN box head's FC width
    (RetinaNet has none and ignores it); `proposals`: FPN's test-time RPN proposals per image, RetinaNet's pre-NMS
    top-k candidates per level; `input_sizes`: the input short side (the long side keeps 800:1344, see
    `detnas.sizes.path_hw`). The paper's detector is 256 / 4 / 1024 / 1000 / 800.
    """

    fpn_widths: tuple[int, ...] = (256,)
    head_convs: tuple[int, ...] = (4,)
    head_fc: tuple[int, ...] = (1024,)
    proposals: tuple[int, ...] = (1000,)
    input_sizes: tuple[int, ...] = (800,)

    def validate(self, where: str) -> None:
        for name, values in self.items():
            if not values:
                raise _fail(where, f"detector.{name}", "[]", "give at least one value")
            if len(set(values)) != len(values) or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
                raise _fail(where, f"detector.{name}", list(values), "give distinct integers")
        for name, low in (("fpn_widths", 8), ("head_convs", 0), ("head_fc", 1), ("proposals", 1), ("input_sizes", 32)):
            bad = [v for v in getattr(self, name) if v < low]
            if bad:
                raise _fail(where, f"detector.{name}", bad, f"allowed values are integers >= {low}")
        odd = [v for v in self.input_sizes if v % BACKBONE_STRIDE]
        if odd:
            raise _fail(where, "detector.input_sizes", odd,
                        f"allowed values are multiples of the backbone stride {BACKBONE_STRIDE} (e.g. 480, 640, 800)")

    def items(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    def to_dict(self) -> dict[str, list[int]]:
        return {name: list(values) for name, values in self.items()}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> DetectorGenes:
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or set(data) - set(names):
            raise DetnasError(f"{source}: detector must be a mapping with keys among {names}")
        try:
            return cls(**{k: tuple(_as_int(v) for v in data[k]) for k in names if k in data})
        except (TypeError, ValueError):
            raise DetnasError(f"{source}: detector fields must be lists of integers, e.g. fpn_widths: [128, 256]") from None


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(value):
        raise ValueError(value)
    return int(value)


def middle_width(stage_width: int, multiplier: float) -> int:
    """A block's middle width at a multiple of its base C/2: the base itself at 1.0 (the paper's), else the
    nearest even channel count, so depthwise groups and the width table stay integral and splits even."""
    if multiplier == 1.0:
        return stage_width // 2
    return 2 * round(stage_width * multiplier / 4)


@dataclass(frozen=True)
class SearchSpace:
    """A ShuffleNetV2-style one-shot space: stem, four stages of choice blocks, classification head."""

    name: str
    stem_width: int
    stage_widths: tuple[int, ...]
    stage_depths: tuple[int, ...]
    head_width: int = 1024
    choices: tuple[int, ...] = (0, 1, 2, 3)
    description: str = field(default="", compare=False)
    width_multipliers: tuple[float, ...] = ()
    min_depths: tuple[int, ...] = ()
    detector: DetectorGenes | None = None

    def __post_init__(self) -> None:
        where = f"space '{self.name}'"
        if len(self.stage_widths) != len(self.stage_depths) or not self.stage_widths:
            raise DetnasError(
                f"{where}: stage_widths has {len(self.stage_widths)} entries but stage_depths has "
                f"{len(self.stage_depths)}; give one width and one depth per stage"
            )
        if any(d < 1 for d in self.stage_depths):
            raise DetnasError(f"{where}: stage_depths {list(self.stage_depths)} must all be >= 1")
        previous = self.stem_width
        for i, width in enumerate(self.stage_widths):
            if width % 2 or width <= previous:
                raise DetnasError(
                    f"{where}: stage_widths[{i}]={width} must be even and larger than the previous width "
                    f"{previous} (a stride-2 block maps Cin -> C - Cin channels)"
                )
            previous = width
        if self.stem_width < 1 or self.head_width < 1:
            raise DetnasError(f"{where}: stem_width and head_width must be positive")
        bad = [c for c in self.choices if c not in range(len(CHOICE_NAMES))]
        if bad or not self.choices or len(set(self.choices)) != len(self.choices):
            raise DetnasError(
                f"{where}: choices {list(self.choices)} must be distinct indices of {list(CHOICE_NAMES)}"
            )
        self._validate_elastic(where)

    def _validate_elastic(self, where: str) -> None:
        if self.width_multipliers:
            mults = self.width_multipliers
            if len(set(mults)) != len(mults) or any(m <= 0 for m in mults):
                raise _fail(where, "width_multipliers", list(mults), "give distinct positive multiples, e.g. [0.5, 1.0, 1.5]")
            for s, width in enumerate(self.stage_widths):
                for m in mults:
                    if middle_width(width, m) < 2:
                        raise _fail(where, "width_multipliers", m, f"stage {s + 1}'s middle width {width // 2} x {m} "
                                    "rounds to 0 channels; allowed multiples give at least 2 channels")
                if len({middle_width(width, m) for m in mults}) != len(mults):
                    raise _fail(where, "width_multipliers", list(mults), f"two of them round stage {s + 1}'s middle "
                                f"width {width // 2} to the same channel count; give multiples further apart")
        if self.min_depths:
            if len(self.min_depths) != len(self.stage_depths):
                raise _fail(where, "min_depths", list(self.min_depths),
                            f"give one minimum per stage ({len(self.stage_depths)} stages)")
            for s, (low, depth) in enumerate(zip(self.min_depths, self.stage_depths)):
                if not 1 <= low <= depth:
                    raise _fail(where, f"min_depths[{s}]", low, f"allowed values for stage {s + 1} are 1..{depth}")
        if self.detector is not None:
            self.detector.validate(where)

    @property
    def elastic(self) -> bool:
        """Whether the space has genes beyond the op choice (its archs carry widths, depths or detector genes)."""
        return bool(self.width_multipliers or self.min_depths or self.detector is not None)

    @property
    def width_choices(self) -> tuple[float, ...]:
        """The allowed width multiples: (1.0,) for a space without the width gene."""
        return self.width_multipliers or (1.0,)

    def stage_of_block(self) -> list[int]:
        return [s for s, depth in enumerate(self.stage_depths) for _ in range(depth)]

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_depths)

    def to_dict(self) -> dict[str, Any]:
        """The spec; the elastic genes only where set, so a paper space's dict (and digest) is what it always was."""
        data = asdict(self)
        for key in ("stage_widths", "stage_depths", "choices", "width_multipliers", "min_depths"):
            data[key] = list(data[key])
        for key in ("width_multipliers", "min_depths"):
            if not data[key]:
                del data[key]
        data.pop("detector")
        if self.detector is not None:
            data["detector"] = self.detector.to_dict()
        return data

    @property
    def digest(self) -> str:
        """Content hash: two spaces with the same name but other widths never share a cache entry."""
        payload = {k: v for k, v in self.to_dict().items() if k != "description"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "space") -> SearchSpace:
        if not isinstance(data, dict):
            raise DetnasError(f"{source}: expected a mapping with keys {sorted(_SPACE_KEYS)}")
        unknown = set(data) - _SPACE_KEYS
        missing = {"name", "stem_width", "stage_widths", "stage_depths"} - set(data)
        if unknown or missing:
            raise DetnasError(
                f"{source}: missing keys {sorted(missing)} / unknown keys {sorted(unknown)}; "
                f"allowed keys are {sorted(_SPACE_KEYS)}"
            )
        for key in ("choices", "width_multipliers", "min_depths"):
            if key in data and not data[key]:
                raise _fail(source, key, "[]", "give at least one value, or leave the key out")
        try:
            return cls(
                name=str(data["name"]),
                stem_width=int(data["stem_width"]),
                stage_widths=tuple(int(w) for w in data["stage_widths"]),
                stage_depths=tuple(int(d) for d in data["stage_depths"]),
                head_width=int(data.get("head_width", 1024)),
                choices=tuple(int(c) for c in data.get("choices", (0, 1, 2, 3))),
                description=str(data.get("description", "")),
                width_multipliers=tuple(float(m) for m in data.get("width_multipliers", ())),
                min_depths=tuple(int(d) for d in data.get("min_depths", ())),
                detector=DetectorGenes.from_dict(data["detector"], source) if "detector" in data else None,
            )
        except (TypeError, ValueError) as exc:
            raise DetnasError(f"{source}: fields must be integers or lists of integers ({exc})") from None
        except DetnasError as exc:
            raise DetnasError(f"{source}: {exc}") from None


#: every space by name: the paper's below, the user's from `register_space` or a space file
SPACES: Registry[SearchSpace] = Registry("search space", "--space", same=lambda a, b: a.digest == b.digest)


def register_space(space: SearchSpace) -> SearchSpace:
    """Add a space to the registry; re-registering identical content is a no-op, a clash is an error."""
    return SPACES.register(space.name)(space)


def list_spaces() -> list[SearchSpace]:
    return [SPACES.get(name) for name in SPACES]


def load_space_file(path: str | Path) -> SearchSpace:
    """Read a user space from JSON or YAML and register it."""
    from detnas.io import read_mapping_file

    return register_space(SearchSpace.from_dict(read_mapping_file(path, "space file"), source=str(path)))


def get_space(name_or_path: str) -> SearchSpace:
    """Look a space up by registered name, or load it from a .json/.yaml file."""
    if name_or_path in SPACES:
        return SPACES.get(name_or_path)
    if name_or_path.endswith((".json", ".yaml", ".yml")):
        return load_space_file(name_or_path)
    raise DetnasError(
        f"unknown search space '{name_or_path}'; known: {', '.join(sorted(SPACES))} "
        "(or pass a .json/.yaml space file)"
    )


register_space(SearchSpace("detnas-300m", 16, (64, 160, 320, 640), (4, 4, 8, 4), 1024,
                           description="DetNAS small space (about 300M FLOPs at 224)"))
register_space(SearchSpace("detnas-1.3g", 48, (96, 240, 480, 960), (8, 8, 16, 8), 1024,
                           description="DetNAS large space (about 1.3G FLOPs at 224)"))
register_space(SearchSpace("detnas-3.8g", 72, (172, 432, 864, 1728), (8, 8, 16, 8), 1728,
                           description="wider model family on the 1.3G depths (not searched in the paper)"))


#: the elastic twins: the paper's backbone with SPOS widths and OFA depths, and the detector's costly genes;
#: width 1.0, full depth and 256 / 4 / 1024 / 1000 / 800 is the paper's detector, so released archs stay reachable
ELASTIC_DETECTOR = DetectorGenes(fpn_widths=(128, 192, 256), head_convs=(1, 2, 3, 4), head_fc=(256, 512, 1024),
                                 proposals=(100, 300, 600, 1000), input_sizes=(480, 576, 640, 704, 800))
for _paper, _mins in (("detnas-300m", (2, 2, 4, 2)), ("detnas-1.3g", (4, 4, 8, 4)), ("detnas-3.8g", (4, 4, 8, 4))):
    _base = SPACES.get(_paper)
    register_space(SearchSpace(f"{_paper}-det", _base.stem_width, _base.stage_widths, _base.stage_depths,
                               _base.head_width, _base.choices,
                               description=f"elastic whole-detector twin of {_paper}: block widths, depths, FPN width, "
                                           "head, proposals, input size",
                               width_multipliers=(0.5, 0.75, 1.0, 1.25, 1.5), min_depths=_mins,
                               detector=ELASTIC_DETECTOR))


#: the demo's elastic space (`detnas demo`): the 300M backbone (op choices, as the paper's) and the paper's FPN
#: detector at 128 px with the genes that cost there: box-head convs (1, 2 or 4; the head's 3x3 convs on every RoI
#: are most of a path's multiply-adds), test-time proposals (10, 25 or 50) and the input size, stated at the 800-pixel
#: scale like every space's, so at the demo's 128 px base 640 / 800 / 960 run at 96 / 128 / 160 px. FPN width and FC
#: stay the paper's 256 / 1024, and block widths and depths are left out: the demo trains 200-360 iterations, too
#: few to share weights over them as well (measured: with FPN 64/128, FC 128/256 or widths 0.5/1.0 and a skippable
#: block per stage, the smoke plan's winners scored AP50 0.04-0.05 against 0.17 for the paper detector).
DEMO_DETECTOR = DetectorGenes(head_convs=(1, 2, 4), proposals=(5, 10, 25, 50, 100), input_sizes=(640, 800))
register_space(SearchSpace("detnas-300m-demo", 16, (64, 160, 320, 640), (4, 4, 8, 4), 1024,
                           description="the demo's elastic detector at 128 px: the 300M backbone, the paper's FPN "
                                       "detector with 1/2/4 box-head convs, 10/25/50 proposals, 96-160 px",
                           detector=DEMO_DETECTOR))
