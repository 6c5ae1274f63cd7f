"""One vocabulary across the CLI: walk every command (and its --help) and hold each shared option to one meaning and
one format; bad choices, sizes and devices stop with one line naming the option and what it accepts."""

from __future__ import annotations

import re
import types
import typing
from importlib.metadata import version

import pytest
from typer.main import get_command

from detnas.cli import app, main
from detnas.cli.options import VOCABULARY, PrecisionName, ScopeName

# commands that run a model take --device (`demo` runs its fixed CPU plan)
RUNS_A_MODEL = {"eval", "predict", "export", "search run", "bench latency", "bench profile", "train supernet-cls",
                "train supernet-det", "train child"}
NOT_INPUT_SIZES = {"--min-size", "--max-size", "--flops-size", "--batch-size"}  # one side in pixels, or a count


def _commands() -> list[tuple[str, typing.Any]]:
    found, stack = [], [("", get_command(app))]
    while stack:
        path, command = stack.pop()
        found.append((path, command))
        stack.extend((f"{path} {name}".strip(), sub) for name, sub in getattr(command, "commands", {}).items())
    return sorted(found, key=lambda item: item[0])


def _options(command: typing.Any) -> dict[str, typing.Any]:
    return {p.opts[0]: p for p in command.params if p.param_type_name == "option"}


def _word(name: str) -> str | None:
    """The vocabulary entry an option name belongs to: itself, or the stem of `--PREFIX-ann|images|size`."""
    if name.removeprefix("--") in VOCABULARY:
        return name.removeprefix("--")
    stem = name.rsplit("-", 1)[-1]
    if stem in ("ann", "images") or (stem == "size" and name not in NOT_INPUT_SIZES):
        return stem
    return None


def _value_type(option: typing.Any) -> typing.Any:
    """The annotation of one value: Optional and a repeatable option's list stripped."""
    annotation = option.type_descriptor.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else annotation


def _choices(option: typing.Any) -> tuple:
    annotation = _value_type(option)
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def _format(option: typing.Any) -> tuple:
    """What the user sees and types: metavar, value type (choices included) and parser."""
    return option.metavar, _value_type(option), option.type_descriptor.parameter_info.parser


COMMANDS = _commands()


def test_walk_finds_every_command():
    paths = {path for path, _ in COMMANDS}
    assert RUNS_A_MODEL | {"data check", "arch show", "bench compare", "export check", "search report"} <= paths


def test_shared_options_have_one_meaning_and_one_format():
    seen: dict[str, list[tuple[str, typing.Any]]] = {}
    for path, command in COMMANDS:
        for name, option in _options(command).items():
            assert not re.fullmatch(r"--(\w+-)?data", name), f"{path} {name}: --data is retired; use --ann / --images"
            word = _word(name)
            if word is not None:
                seen.setdefault(word, []).append((f"{path} {name}", option))
    assert {"ann", "images", "model", "size", "device", "backend", "precision", "scope", "detector"} <= set(seen)
    for word, uses in seen.items():
        entry = VOCABULARY[word]
        formats = {_format(option) for _, option in uses}
        assert len(formats) == 1, (word, {where: _format(option) for where, option in uses})
        for where, option in uses:
            assert option.help.startswith(entry.help), (where, option.help)
            if entry.metavar:
                assert option.metavar == entry.metavar, where
    # the same stem under a prefix keeps the format: --gate-ann is a COCO file like --ann, --parity-images a folder
    assert any(where.endswith("--gate-ann") for where, _ in seen["ann"])
    assert any(where.endswith("--bn-images") for where, _ in seen["images"])


def test_every_command_that_runs_a_model_takes_device():
    by_path = dict(COMMANDS)
    for path in RUNS_A_MODEL:
        assert "--device" in _options(by_path[path]), path


def test_choices_are_the_libraries_choices():
    from detnas.bench.result import PRECISIONS, Scope

    assert typing.get_args(PrecisionName) == PRECISIONS
    assert typing.get_args(ScopeName) == tuple(s.value for s in Scope)


