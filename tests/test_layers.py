"""The layer order is enforced: `lint-imports` checks pyproject's import-linter contracts (rooms, the core's inner order,
bench/suite, no cycles) on the package as installed, and a planted upward import breaks them.

grimp reads the folder of `detnas` alone, while search/, export/, bench/ and workflows/ install as detnas.search
... through pyproject's package-dir; so the check runs on a tree of links laid out as the install sees it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _installed_layout(dest: Path) -> Path:
    """dest/detnas: links to every entry of detnas/, plus each package-dir room linked under its installed name."""
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    package = dest / "detnas"
    package.mkdir(parents=True)
    for entry in (ROOT / package_dirs["detnas"]).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in package_dirs.items():
        if name != "detnas":
            (package / name.removeprefix("detnas.")).symlink_to(ROOT / folder)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return package


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("lint-imports")
    if not executable.exists():
        pytest.skip(f"import-linter is not installed in this environment ({executable} missing); "
                    "pip install -e '.[dev]'")
    # run from the tree (lint-imports puts its working folder first on sys.path), so `detnas` resolves to it
    return subprocess.run([str(executable), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300)


def _lint_with_planted_import(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """import-linter's verdict on the installed layout with `line` appended to the core's `module` (a fresh file, not
    the installed one edited in place)."""
    core_module = _installed_layout(tmp_path) / module
    text = core_module.read_text()
    core_module.unlink()
    core_module.write_text(f"{text}\n{line}  # noqa: E402,F401 - planted violation\n")
    return _lint_imports(tmp_path)


def test_the_rooms_keep_their_layer_order_and_have_no_cycles(tmp_path: Path) -> None:
    _installed_layout(tmp_path)
    result = _lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout, result.stdout[-2000:]


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The core's errors module importing export (a higher room) is reported as a broken layer contract."""
    result = _lint_with_planted_import(tmp_path, "errors.py", "from detnas.export import runtime")
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "rooms: CLI > workflows > export | search > bench (latency oracle) > core BROKEN" in result.stdout
    assert "detnas.errors -> detnas.export.runtime" in result.stdout


def test_an_upward_import_inside_the_core_breaks_its_order(tmp_path: Path) -> None:
    """The space module (low in the core) importing the training package is reported against the core's contract."""
    result = _lint_with_planted_import(tmp_path, "space.py", "from detnas import train")
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "supernet | data | checkpoint > arch | blocks > space > utilities BROKEN" in " ".join(result.stdout.split())
    assert "detnas.space -> detnas.train" in result.stdout
