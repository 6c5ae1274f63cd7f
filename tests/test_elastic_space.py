"""Elastic whole-detector spaces: genes in the spec, `Arch` notation and hashes, bad input, paper spaces unchanged."""

import json

import pytest

from detnas.arch import PAPER_DETECTOR, Arch, extreme_arch, gene_options, paper_path, parse_arch, released_archs, sample_arch
from detnas.cli import main
from detnas.detection.cost import detector_macs
from detnas.errors import DetnasError
from detnas.space import SearchSpace, get_space, middle_width

# what the paper spaces and released archs hashed to before elastic genes existed (main at ee9575c)
PAPER_DIGESTS = {"detnas-300m": "c80f4986654c", "detnas-1.3g": "b1af41069a02", "detnas-3.8g": "d4fbd65449a3"}
RELEASED_HASHES = {"COCO-FPN-300M": "541c19dde10e", "COCO-RetinaNet-300M": "b0abefb55009", "VOC-FPN-300M": "74b89a3ebdfe",
                   "VOC-RetinaNet-300M": "788c28e166d1", "COCO-FPN-1.3G": "1603041e2279", "COCO-FPN-3.8G": "aa166b29eabe"}
DEMO_MACS_SPAN = 8  # uniform paths of detnas-300m-demo at the demo's 128 px: max / min whole-detector MACs (12.3x)
TINY = {"name": "tiny-elastic", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [2, 3]}


def test_paper_spaces_and_archs_are_unchanged():
    for name, digest in PAPER_DIGESTS.items():
        space = get_space(name)
        assert space.digest == digest and not space.elastic
        assert set(space.to_dict()) == {"name", "stem_width", "stage_widths", "stage_depths", "head_width", "choices",
                                        "description"}
    for name, arch in released_archs().items():
        assert arch.hash == RELEASED_HASHES[name]
        assert (arch.widths, arch.depths, arch.detector) == ((), (), None)
        assert "x" not in arch.compact() and ";" not in arch.compact()
    # seeded sampling in a paper space draws what it always drew (the old code, run at ee9575c)
    assert sample_arch(get_space("detnas-300m"), 3).compact() == "1,1,2,3|0,0,3,2|1,1,3,3,3,1,1,1|3,0,0,1"


def test_elastic_notation_round_trips_and_hashes_every_gene():
    space = get_space("detnas-300m-det")
    archs = [sample_arch(space, seed) for seed in range(50)]
    assert len({a.hash for a in archs}) == 50
    for arch in archs:
        assert Arch.from_json(arch.to_json()) == arch
        assert parse_arch(space, arch.compact()) == arch
        assert Arch.from_genes(space, arch.genes()) == arch
        assert len(arch.genes()) == len(gene_options(space))
    arch = archs[0]
    text = arch.compact()
    assert text.count("|") == 3 and ";fpn=" in text and "size=" in text
    # skipped blocks are canonical: the op written for them does not make another arch
    skipped = arch.skipped_blocks()
    assert skipped and all(text.split(";")[0].replace("|", ",").split(",")[i] == "-" for i in skipped)
    other = list(arch.choices)
    other[skipped[0]] = 3
    assert Arch(space, tuple(other), arch.widths, arch.depths, arch.detector) == arch
    # another gene changes the hash
    det = arch.detector
    moved = Arch(space, arch.choices, arch.widths, arch.depths,
                 type(det)(det.fpn_width, det.head_convs, det.head_fc, det.proposals, 800 if det.input_size != 800 else 480))
    assert moved.hash != arch.hash


