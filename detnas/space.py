"""Search spaces as data: a small declarative spec, looked up by name through a registry.

A space fixes the stem width, the width and depth of each stage, the classification head width and the
candidate ops every choice block may pick. Users define new spaces in a JSON or YAML file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError

#: choice index -> op name, fixed by DetNAS (spec section 2).
CHOICE_NAMES: tuple[str, ...] = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception")
_SPACE_KEYS = {"name", "stem_width", "stage_widths", "stage_depths", "head_width", "choices", "description"}


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

    @property
    def num_blocks(self) -> int:
        return sum(self.stage_depths)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("stage_widths", "stage_depths", "choices"):
            data[key] = list(data[key])
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
        try:
            return cls(
                name=str(data["name"]),
                stem_width=int(data["stem_width"]),
                stage_widths=tuple(int(w) for w in data["stage_widths"]),
                stage_depths=tuple(int(d) for d in data["stage_depths"]),
                head_width=int(data.get("head_width", 1024)),
                choices=tuple(int(c) for c in data.get("choices", (0, 1, 2, 3))),
                description=str(data.get("description", "")),
            )
        except (TypeError, ValueError) as exc:
            raise DetnasError(f"{source}: fields must be integers or lists of integers ({exc})") from None


_REGISTRY: dict[str, SearchSpace] = {}


def register_space(space: SearchSpace) -> SearchSpace:
    """Add a space to the registry; re-registering identical content is a no-op, a clash is an error."""
    known = _REGISTRY.get(space.name)
    if known is not None and known.digest != space.digest:
        raise DetnasError(f"space '{space.name}' is already registered with other widths; rename your space")
    _REGISTRY[space.name] = space
    return space


def list_spaces() -> list[SearchSpace]:
    return list(_REGISTRY.values())


def load_space_file(path: str | Path) -> SearchSpace:
    """Read a user space from JSON or YAML and register it."""
    from detnas.io import read_mapping_file

    return register_space(SearchSpace.from_dict(read_mapping_file(path, "space file"), source=str(path)))


def get_space(name_or_path: str) -> SearchSpace:
    """Look a space up by registered name, or load it from a .json/.yaml file."""
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path]
    if name_or_path.endswith((".json", ".yaml", ".yml")):
        return load_space_file(name_or_path)
    raise DetnasError(
        f"unknown search space '{name_or_path}'; known: {', '.join(sorted(_REGISTRY))} "
        "(or pass a .json/.yaml space file)"
    )


register_space(SearchSpace("detnas-300m", 16, (64, 160, 320, 640), (4, 4, 8, 4), 1024,
                           description="DetNAS small space (about 300M FLOPs at 224)"))
register_space(SearchSpace("detnas-1.3g", 48, (96, 240, 480, 960), (8, 8, 16, 8), 1024,
                           description="DetNAS large space (about 1.3G FLOPs at 224)"))
register_space(SearchSpace("detnas-3.8g", 72, (172, 432, 864, 1728), (8, 8, 16, 8), 1728,
                           description="wider model family on the 1.3G depths (not searched in the paper)"))
