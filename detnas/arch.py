"""`Arch`: one choice per block of a space. The value that travels the whole road; its hash keys every cache."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError
from detnas.space import SearchSpace, get_space, register_space

_BUILTIN_SPACES = ("detnas-300m", "detnas-1.3g", "detnas-3.8g")


@dataclass(frozen=True)
class Arch:
    """A validated architecture: a space and one allowed choice index per choice block."""

    space: SearchSpace
    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.choices) != self.space.num_blocks:
            raise DetnasError(
                f"arch has {len(self.choices)} choices but space '{self.space.name}' has "
                f"{self.space.num_blocks} choice blocks (depths {list(self.space.stage_depths)})"
            )
        for i, c in enumerate(self.choices):
            if c not in self.space.choices:
                raise DetnasError(
                    f"arch choice #{i} is {c}; space '{self.space.name}' allows {list(self.space.choices)}"
                )

    @property
    def hash(self) -> str:
        """Stable short key over the space's content and the choices."""
        text = f"{self.space.digest}:{','.join(map(str, self.choices))}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def per_stage(self) -> list[tuple[int, ...]]:
        out, start = [], 0
        for depth in self.space.stage_depths:
            out.append(self.choices[start:start + depth])
            start += depth
        return out

    def compact(self) -> str:
        """The paper's notation, stages separated by '|': '2,1,2,0|2,1,1,2|...'."""
        return "|".join(",".join(map(str, stage)) for stage in self.per_stage())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"space": self.space.name, "choices": self.compact(), "hash": self.hash}
        if self.space.name not in _BUILTIN_SPACES:
            data["space_spec"] = self.space.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> Arch:
        if not isinstance(data, dict) or "space" not in data or "choices" not in data:
            raise DetnasError(f"{source}: an arch is a JSON object with keys 'space' and 'choices'")
        if "space_spec" in data:
            space = register_space(SearchSpace.from_dict(data["space_spec"], source=f"{source}: space_spec"))
        else:
            space = get_space(str(data["space"]))
        try:
            arch = cls(space, parse_choices(data["choices"]))
        except DetnasError as exc:
            raise DetnasError(f"{source}: {exc}") from None
        if "hash" in data and data["hash"] != arch.hash:
            raise DetnasError(f"{source}: stored hash {data['hash']} does not match the choices ({arch.hash})")
        return arch

    @classmethod
    def from_json(cls, text: str, source: str = "arch") -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DetnasError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
        return cls.from_dict(data, source)


def parse_choices(value: Any) -> tuple[int, ...]:
    """Accept a flat list, a list of stage lists, or the compact '2,1|0,3' string."""
    try:
        if isinstance(value, str):
            return tuple(int(c) for c in value.replace("|", ",").split(",") if c.strip())
        flat: list[int] = []
        for item in value:
            if isinstance(item, (list, tuple)):
                flat.extend(int(c) for c in item)
            elif isinstance(item, bool) or not isinstance(item, int):
                raise ValueError(item)
            else:
                flat.append(item)
        return tuple(flat)
    except (TypeError, ValueError):
        raise DetnasError(f"choices {value!r} must be integers, e.g. '2,1,2,0|2,1,1,2|...'") from None


def sample_arch(space: SearchSpace, rng: random.Random | int) -> Arch:
    """Uniform random architecture; an int seeds a fresh generator."""
    rng = random.Random(rng) if isinstance(rng, int) else rng
    return Arch(space, tuple(rng.choice(space.choices) for _ in range(space.num_blocks)))


_RELEASED: dict[str, tuple[str, str]] = {
    "COCO-FPN-300M": ("detnas-300m", "2,1,2,0|2,1,1,2|3,3,1,3,0,0,3,1|3,1,3,2"),
    "COCO-RetinaNet-300M": ("detnas-300m", "2,3,1,1|3,2,1,3|3,1,1,1,3,3,2,0|3,3,3,3"),
    "VOC-FPN-300M": ("detnas-300m", "2,1,0,3|1,3,0,3|2,0,1,1,3,3,3,3|3,3,3,1"),
    "VOC-RetinaNet-300M": ("detnas-300m", "1,3,0,0|2,3,3,3|2,3,3,3,3,2,2,0|2,3,1,1"),
    "COCO-FPN-1.3G": ("detnas-1.3g", "0,0,3,1,2,1,0,2|0,3,1,2,3,3,2,0|2,1,1,3,2,0,2,2,2,1,3,1,0,3,3,3|1,3,3,3,3,3,3,3"),
    "COCO-FPN-3.8G": ("detnas-3.8g", "0,0,3,1,2,1,0,2|0,3,1,2,3,3,2,0|2,1,1,3,2,0,2,2,2,1,3,1,0,3,3,3|1,3,3,3,3,3,3,3"),
}


def released_archs() -> dict[str, Arch]:
    """The six released DetNAS backbones by name."""
    return {name: Arch(get_space(space), parse_choices(choices)) for name, (space, choices) in _RELEASED.items()}


def resolve_arch(name_or_file: str) -> Arch:
    """A released preset name, a path to an arch JSON file, or an inline JSON object."""
    presets = released_archs()
    if name_or_file in presets:
        return presets[name_or_file]
    if name_or_file.lstrip().startswith("{"):
        return Arch.from_json(name_or_file, source="inline arch")
    path = Path(name_or_file)
    if not path.is_file():
        raise DetnasError(
            f"arch '{name_or_file}' is neither a released name ({', '.join(presets)}) nor an existing JSON file"
        )
    return Arch.from_json(path.read_text(), source=str(path))
