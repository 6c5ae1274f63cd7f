"""`Arch`: one choice per block of a space. The value that travels the whole road; its hash keys every cache.

In an elastic space (`SearchSpace.elastic`) an arch also carries each block's middle-width multiple, each stage's
depth (the leading blocks that run; the others are skipped) and the detector's genes. Its compact notation adds
them only there: `2x0.75,1x1,-,-|...;fpn=128,convs=2,fc=512,proposals=300,size=640` (`-`: a skipped block), so a
paper arch's notation and hash are what they always were.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from detnas.errors import DetnasError
from detnas.registry import Registry
from detnas.space import DetectorGenes, SearchSpace, get_space, register_space

_BUILTIN_SPACES = ("detnas-300m", "detnas-1.3g", "detnas-3.8g", "detnas-300m-det", "detnas-1.3g-det", "detnas-3.8g-det",
                   "detnas-300m-demo")


@dataclass(frozen=True)
class DetectorPath:
    """One value of each detector gene (see `DetectorGenes`); the paper's detector is `PAPER_DETECTOR`."""

    fpn_width: int
    head_convs: int
    head_fc: int
    proposals: int
    input_size: int

    def options(self, genes: DetectorGenes) -> list[tuple[str, int, tuple[int, ...]]]:
        """(notation key, value, allowed values) per gene, in gene order."""
        return [(key, value, allowed) for key, value, (_, allowed) in zip(DETECTOR_KEYS, astuple(self), genes.items())]


#: notation keys of the detector genes, in `DetectorPath` field order
DETECTOR_KEYS = ("fpn", "convs", "fc", "proposals", "size")
PAPER_DETECTOR = DetectorPath(256, 4, 1024, 1000, 800)


def _default(allowed: tuple, paper: object) -> object:
    """The paper's value where the space allows it, else the largest allowed (an arch given without a gene)."""
    return paper if paper in allowed else max(allowed)


