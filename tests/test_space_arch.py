import json

import pytest

from detnas.arch import Arch, parse_choices, released_archs, resolve_arch, sample_arch
from detnas.errors import DetnasError
from detnas.space import SearchSpace, get_space, load_space_file


def test_builtin_spaces_match_spec():
    small, large = get_space("detnas-300m"), get_space("detnas-1.3g")
    assert (small.stem_width, small.stage_widths, small.stage_depths, small.num_blocks) == (16, (64, 160, 320, 640), (4, 4, 8, 4), 20)
    assert (large.stem_width, large.stage_widths, large.stage_depths, large.num_blocks) == (48, (96, 240, 480, 960), (8, 8, 16, 8), 40)
    assert get_space("detnas-3.8g").stage_widths == (172, 432, 864, 1728)


def test_json_round_trip_and_stable_hash():
    for arch in released_archs().values():
        again = Arch.from_json(arch.to_json())
        assert again == arch and again.hash == arch.hash
    a = resolve_arch("COCO-FPN-300M")
    assert a.compact() == "2,1,2,0|2,1,1,2|3,3,1,3,0,0,3,1|3,1,3,2"
    assert a.hash == Arch(get_space("detnas-300m"), parse_choices(a.compact())).hash
    assert len({x.hash for x in released_archs().values()}) == 6


def test_sampling_is_seeded():
    space = get_space("detnas-300m")
    assert sample_arch(space, 7) == sample_arch(space, 7)
    assert len({sample_arch(space, s).hash for s in range(20)}) == 20


def test_user_space_file(tmp_path):
    spec = {"name": "tiny-test", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [1, 2], "choices": [0, 3]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(spec))
    space = load_space_file(path)
    arch = sample_arch(space, 0)
    assert set(arch.choices) <= {0, 3} and len(arch.choices) == 3
    assert Arch.from_json(arch.to_json()) == arch  # custom spaces travel with the arch
    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text("name: tiny-test\nstem_width: 8\nstage_widths: [16, 32]\nstage_depths: [1, 2]\nchoices: [0, 3]\n")
    assert get_space(str(yaml_path)) == space


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"space": "detnas-300m", "choices": [1, 2', "malformed JSON"),
        ('{"space": "detnas-300m", "choices": "1,2,3"}', "has 3 choices"),
        ('{"space": "detnas-300m", "choices": "' + ",".join(["7"] * 20) + '"}', "allows [0, 1, 2, 3]"),
        ('{"space": "no-such-space", "choices": "1"}', "unknown search space"),
        ('{"choices": "1"}', "keys 'space' and 'choices'"),
        ('{"space": "detnas-300m", "choices": "a,b"}', "must be integers"),
    ],
)
def test_bad_arch_json(text, fragment):
    with pytest.raises(DetnasError, match=None) as info:
        Arch.from_json(text, source="x.json")
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"name": "s", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [1]}, "one width and one depth"),
        ({"name": "s", "stem_width": 8, "stage_widths": [16, 15], "stage_depths": [1, 1]}, "must be even"),
        ({"name": "s", "stem_width": 8, "stage_widths": [16], "stage_depths": [1], "choices": [5]}, "distinct indices"),
        ({"name": "s", "stem_width": 8, "stage_widths": [16]}, "missing keys"),
        ({"name": "s", "stem_width": "x", "stage_widths": [16], "stage_depths": [1]}, "integers"),
    ],
)
def test_bad_space(spec, fragment):
    with pytest.raises(DetnasError) as info:
        SearchSpace.from_dict(spec, source="space.json")
    assert fragment in str(info.value)


@pytest.mark.parametrize("text, where, problem", [
    ("name: tiny\nstage_widths: [16, 32\nchoices: [0, 3]\n", "at line 3 column 8",
     "expected ',' or ']', but got ':' (while parsing a flow sequence)"),
    ("name: tiny\n stem_width: 8\n", "at line 2 column 12", "mapping values are not allowed here"),
    ("name: tiny\n\tstem_width: 8\n", "at line 2 column 1",
     "found character '\\t' that cannot start any token (while scanning for the next token)"),
])
def test_malformed_yaml_space_says_where_in_one_line(tmp_path, capsys, text, where, problem):
    """A YAML error names the file, the line and column yaml's problem_mark points at and the problem, on one line
    (before, the message stopped at yaml's first line, e.g. 'while parsing a flow sequence', with no position)."""
    from detnas.cli.main import main

    path = tmp_path / "space.yaml"
    path.write_text(text)
    assert main(["arch", "sample", "--space", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{path}: malformed space file YAML {where}: {problem}; fix the file there" in lines[0], lines
