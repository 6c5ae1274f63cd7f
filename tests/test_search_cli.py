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


def test_space_file_is_parsed_and_compared_by_its_name(tmp_path, capsys) -> None:
    """--space FILE: the file is parsed (a malformed one gets its parse error) and the space's name, not the path
    string, is compared with the checkpoint's; before, every file was 'not' the checkpoint's space, unparsed."""
    import json

    from helpers.search import TINY, save_tiny_supernet

    save_tiny_supernet(tmp_path / "supernet", ["cat", "dog"], 64, 96)

    def refusal(space: str) -> str:
        assert main(["search", "run", *_request(tmp_path), "--space", space]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    same = tmp_path / "same.json"
    same.write_text(json.dumps(TINY.to_dict()))
    line = refusal(str(same))  # accepted: the search goes on and stops at the missing annotation file
    assert "supernet of space" not in line and "val.json" in line, line
    other = tmp_path / "other.yaml"
    other.write_text(json.dumps(dict(TINY.to_dict(), name="other-tiny")))
    assert f"checkpoint is a supernet of space 'search-test-tiny', not 'other-tiny' of {other}" in refusal(str(other))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: tiny\nstage_widths: [16, 32\n")
    line = refusal(str(broken))
    assert f"{broken}: malformed space file YAML at line 3 column 1" in line and "supernet of space" not in line, line