@dataclass(frozen=True)
class Arch:
    """A validated architecture: a space and one allowed choice index per choice block.

    Elastic spaces add `widths` (one middle-width multiple per block), `depths` (blocks that run per stage) and
    `detector`; left out, each takes the paper's value (width 1.0, full depth, `PAPER_DETECTOR`) where the space
    allows it. A gene the space does not have must stay empty. Blocks a stage's depth skips hold the space's
    first choice and default width, so one network has one `Arch` (and one hash).
    """

    space: SearchSpace
    choices: tuple[int, ...]
    widths: tuple[float, ...] = ()
    depths: tuple[int, ...] = ()
    detector: DetectorPath | None = None

    def __post_init__(self) -> None:
        space = self.space
        if len(self.choices) != space.num_blocks:
            raise DetnasError(
                f"arch has {len(self.choices)} choices but space '{space.name}' has "
                f"{space.num_blocks} choice blocks (depths {list(space.stage_depths)})"
            )
        for i, c in enumerate(self.choices):
            if c not in space.choices:
                raise DetnasError(
                    f"arch choice #{i} is {c}; space '{space.name}' allows {list(space.choices)}"
                )
        for name, has, value in (("widths", space.width_multipliers, self.widths), ("depths", space.min_depths, self.depths),
                                 ("detector", space.detector is not None, self.detector)):
            if not has and value:
                raise DetnasError(f"arch {name} {value}: space '{space.name}' has no {name} gene; leave it out")
        if space.width_multipliers:
            widths = self.widths or (_default(space.width_multipliers, 1.0),) * space.num_blocks
            bad = [(i, w) for i, w in enumerate(widths) if w not in space.width_multipliers]
            if len(widths) != space.num_blocks or bad:
                raise DetnasError(f"arch widths {list(widths)}: give one of {list(space.width_multipliers)} per block "
                                  f"({space.num_blocks} blocks)")
            object.__setattr__(self, "widths", tuple(float(w) for w in widths))
        if space.min_depths:
            depths = self.depths or space.stage_depths
            if len(depths) != len(space.stage_depths) or any(
                    not low <= d <= top for d, low, top in zip(depths, space.min_depths, space.stage_depths)):
                allowed = ", ".join(f"{low}..{top}" for low, top in zip(space.min_depths, space.stage_depths))
                raise DetnasError(f"arch depths {list(depths)}: space '{space.name}' allows per stage {allowed}")
            object.__setattr__(self, "depths", tuple(depths))
            self._canonical_skipped()
        if space.detector is not None:
            det = self.detector or DetectorPath(*(_default(allowed, paper) for (_, allowed), paper
                                                  in zip(space.detector.items(), astuple(PAPER_DETECTOR))))
            for key, value, allowed in det.options(space.detector):
                if value not in allowed:
                    raise DetnasError(f"arch detector gene {key}={value}: space '{space.name}' allows {list(allowed)}")
            object.__setattr__(self, "detector", det)

    def _canonical_skipped(self) -> None:
        choices, widths = list(self.choices), list(self.widths)
        for i in self.skipped_blocks():
            choices[i] = self.space.choices[0]
            if widths:
                widths[i] = _default(self.space.width_multipliers, 1.0)
        object.__setattr__(self, "choices", tuple(choices))
        object.__setattr__(self, "widths", tuple(widths))

    def skipped_blocks(self) -> list[int]:
        """Indices of the blocks this arch skips (identity): a stage's blocks past its depth."""
        if not self.depths:
            return []
        out, start = [], 0
        for depth, used in zip(self.space.stage_depths, self.depths):
            out.extend(range(start + used, start + depth))
            start += depth
        return out

    def block_widths(self) -> tuple[float, ...]:
        """Every block's middle-width multiple (1.0 throughout in a space without the width gene)."""
        return self.widths or (1.0,) * self.space.num_blocks

    @property
    def hash(self) -> str:
        """Stable short key over the space's content and the choices (and, in an elastic space, every gene)."""
        genes = self.compact() if self.space.elastic else ",".join(map(str, self.choices))
        return hashlib.sha256(f"{self.space.digest}:{genes}".encode()).hexdigest()[:12]

    def genes(self) -> tuple[float, ...]:
        """Every gene in the order of `gene_options(space)`: what evolution mutates and crosses."""
        det = astuple(self.detector) if self.detector is not None else ()
        return (*self.choices, *self.widths, *self.depths, *det)

    @classmethod
    def from_genes(cls, space: SearchSpace, genes: tuple) -> Arch:
        n, stages = space.num_blocks, len(space.stage_depths)
        widths = genes[n:2 * n] if space.width_multipliers else ()
        rest = genes[n + len(widths):]
        depths = rest[:stages] if space.min_depths else ()
        det = rest[len(depths):]
        return cls(space, tuple(genes[:n]), tuple(widths), tuple(depths), DetectorPath(*det) if det else None)

    def per_stage(self) -> list[tuple[int, ...]]:
        out, start = [], 0
        for depth in self.space.stage_depths:
            out.append(self.choices[start:start + depth])
            start += depth
        return out

    def compact(self) -> str:
        """The paper's notation, stages separated by '|': '2,1,2,0|2,1,1,2|...'; elastic genes as the module says."""
        if not self.space.elastic:
            return "|".join(",".join(map(str, stage)) for stage in self.per_stage())
        skipped, widths = set(self.skipped_blocks()), self.block_widths()
        tokens = ["-" if i in skipped else f"{c}x{widths[i]:g}" if self.space.width_multipliers else str(c)
                  for i, c in enumerate(self.choices)]
        stages, start = [], 0
        for depth in self.space.stage_depths:
            stages.append(",".join(tokens[start:start + depth]))
            start += depth
        text = "|".join(stages)
        if self.detector is not None:
            text += ";" + ",".join(f"{key}={value}" for key, value, _ in self.detector.options(self.space.detector))
        return text

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
            arch = parse_arch(space, data["choices"])
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


def parse_arch(space: SearchSpace, value: Any) -> Arch:
    """An arch of `space` from its choices (any form `parse_choices` takes) or, in an elastic space, its compact
    notation (`Arch.compact`); a path written for another space is refused with the form this one expects."""
    if not space.elastic or not isinstance(value, str):
        return Arch(space, parse_choices(value))
    blocks, _, det_text = value.partition(";")
    tokens = [t.strip() for t in blocks.replace("|", ",").split(",") if t.strip()]
    example = sample_arch(space, 0).compact()
    if len(tokens) != space.num_blocks or (bool(det_text) != (space.detector is not None)):
        raise DetnasError(f"path '{value}' is not one of space '{space.name}' ({space.num_blocks} blocks"
                          f"{', then ;detector genes' if space.detector else ''}), e.g. '{example}'")
    try:
        choices, widths, skipped = [], [], []
        for token in tokens:
            skipped.append(token == "-")
            op, _, width = ("0" if token == "-" else token).partition("x")
            choices.append(int(op))
            widths.append(float(width) if width else 1.0)
        depths, start = [], 0
        for depth in space.stage_depths:
            stage = skipped[start:start + depth]
            used = stage.index(True) if True in stage else depth
            if any(not s for s in stage[used:]):
                raise DetnasError(f"path '{value}': a stage skips only its trailing blocks ('-' after every run block)")
            depths.append(used)
            start += depth
        detector = None
        if det_text:
            pairs = dict(item.split("=", 1) for item in det_text.split(","))
            if set(pairs) != set(DETECTOR_KEYS):
                raise ValueError(pairs)
            detector = DetectorPath(*(int(pairs[key]) for key in DETECTOR_KEYS))
    except (TypeError, ValueError):
        raise DetnasError(f"path '{value}' is not one of space '{space.name}'; write it as e.g. '{example}'") from None
    arch = Arch(space, tuple(choices), tuple(widths) if space.width_multipliers else (),
                tuple(depths) if space.min_depths else (), detector)
    if any(skipped) and not space.min_depths:
        raise DetnasError(f"path '{value}': space '{space.name}' has no depth gene; no block may be '-'")
    return arch


