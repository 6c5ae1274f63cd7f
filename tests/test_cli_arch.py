import json

from detnas.cli import main


def test_arch_commands(capsys, tmp_path):
    assert main(["arch", "list"]) == 0
    assert "COCO-FPN-1.3G" in capsys.readouterr().out
    assert main(["arch", "show", "COCO-FPN-300M", "--size", "320x320", "--json", str(tmp_path / "show.json")]) == 0
    out = capsys.readouterr().out
    assert "321.2M" in out and "3.533M" in out
    shown = json.loads((tmp_path / "show.json").read_text())  # the same numbers the table printed
    assert shown["schema"] == "detnas.arch/1" and shown["detection_size"] == [320, 320]
    assert round(shown["flops_224_classification"] / 1e6, 1) == 321.2 and round(shown["params_classification"] / 1e6, 3) == 3.533
    assert [s["stage"] for s in shown["stages"]] == [1, 2, 3, 4]
    assert main(["arch", "sample", "--space", "detnas-300m", "--seed", "5"]) == 0
    arch_file = tmp_path / "a.json"
    arch_file.write_text(capsys.readouterr().out)
    assert json.loads(arch_file.read_text())["space"] == "detnas-300m"
    assert main(["arch", "show", str(arch_file)]) == 0


def test_bad_input_is_one_line_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"space": "detnas-300m", "choices": "1,2"}')
    assert main(["arch", "show", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.json" in err and "has 2 choices" in err and "Traceback" not in err
    assert main(["arch", "sample", "--space", "nope"]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err