def test_every_help_renders_choices_and_no_double_negative(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    for path, command in COMMANDS:
        assert main([*path.split(), "--help"]) == 0, path
        text = capsys.readouterr().out
        assert "--no-no-" not in text, path
        for name, option in _options(command).items():
            assert name in text, (path, name)
            if _choices(option):
                assert "|".join(_choices(option)) in text, (path, name)
            for negative in option.secondary_opts:
                assert not negative.startswith("--no-no-"), (path, negative)


def test_version_and_completion(capsys, monkeypatch):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"detnas {version('detnas')}"
    assert {"--install-completion", "--show-completion"} <= set(_options(get_command(app)))
    monkeypatch.setenv("_DETNAS_COMPLETE", "complete_bash")  # what the installed bash completion sends
    monkeypatch.setenv("COMP_WORDS", "detnas bench latency --precision ")
    monkeypatch.setenv("COMP_CWORD", "4")
    assert main([]) == 0
    assert capsys.readouterr().out.split() == ["fp32", "fp16", "int8"]


@pytest.mark.parametrize("argv, named, accepted", [
    (["bench", "latency", "--arch", "COCO-FPN-300M", "--precision", "fp8"], "'--precision'", "'fp32', 'fp16', 'int8'"),
    (["bench", "latency", "--arch", "COCO-FPN-300M", "--scope", "head"], "'--scope'", "'network+nms'"),
    (["arch", "show", "COCO-FPN-300M", "--size", "10x"], "'--size'", "N or HxW"),
    (["search", "run", "--latency-size", "big"], "'--latency-size'", "N or HxW"),
    (["predict", "--model", "m.onnx", "a.jpg", "--out", "o", "--device", "gpu"], "'--device'", "cpu, cuda or cuda:N"),
    (["eval", "--images", "val2017"], "'--ann'", "Missing option"),
])
def test_bad_choice_size_device_is_one_line_exit_2(capsys, argv, named, accepted):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert named in lines[0] and accepted in lines[0], lines[0]
    assert captured.out == ""


def test_train_without_recipe_says_which_it_uses(tmp_path, capsys):
    code = main(["train", "supernet-cls", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "recipe: cpu-cls" in err


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda"], "--device cuda: the ONNX export traces and checks parity on the CPU"),
    (["--device", "cpu", "--format", "trt"], "--device cpu: a TensorRT engine is built on a GPU"),
])
def test_export_device_says_where_each_step_runs(tmp_path, capsys, argv, message):
    out = tmp_path / "x.onnx"
    assert main(["export", "--random-init", "--arch", "COCO-FPN-300M", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("argv, named", [
    (["--precision", "fp16", "--calib-count", "8"], "--calib-count: INT8 calibration options, but the file is fp16"),
    (["--precision", "fp16", "--calib-method", "average"], "--calib-method: INT8 calibration options"),  # the default
    (["--calib-images", ".", "--calib-count", "64"], "--calib-images, --calib-count: INT8 calibration options, but "
                                                     "the file is fp32"),
])
def test_export_refuses_int8_options_for_another_precision(tmp_path, capsys, argv, named):
    """Calibration options given for a file nothing calibrates are refused in one line (typer cannot tell a default
    from a given value, so they default to None and their defaults are resolved with the precision)."""
    out = tmp_path / "x.onnx"
    assert main(["export", "--random-init", "--arch", "COCO-FPN-300M", "--size", "64", "--out", str(out), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "drop them, or pass --precision int8" in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5", "2"])
def test_export_refuses_a_max_ap_drop_outside_0_to_1_up_front(tmp_path, capsys, value):
    """nan compares false with every bound: it was accepted and the export ran (and its gate failed later)."""
    out = tmp_path / "x.onnx"
    assert main(["export", "--random-init", "--arch", "COCO-FPN-300M", "--size", "64", "--out", str(out),
                 "--max-ap-drop", value]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and f"--max-ap-drop {float(value)}: the largest allowed AP drop is a number from 0 to 1" \
        in lines[0], lines
    assert "ONNX" not in captured.out and not out.exists() and not list(tmp_path.iterdir())
