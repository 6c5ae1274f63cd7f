"""detnas's TensorRT calls checked against the real TensorRT Python bindings of every supported version, no GPU.

The binding wheels (`tensorrt_bindings` 8.6.1, `tensorrt_cu12_bindings` 10.x, `tensorrt_cu13_bindings` 11.x, ~1 MB
each) hold the pybind11 module only (`tensorrt` re-exports it, as its front-end package does); it links against
libnvinfer & co., whose few C entry points it imports are stubbed here by a C file compiled with gcc into
libraries of the exact sonames it needs. The module then imports in
a subprocess (LD_LIBRARY_PATH set) and reports every name in `trt_backend.API` with its pybind11 signature, which is
compared with how detnas calls it. Wheels and stubs are cached per version under ~/.cache/detnas-trt-api (or
$DETNAS_TRT_API_CACHE), so reruns take a second or two. Skips with the reason where PyPI or gcc is unreachable.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from detnas.bench.backends.trt_backend import API, ApiUse, api_for, is_supported

pytestmark = pytest.mark.trt_api

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("DETNAS_TRT_API_CACHE", Path.home() / ".cache" / "detnas-trt-api"))
#: the versions checked: 8.6.1 (the only 8.6 wheel), the first and the last supported 10.x, and an 11.x
WHEELS = {
    "8.6.1": "tensorrt_bindings==8.6.1",
    "10.3.0": "tensorrt_cu12_bindings==10.3.0",
    "10.16.1.11": "tensorrt_cu12_bindings==10.16.1.11",
    "11.4.0.106": "tensorrt_cu13_bindings==11.4.0.106",
}
#: what the process already provides to the extension (libc, libm, libstdc++, libgcc, the interpreter)
_PROVIDED = ("libstdc++.so.6", "libm.so.6", "libgcc_s.so.1")

#: the whole `tensorrt/__init__.py` of the front-end sdists (tensorrt 8.6.1, tensorrt_cu13 11.4.0.106 alike)
_FRONT_END = "from tensorrt_bindings import *\nfrom tensorrt_bindings import __version__\n"

_DESCRIBE = r"""
import inspect, json, sys
import tensorrt as trt
out = {"version": trt.__version__}
for path in json.loads(sys.argv[1]):
    obj, found = trt, True
    for part in path.split("."):
        owner = obj
        try:
            obj = inspect.getattr_static(owner, part) if isinstance(owner, type) else getattr(owner, part)
        except AttributeError:
            found = False
            break
    if not found:
        out[path] = None
    elif isinstance(obj, property):
        out[path] = {"kind": "property"}
    elif isinstance(obj, type):
        out[path] = {"kind": "class"}
    elif hasattr(obj, "__code__"):
        out[path] = {"kind": "python", "params": list(inspect.signature(obj).parameters)}
    elif callable(obj) and not hasattr(type(obj), "__members__"):
        out[path] = {"kind": "call", "doc": obj.__doc__ or ""}
    else:
        out[path] = {"kind": "member"}
print(json.dumps(out))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _complete(home: Path) -> bool:
    return (home / "ready").is_file() and (home / "site" / "tensorrt" / "__init__.py").is_file()


def _stub_bindings(version: str) -> Path:
    """Download, unpack and stub one binding wheel into CACHE/version (once); skip with the reason if impossible."""
    home = CACHE / version
    if _complete(home):
        return home
    for tool in ("gcc", "nm", "readelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"'{tool}' is not on PATH; the TensorRT API conformance test compiles stub libraries")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        got = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
                    str(work / "wheel"), WHEELS[version]], timeout=600)
        wheels = list((work / "wheel").glob("*.whl"))
        if got.returncode != 0 or not wheels:
            reason = (got.stderr.strip().splitlines() or ["no wheel"])[-1]
            pytest.skip(f"cannot download {WHEELS[version]} from the package registry: {reason}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(work / "site")
        # `import tensorrt` as the tensorrt / tensorrt_cu12 / tensorrt_cu13 front-end packages provide it
        (work / "site" / "tensorrt").mkdir()
        (work / "site" / "tensorrt" / "__init__.py").write_text(_FRONT_END)
        module = next((work / "site" / "tensorrt_bindings").glob("tensorrt*.so"))
        undefined = _run(["nm", "-D", "--undefined-only", str(module)], check=True).stdout
        provided = [ctypes.CDLL(None)] + [ctypes.CDLL(lib) for lib in _PROVIDED]
        symbols = sorted({line.split()[-1].split("@")[0] for line in undefined.splitlines() if line.split()[0] == "U"})
        missing = [s for s in symbols if not any(hasattr(lib, s) for lib in provided)]
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(lib[^\]]+)\]",
                            _run(["readelf", "-d", str(module)], check=True).stdout)
        stub = work / "lib" / "stub.c"
        stub.parent.mkdir()
        stub.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in missing))
        for soname in needed:
            if soname.startswith("libnv"):
                built = _run(["gcc", "-shared", "-fPIC", "-o", str(stub.parent / soname), str(stub), f"-Wl,-soname,{soname}"])
                if built.returncode != 0:
                    pytest.skip(f"gcc could not build the stub {soname}: {built.stderr.strip()[-300:]}")
        (work / "stubbed.json").write_text(json.dumps({"symbols": missing, "sonames": needed}))
        (work / "ready").write_text(WHEELS[version])
        shutil.rmtree(work / "wheel")
        if home.is_dir() and not _complete(home):
            shutil.rmtree(home)  # left half-made by an interrupted run, or by an older layout
        try:
            os.replace(work, home)
        except OSError:  # another run filled the cache first
            pass
        work.mkdir(exist_ok=True)  # TemporaryDirectory cleans up what is (no longer) there
    return home


