"""The bad-input harness (bench/suite/bad_input.py) on a handful of its own cases and three planted ones, so it
cannot rot: its real cases still run and are judged clean, and its judge still tells a silent run, a wrong message
and a lost file apart. The full run (330+ cases, minutes) is the suite script itself, not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REAL = ["json-dir/arch-show", "json-under-file/arch-show", "size 0/export", "second-run/data-split",
        "val-count 0/data-split", "json-readonly/arch-show"]

SCRIPT = """
import json, sys
from pathlib import Path
from detnas.bench.suite.bad_input import _in_child, _preload, run_cases
from detnas.bench.suite.bad_input_cases import BASE, CASES, case, with_option, write
from detnas.bench.suite.bad_input_fixtures import Fixtures, build

root, names = Path(sys.argv[1]), json.loads(sys.argv[2])
_in_child(lambda: build(root / "fx", log=lambda *_: None, cheap=True))
_preload()
planted = [
    case("planted-silent", "planted", ("arch", "sample", "--space", "$space_file"), r"anything"),
    case("planted-wrong-message", "planted", with_option("data split", "--val-count", "0"), r"words it never says"),
    case("planted-data-lost", "planted", BASE["data split"], r"search validation", code=0,
         setup=(write("split/search_val.json", "{}"),)),
]
cases = [c for c in CASES if c.name in names] + planted
outcomes = run_cases(cases, Fixtures(root / "fx"), root / "cases", jobs=2, timeout_s=120, log=lambda *_: None)
print(json.dumps({o.name: [o.verdict, o.reasons] for o in outcomes}))
"""


def _mount_namespaces() -> bool:
    """Whether this machine lets the harness make a full or read-only disk (root in a private mount namespace)."""
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


def test_harness_runs_its_cases_and_its_judge_tells_failures_apart(tmp_path: Path) -> None:
    names = REAL if _mount_namespaces() else [n for n in REAL if "readonly" not in n]
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(names)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    verdicts = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(verdicts) == {*names, "planted-silent", "planted-wrong-message", "planted-data-lost"}
    for name in names:
        assert verdicts[name][0] == "clean", (name, verdicts[name])
    assert verdicts["planted-silent"][0] == "silent", verdicts["planted-silent"]
    assert verdicts["planted-wrong-message"][0] == "wrong message", verdicts["planted-wrong-message"]
    assert verdicts["planted-data-lost"][0] == "data lost", verdicts["planted-data-lost"]
    assert any("split/search_val.json changed" in r for r in verdicts["planted-data-lost"][1])


@pytest.mark.parametrize("name", ["json-dir/arch-show", "stale-lock/export", "kill-int8-export/rerun"])
def test_every_case_expands_to_a_runnable_argv(name: str, tmp_path: Path) -> None:
    """Placeholders name real fixtures (a typo would only show in the minutes-long full run)."""
    from detnas.bench.suite.bad_input_cases import CASES, expand
    from detnas.bench.suite.bad_input_fixtures import Fixtures

    fx = Fixtures(tmp_path / "fx")
    for c in CASES:
        argv = expand(c.argv, tmp_path / "case", fx) + (expand(c.kill.argv, tmp_path, fx) if c.kill else [])
        assert not [a for a in argv if "$" in a], (c.name, argv)
    assert name in {c.name for c in CASES}