@pytest.mark.slow  # MACs of 1,500 sampled detectors over the three twins: 30 s on 2 loaded cores
def test_twins_reach_the_paper_detector_and_span_4x():
    for paper, twin in (("detnas-300m", "detnas-300m-det"), ("detnas-1.3g", "detnas-1.3g-det"),
                        ("detnas-3.8g", "detnas-3.8g-det")):
        space = get_space(twin)
        assert (space.stem_width, space.stage_widths, space.stage_depths) == (
            get_space(paper).stem_width, get_space(paper).stage_widths, get_space(paper).stage_depths)
        released = next(a for a in released_archs().values() if a.space.name == paper)
        path = paper_path(released, space)
        assert path.choices == released.choices and set(path.block_widths()) == {1.0}
        assert path.depths == space.stage_depths and path.detector == PAPER_DETECTOR
        assert path.compact().startswith(",".join(f"{c}x1" for c in released.per_stage()[0]))
        # the paper path's detector costs exactly what the paper detector costs
        assert detector_macs(path, "fpn", 81).total == detector_macs(released, "fpn", 81).total
        macs = [detector_macs(sample_arch(space, seed), "fpn", 81, base=(800, 1344)).total for seed in range(500)]
        assert max(macs) / min(macs) >= 4, (twin, max(macs) / min(macs))
    narrow = extreme_arch(get_space("detnas-300m-det"), (0,) * 20, widest=False)
    active = [w for i, w in enumerate(narrow.widths) if i not in narrow.skipped_blocks()]
    assert narrow.depths == (2, 2, 4, 2) and set(active) == {0.5} and narrow.detector.proposals == 100


def test_middle_width_rounding():
    assert [middle_width(64, m) for m in (0.5, 0.75, 1.0, 1.25, 1.5)] == [16, 24, 32, 40, 48]
    assert middle_width(172, 1.0) == 86  # the base is kept exactly (3.8G's stage 1)
    assert all(middle_width(w, m) % 2 == 0 and middle_width(w, m) >= 2
               for w in (172, 432, 864, 1728) for m in (0.5, 0.75, 1.25, 1.5))


@pytest.mark.parametrize("extra, fragment", [
    ({"width_multipliers": []}, "width_multipliers [] is not allowed; give at least one value"),
    ({"choices": []}, "choices [] is not allowed"),
    ({"width_multipliers": [0.05, 1.0]}, "rounds to 0 channels"),
    ({"width_multipliers": [1.0, 1.01]}, "to the same channel count"),
    ({"min_depths": [1, 4]}, "min_depths[1] 4 is not allowed; allowed values for stage 2 are 1..3"),
    ({"min_depths": [1]}, "give one minimum per stage"),
    ({"detector": {"input_sizes": [480, 500]}}, "detector.input_sizes [500] is not allowed; allowed values are multiples"),
    ({"detector": {"fpn_widths": []}}, "detector.fpn_widths [] is not allowed"),
    ({"detector": {"head_convs": [1, 1]}}, "distinct integers"),
    ({"detector": {"proposal": [1]}}, "keys among"),
])
def test_bad_elastic_space(extra, fragment):
    with pytest.raises(DetnasError) as info:
        SearchSpace.from_dict({**TINY, **extra}, source="space.json")
    assert fragment in str(info.value) and "space.json" in str(info.value) and "\n" not in str(info.value)