def _describe(version: str, paths: list[str]) -> dict:
    home = _stub_bindings(version)
    env = dict(os.environ, LD_LIBRARY_PATH=str(home / "lib"), PYTHONPATH=str(home / "site"))
    done = _run([sys.executable, "-c", _DESCRIBE, json.dumps(paths)], env=env, timeout=120)
    assert done.returncode == 0, f"tensorrt {version} did not import with stubbed libraries:\n{done.stderr[-2000:]}"
    return json.loads(done.stdout)


def _overloads(doc: str, name: str) -> list[tuple[list[tuple[str, bool]], str]]:
    """pybind11 signatures in a docstring: [([(param, has_default), ...] without self, return type)]."""
    found = []
    for line in doc.splitlines():
        match = re.match(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->\s*(\S+)\s*$", line)
        if not match:
            continue
        params, depth, current = [], 0, ""
        for char in match.group(1) + ",":
            depth += char in "[(<" and 1 or char in "])>" and -1 or 0
            if char == "," and depth == 0:
                params.append(current.strip())
                current = ""
            else:
                current += char
        parsed = [(p.split(":")[0].strip(), " = " in p) for p in params if p and p.split(":")[0].strip() != "self"]
        found.append((parsed, match.group(2)))
    return found


def _accepts(use: ApiUse, overloads: list[tuple[list[tuple[str, bool]], str]]) -> bool:
    """Some overload takes detnas's positional arguments by these names (the rest defaulted) and returns the type."""
    for params, returns in overloads:
        names = [p for p, _ in params]
        if names[:len(use.params)] != list(use.params) or not all(d for _, d in params[len(use.params):]):
            continue
        if not use.returns or re.split(r"\.|::", returns)[-1] == use.returns:
            return True
    return False


def _problems(version: str, uses: list[ApiUse]) -> list[str]:
    found = _describe(version, [u.path for u in uses])
    assert found["version"] == version
    problems = []
    for use in uses:
        got = found[use.path]
        if got is None:
            problems.append(f"{use.path}: missing")
        elif use.kind == "call" and got["kind"] == "python":
            if got["params"][:len(use.params)] != list(use.params):
                problems.append(f"{use.path}: takes {got['params']}, detnas passes {list(use.params)}")
        elif use.kind == "call":
            overloads = _overloads(got["doc"], use.path.split(".")[-1]) if got["kind"] == "call" else []
            if not _accepts(use, overloads):
                problems.append(f"{use.path}: no signature takes {list(use.params)} -> {use.returns or 'any'}; "
                                f"TensorRT {version} has {overloads or got['kind']}")
        elif got["kind"] != use.kind:
            problems.append(f"{use.path}: is a {got['kind']}, detnas uses it as a {use.kind}")
    return problems


@pytest.mark.parametrize("version", list(WHEELS))
def test_every_tensorrt_name_detnas_uses_exists_with_its_signature(version: str) -> None:
    assert is_supported(version)
    uses = api_for(version)
    assert len(uses) > 40
    assert _problems(version, uses) == []


def test_the_check_catches_removed_and_changed_api() -> None:
    """What crashed detnas on TensorRT 11 (implicit INT8, precision flags) is reported, as is a wrong signature:
    the check does not pass over nothing."""
    eleven = "11.4.0.106"
    removed = [ApiUse("BuilderFlag.FP16", kind="member"), ApiUse("BuilderFlag.INT8", kind="member"),
               ApiUse("IInt8EntropyCalibrator2", kind="class"), ApiUse("IBuilderConfig.int8_calibrator", kind="property"),
               ApiUse("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", kind="member"),
               ApiUse("IExecutionContext.execute_async_v2", params=("bindings", "stream_handle"))]
    wrong = [ApiUse("IExecutionContext.set_tensor_address", params=("name",), returns="bool"),
             ApiUse("IExecutionContext.execute_async_v3", params=("stream_handle",), returns="None"),
             ApiUse("ICudaEngine.num_io_tensors", kind="call")]
    problems = _problems(eleven, removed + wrong)
    assert [p.split(":")[0] for p in problems] == [u.path for u in removed + wrong], problems
    assert _problems("8.6.1", removed[:2] + removed[3:]) == []  # all of them existed on 8.6


def test_every_trt_attribute_in_the_code_is_in_the_table() -> None:
    """Each `trt.X.Y` written in the TensorRT modules is a row (or a prefix of one) of trt_backend.API, so the table
    cannot drift from the code; methods called on TensorRT objects are held to the table by the strict fakes of
    tests/test_trt_engine_fakes.py."""
    paths = {use.path for use in API}
    prefixes = {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 1)}
    sources = [ROOT / "bench" / "backends" / "trt_backend.py", ROOT / "export" / "trt.py"]
    used = {m for src in sources for m in re.findall(r"\btrt\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", src.read_text())}
    assert {"Logger.WARNING", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "BuilderFlag.FP16"} <= used
    assert sorted(u for u in used if u not in paths | prefixes) == []


def test_extra_names_the_supported_versions() -> None:
    """pyproject's `tensorrt` extra admits exactly the versions trt_backend accepts, among every release on PyPI."""
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tensorrt"]
    spec = next(Requirement(r) for r in extras if r.startswith("tensorrt")).specifier
    released = ["8.6.1", "8.6.1.post1", "10.0.1", "10.1.0", "10.2.0.post1", "10.3.0", "10.4.0", "10.7.0.post1",
                "10.13.3.9", "10.16.1.11", "11.0.0.114", "11.4.0.106"]
    assert [v for v in released if spec.contains(v)] == [v for v in released if is_supported(v)]
    assert not is_supported("10.2.0") and not is_supported("12.0.0") and is_supported("10.3.0")