def gene_options(space: SearchSpace) -> list[tuple]:
    """The allowed values of every gene, in `Arch.genes` order: ops per block, then (elastic spaces) the width
    multiple per block, the depth per stage and the detector genes."""
    options: list[tuple] = [space.choices] * space.num_blocks
    if space.width_multipliers:
        options += [space.width_multipliers] * space.num_blocks
    if space.min_depths:
        options += [tuple(range(low, top + 1)) for low, top in zip(space.min_depths, space.stage_depths)]
    if space.detector is not None:
        options += [allowed for _, allowed in space.detector.items()]
    return options


def sample_arch(space: SearchSpace, rng: random.Random | int) -> Arch:
    """Uniform random architecture (every gene uniform and independent); an int seeds a fresh generator.

    The op choices are drawn first, so a paper space's archs for a seed are what they always were."""
    rng = random.Random(rng) if isinstance(rng, int) else rng
    if not space.elastic:
        return Arch(space, tuple(rng.choice(space.choices) for _ in range(space.num_blocks)))
    return Arch.from_genes(space, tuple(rng.choice(allowed) for allowed in gene_options(space)))


def extreme_arch(space: SearchSpace, choices: tuple[int, ...], widest: bool) -> Arch:
    """The widest (or narrowest) path over `choices`: every width, depth and detector gene at its largest (or
    smallest) value. The sandwich rule trains both every step."""
    pick = max if widest else min
    genes = list(choices) + [pick(allowed) for allowed in gene_options(space)[len(choices):]]
    return Arch.from_genes(space, tuple(genes))


#: released backbones by name (`--arch NAME`): DetNAS' six below, a user's with `RELEASED_ARCHS.register(name)(arch)`
RELEASED_ARCHS: Registry[Arch] = Registry("released arch", "--arch", same=lambda a, b: a.hash == b.hash)
for _name, _space, _choices in (
    ("COCO-FPN-300M", "detnas-300m", "2,1,2,0|2,1,1,2|3,3,1,3,0,0,3,1|3,1,3,2"),
    ("COCO-RetinaNet-300M", "detnas-300m", "2,3,1,1|3,2,1,3|3,1,1,1,3,3,2,0|3,3,3,3"),
    ("VOC-FPN-300M", "detnas-300m", "2,1,0,3|1,3,0,3|2,0,1,1,3,3,3,3|3,3,3,1"),
    ("VOC-RetinaNet-300M", "detnas-300m", "1,3,0,0|2,3,3,3|2,3,3,3,3,2,2,0|2,3,1,1"),
    ("COCO-FPN-1.3G", "detnas-1.3g", "0,0,3,1,2,1,0,2|0,3,1,2,3,3,2,0|2,1,1,3,2,0,2,2,2,1,3,1,0,3,3,3|1,3,3,3,3,3,3,3"),
    ("COCO-FPN-3.8G", "detnas-3.8g", "0,0,3,1,2,1,0,2|0,3,1,2,3,3,2,0|2,1,1,3,2,0,2,2,2,1,3,1,0,3,3,3|1,3,3,3,3,3,3,3"),
):
    RELEASED_ARCHS.register(_name)(Arch(get_space(_space), parse_choices(_choices)))


def released_archs() -> dict[str, Arch]:
    """The released backbones by name: DetNAS' six, then any a user registered."""
    return {name: RELEASED_ARCHS.get(name) for name in RELEASED_ARCHS}


def paper_path(arch: Arch, space: SearchSpace) -> Arch:
    """A paper arch's path in an elastic twin of its space (width 1.0, full depth, the paper's detector)."""
    return Arch(space, arch.choices)


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