def test_elastic_user_space_file_and_cli_refusals(tmp_path, capsys):
    spec = {**TINY, "name": "tiny-elastic-ok", "width_multipliers": [0.5, 1.0], "min_depths": [1, 2],
            "detector": {"fpn_widths": [32, 64], "input_sizes": [320, 640]}}
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    assert main(["arch", "sample", "--space", str(path), "--seed", "1"]) == 0
    arch = Arch.from_json(capsys.readouterr().out)
    assert arch.space.name == "tiny-elastic-ok" and arch.detector.head_convs == 4  # a fixed gene keeps its value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "name": "bad", "min_depths": [3, 1]}))
    assert main(["arch", "sample", "--space", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "min_depths[0] 3" in err and "1..2" in err and "Traceback" not in err and len(err.splitlines()) == 1
    # a path written for another space is refused with the form this space expects
    other = tmp_path / "other.json"
    paper = released_archs()["COCO-FPN-300M"]
    other.write_text(json.dumps({"space": "detnas-1.3g-det", "choices": paper_path(paper, get_space("detnas-300m-det"))
                                 .compact()}))
    assert main(["arch", "show", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not one of space 'detnas-1.3g-det'" in err and "e.g." in err
    with pytest.raises(DetnasError, match="space 'detnas-300m' has no widths gene"):
        Arch(get_space("detnas-300m"), paper.choices, widths=(1.0,) * 20)


def test_evolution_operators_move_every_gene_and_keep_paper_draws():
    import random

    from detnas.search.operators import crossover, mutate

    paper = get_space("detnas-300m")
    a, b = sample_arch(paper, 1), sample_arch(paper, 2)
    rng = random.Random(5)  # the old operators' draws, written out: same calls, same order
    expected = tuple(rng.choice(paper.choices) if rng.random() < 0.3 else c for c in a.choices)
    assert mutate(a, random.Random(5), 0.3).choices == expected
    rng = random.Random(6)
    assert crossover(a, b, random.Random(6)).choices == tuple(x if rng.random() < 0.5 else y
                                                             for x, y in zip(a.choices, b.choices))
    space = get_space("detnas-300m-det")
    parent = sample_arch(space, 1)
    children = [mutate(parent, random.Random(s), 0.5) for s in range(20)]
    assert any(c.detector != parent.detector for c in children) and any(c.depths != parent.depths for c in children)
    assert any(c.widths != parent.widths for c in children)
    mixed = [crossover(parent, sample_arch(space, 2), random.Random(s)) for s in range(20)]
    assert any(m.detector not in (parent.detector, sample_arch(space, 2).detector) for m in mixed) or \
        len({m.detector for m in mixed}) > 1


def test_the_demo_space_fits_128_px_cpu_work():
    """`detnas-300m-demo` (the main job's space): the 300M backbone, its input genes at 96 and 128 px when the paper
    detector runs at the demo's 128 px, every size a multiple of the stride, and uniform paths spanning a wide range
    of whole-detector MACs there (the measured latency span of the demo's front is tested in test_main_job)."""
    from detnas.sizes import path_hw

    space = get_space("detnas-300m-demo")
    paper = get_space("detnas-300m")
    assert space.elastic and (space.stem_width, space.stage_widths, space.stage_depths) == (
        paper.stem_width, paper.stage_widths, paper.stage_depths)
    assert sorted(path_hw(s, (128, 128)) for s in space.detector.input_sizes) == [(96, 96), (128, 128)]
    macs = [detector_macs(sample_arch(space, seed), "fpn", 5, base=(128, 128)).total for seed in range(300)]
    assert max(macs) / min(macs) >= DEMO_MACS_SPAN, max(macs) / min(macs)
    narrow, wide = (detector_macs(extreme_arch(space, (0,) * 20, w), "fpn", 5, base=(128, 128)).total for w in (False, True))
    assert wide / narrow >= DEMO_MACS_SPAN
    assert Arch.from_json(sample_arch(space, 0).to_json()).space is space  # a built-in: no spec in its arch files
    assert "space_spec" not in sample_arch(space, 0).to_dict()


def test_the_demo_compares_with_the_released_arch_on_its_paper_path():
    """The demo searches the elastic `detnas-300m-demo`; its report's released row is COCO-FPN-300M's ops on the paper
    detector's path there (the widest proposals the space allows), and a space of another body has none."""
    from detnas.workflows.main_job import _released_for

    released = released_archs()
    name, arch = _released_for("fpn", get_space("detnas-300m-demo"), released)
    assert name == "COCO-FPN-300M" and arch.space.name == "detnas-300m-demo"
    assert arch.choices == released[name].choices and (arch.detector.head_convs, arch.detector.proposals) == (4, 100)
    assert _released_for("fpn", get_space("detnas-300m"), released) == (name, released[name])
    assert _released_for("fpn", get_space("detnas-1.3g-det"), released)[1].space.name == "detnas-1.3g-det"
    assert _released_for("retinanet", get_space("detnas-3.8g"), released) == ("", None)
