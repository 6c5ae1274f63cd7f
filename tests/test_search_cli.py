"""`detnas search --latency-target 12ms ...` (the product card's form) is the search itself, like `search run`."""

from __future__ import annotations

from detnas.cli.main import main


def _request(tmp_path) -> list[str]:
    return ["--latency-target", "12ms", "--supernet", str(tmp_path / "supernet"), "--ann", str(tmp_path / "val.json"),
            "--images", str(tmp_path), "--bn-ann", str(tmp_path / "train.json"), "--out", str(tmp_path / "out")]


def test_the_card_form_runs_the_search_as_search_run_does(tmp_path, capsys) -> None:
    errors = []
    for prefix in (["search"], ["search", "run"]):
        assert main([*prefix, *_request(tmp_path)]) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1] and "supernet" in errors[0] and len(errors[0].strip().splitlines()) == 1
    assert "checkpoint" in errors[0] and not (tmp_path / "out").exists()


def test_search_help_shows_the_form_and_keeps_report(capsys) -> None:
    assert main(["search", "--help"]) == 0
    printed = capsys.readouterr().out
    assert "--latency-target 12ms" in printed and "report" in printed
