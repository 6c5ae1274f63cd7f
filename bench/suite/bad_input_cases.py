"""The cases of the bad-input harness (`bad_input.py`): each an argv, the files it needs, and what a careful tool
does with it (the exit code, a pattern the one `error:` line must match, naming the option or file; the files that
must be unchanged afterwards).

The categories follow the kinds of bad input a new user meets: `--json` naming a directory or an unwritable place;
outputs on a full or read-only disk or under a file; sizes and numbers out of range (NaN, negative, no unit);
files of the wrong kind or empty; a GPU that is not there; YAML and JSON errors; two runs on one output; a re-export
over a good file that fails; kill -9 leftovers; missing folders and files. Every CLI command appears (arch, data,
train, search, export, export check, bench latency / compare / table / profile / predict, eval, predict, demo).

In an argv, `$tmp` is the case's own folder and `$NAME` a shared fixture (`bad_input_fixtures.Fixtures`); the
fixtures are read-only: a case that may damage a file works on its own copy (`copy`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from detnas.bench.suite.bad_input_fixtures import SIZE, Fixtures, search_argv, tiny_arch_json, train_argv

Setup = Callable[[Path, Fixtures], None]
Check = Callable[[Path], "str | None"]


@dataclass(frozen=True)
class Kill:
    """kill -9 a first run of `argv` once `trigger` (a glob under the case folder) exists or after `after_s`."""

    argv: tuple[str, ...]
    trigger: str
    after_s: float = 60.0
    delay_s: float = 0.0  # from the trigger to the kill


@dataclass(frozen=True)
class Case:
    """One bad input: run `argv` after `setup`; expect exit `code` and, on stderr's `error:` line (or anywhere in
    the output for a case that must succeed), a match of `message`. `may_change` lists files the run may rewrite and
    `may_write` (regex) the paths it may create; everything else that existed must be unchanged."""

    name: str
    category: str
    argv: tuple[str, ...]
    message: str
    code: int = 2
    setup: tuple[Setup, ...] = ()
    may_change: tuple[str, ...] = ()
    may_write: str | None = None
    disk: str | None = None  # "full" or "readonly": the case's `disk/` folder
    locked: str | None = None  # a path (relative to the case folder) whose output lock a live run holds
    locked_file: bool = False
    kill: Kill | None = None
    check: Check | None = field(default=None, compare=False)


def expand(argv: tuple[str, ...] | list[str], work: Path, fx: Fixtures) -> list[str]:
    """`$tmp` -> the case folder, `$NAME` -> the fixture NAME."""
    return [re.sub(r"\$(\w+)", lambda m: str(work if m[1] == "tmp" else getattr(fx, m[1])), a) for a in argv]


# ---- setup steps ----

def copy(name: str, rel: str) -> Setup:
    """Copy fixture `name` to `rel` in the case folder, with its sidecars (a checkpoint's pair; an ONNX file's
    .precision.json), or a whole folder."""

    def step(work: Path, fx: Fixtures) -> None:
        src, dst = getattr(fx, name), work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        elif not src.exists():  # a checkpoint named without its suffix
            for suffix in (".safetensors", ".json"):
                shutil.copy(src.with_name(src.name + suffix), dst.with_name(dst.name + suffix))
        else:
            shutil.copy(src, dst)
            sidecar = src.with_suffix(".precision.json")
            if sidecar.exists():
                shutil.copy(sidecar, dst.with_suffix(".precision.json"))

    return step


def write(rel: str, content: str | bytes) -> Setup:
    def step(work: Path, fx: Fixtures) -> None:
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return step


def mkdir(rel: str) -> Setup:
    def step(work: Path, fx: Fixtures) -> None:
        (work / rel).mkdir(parents=True, exist_ok=True)

    return step


def stale_lock(rel: str, file: bool = False) -> Setup:
    """The lock file a run killed with -9 leaves: a record of a pid that no longer runs, no flock held."""

    def step(work: Path, fx: Fixtures) -> None:
        from detnas.lock import lock_file

        path = lock_file(work / rel, folder=not file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": 2**22 + 12345, "command": "detnas (killed)", "started": "2026-01-01T00:00:00Z"}))

    return step


def truncated(name: str, rel: str) -> Setup:
    """The first half of fixture `name` at `rel`: a copy cut short (a full disk, an interrupted download)."""

    def step(work: Path, fx: Fixtures) -> None:
        data = getattr(fx, name).read_bytes()
        (work / rel).write_bytes(data[: len(data) // 2])

    return step


def json_field(rel: str, key: str, want: object) -> Check:
    """A result check: the JSON at `rel` has `key` == `want` (else the run was silently wrong)."""

    def check(work: Path) -> str | None:
        try:
            got = json.loads((work / rel).read_text()).get(key)
        except (OSError, ValueError) as exc:
            return f"silent: {rel} unreadable after a run that succeeded ({exc})"
        return None if got == want else f"silent: {rel} says {key}={got!r}, the file is {want!r}"

    return check


def no_leftovers(pattern: str) -> Check:
    def check(work: Path) -> str | None:
        left = [str(p.relative_to(work)) for p in work.rglob(pattern)]
        return f"data lost: leftovers {left} not cleaned" if left else None

    return check


# ---- the commands' good argvs, which each case spoils in one place ----

ARCH = tiny_arch_json()
S = str(SIZE)
QUICK_TIMING = ("--runs", "3", "--warmup", "0", "--no-cache")
IMAGE = "$val_images/000009.png"


def REF(name: str) -> str:  # noqa: N802 (a fixture as an argv placeholder, for the shared argv builders)
    return f"${name}"


BASE: dict[str, tuple[str, ...]] = {
    "arch show": ("arch", "show", ARCH, "--size", S),
    "arch sample": ("arch", "sample", "--space", "$space_file"),
    "data split": ("data", "split", "--ann", "$train_ann", "--out", "$tmp/split", "--val-count", "2"),
    "data demo": ("data", "demo", "--out", "$tmp/demo", "--train-count", "2", "--val-count", "1"),
    "data check": ("data", "check", "--ann", "$val_ann", "--images", "$val_images"),
    "train": tuple(train_argv(REF, "$tmp/run")),
    "search": tuple(search_argv(REF, "$tmp/s", "$tmp/latency.sqlite")),
    "search report": ("search", "report", "$journal", "--out", "$tmp/r"),
    "export": ("export", "--weights", "$child", "--out", "$tmp/m.onnx", "--size", S, "--no-parity",
               "--no-search-check"),
    "export check": ("export", "check", "$onnx"),
    "bench latency": ("bench", "latency", "--model", "$onnx", *QUICK_TIMING),
    "bench latency arch": ("bench", "latency", "--arch", ARCH, "--size", S, *QUICK_TIMING),
    "bench compare": ("bench", "compare", "$lat_fp32", "$lat_fp32b"),
    "bench table": ("bench", "table", "--model", "$onnx", "--ann", "$val_ann", "--images", "$val_images", "--runs", "3",
                    "--warmup", "0", "--max-images", "2"),
    "bench profile": ("bench", "profile", "--out", "$tmp/p.json", "--space", "$space_file", "--size", S, "--runs", "2",
                      "--rounds", "1", "--n-train", "5", "--n-test", "5", "--n-random", "0"),
    "bench predict": ("bench", "predict", "--profile", "$tmp/p.json", "--arch", ARCH),
    "eval": ("eval", "--ann", "$val_ann", "--images", "$val_images", "--weights", "$child", "--max-images", "2"),
    "eval model": ("eval", "--ann", "$val_ann", "--images", "$val_images", "--model", "$onnx", "--max-images", "2"),
    "predict": ("predict", "--model", "$onnx", IMAGE, "--out", "$tmp/pred"),
    "demo": ("demo", "--out", "$tmp/demo-run", "--plan", "smoke"),
}


def with_option(command: str, option: str, value: str | None) -> tuple[str, ...]:
    """`BASE[command]` with `option` set to `value` (replaced if present, else appended); None removes it."""
    argv = list(BASE[command])
    if option in argv:
        i = argv.index(option)
        del argv[i:i + 2]
    return tuple(argv + ([option, value] if value is not None else []))


def drop(argv: tuple[str, ...], *flags: str) -> tuple[str, ...]:
    """`argv` without the value-less `flags`."""
    return tuple(a for a in argv if a not in flags)


def case(name: str, category: str, argv: tuple[str, ...], message: str, **kw) -> Case:
    return Case(name=name, category=category, argv=argv, message=message, **kw)


CASES: list[Case] = []
add = CASES.append

# ---- 1. --json naming a directory, under a file, on a read-only / full disk ----
JSON_COMMANDS = ("arch show", "bench latency", "bench compare", "bench table", "bench profile", "bench predict", "eval",
                 "export", "search report")
for cmd in JSON_COMMANDS:
    slug = cmd.replace(" ", "-")
    add(case(f"json-dir/{slug}", "--json naming a directory", with_option(cmd, "--json", "$tmp/outdir"),
             r"--json.*directory|outdir.*directory", setup=(mkdir("outdir"),)))
    add(case(f"json-under-file/{slug}", "--json under a file", with_option(cmd, "--json", "$tmp/afile/x.json"),
             r"afile", setup=(write("afile", "x"),)))
    add(case(f"json-readonly/{slug}", "read-only or full disk", with_option(cmd, "--json", "$tmp/disk/x.json"),
             r"disk/x\.json.*read-only", disk="readonly"))
for cmd in ("arch show", "bench compare", "eval", "search report"):
    slug = cmd.replace(" ", "-")  # the report's own files come first; free space is only known by writing
    add(case(f"json-full/{slug}", "read-only or full disk", with_option(cmd, "--json", "$tmp/disk/x.json"),
             r"disk/x\.json.*(full|space)", disk="full", setup=(write("disk/x.json", "{\"old\": 1}"),),
             may_write=r"^r/" if cmd == "search report" else None))

# ---- 2. outputs: under a file, read-only, full disk ----
OUT_OPTIONS = {"data split": "--out", "data demo": "--out", "train": "--out", "search": "--out", "search report": "--out",
               "export": "--out", "predict": "--out", "bench profile": "--out", "bench latency": "--csv",
               "bench table": "--markdown", "eval": "--out-json", "demo": "--out"}
FILE_OUTPUTS = {"export": "m.onnx", "bench profile": "p.json", "bench latency": "r.csv", "bench table": "t.md",
                "eval": "dets.json"}
for cmd, opt in OUT_OPTIONS.items():
    slug = cmd.replace(" ", "-")
    name = FILE_OUTPUTS.get(cmd, "outdir")
    add(case(f"out-under-file/{slug}", "unwritable output", with_option(cmd, opt, f"$tmp/afile/{name}"), r"afile",
             setup=(write("afile", "x"),)))
    add(case(f"out-readonly/{slug}", "read-only or full disk", with_option(cmd, opt, f"$tmp/disk/{name}"),
             r"disk.*read-only", disk="readonly"))
for cmd in ("data split", "data demo", "train", "search report", "export", "predict", "bench latency", "eval"):
    slug = cmd.replace(" ", "-")
    opt, name = OUT_OPTIONS[cmd], FILE_OUTPUTS.get(cmd, "outdir")
    add(case(f"out-full/{slug}", "read-only or full disk", with_option(cmd, opt, f"$tmp/disk/{name}"),
             r"disk.*(full|space)", disk="full"))
add(case("out-full/export-over-good", "read-only or full disk", with_option("export", "--out", "$tmp/disk/m.onnx"),
         r"m\.onnx.*(full|space)", disk="full", setup=(copy("onnx", "disk/m.onnx"),)))
add(case("out-full/search-resume", "read-only or full disk", with_option("search", "--out", "$tmp/disk/s") + ("--resume",),
         r"disk/s.*(full|space)", disk="full", setup=(copy("search", "disk/s"),)))
add(case("out-dir-is-file/export", "unwritable output", with_option("export", "--out", "$tmp/outdir"),
         r"--out|outdir", setup=(mkdir("outdir"),)))
add(case("out-dir-is-file/search", "unwritable output", with_option("search", "--out", "$tmp/afile"), r"afile",
         setup=(write("afile", "x"),)))
add(case("out-dir-is-file/train", "unwritable output", with_option("train", "--out", "$tmp/afile"), r"afile",
         setup=(write("afile", "x"),)))
add(case("out-dir-is-file/predict", "unwritable output", with_option("predict", "--out", "$tmp/afile"), r"afile",
         setup=(write("afile", "x"),)))
add(case("out-not-onnx/export", "unwritable output", with_option("export", "--out", "$tmp/m.txt"), r"--out.*\.onnx"))

# ---- 3. sizes ----
for value, pattern in (("99968x99968", r"--size.*99968"), ("0", r"--size.*0"), ("-64", r"--size.*-64"),
                       ("abc", r"--size.*abc"), ("64x", r"--size.*64x"), ("1e3", r"--size.*1e3")):
    for cmd in ("export", "bench latency arch", "arch show"):
        add(case(f"size {value}/{cmd.replace(' ', '-')}", "size out of range",
                 with_option(cmd, "--size", value), pattern))
add(case("size 99968/bench-profile", "size out of range", with_option("bench profile", "--size", "99968"), r"--size.*99968"))
add(case("size 99968/search", "size out of range", with_option("search", "--latency-size", "99968"),
         r"--latency-size.*99968"))
add(case("size 100/export", "size out of range", with_option("export", "--size", "100"), r"--size.*(32|100)"))
add(case("size 99968/bench-latency-model", "size out of range", with_option("bench latency", "--size", "99968"),
         r"--size.*99968"))
add(case("min-size 0/eval", "size out of range", with_option("eval", "--min-size", "0"), r"--min-size"))
add(case("min-size 99968/eval", "size out of range", with_option("eval", "--min-size", "99968"), r"--min-size.*99968"))
add(case("image-size huge/train", "size out of range", BASE["train"] + ("--set", "image_size=99968"), r"image_size"))

# ---- 4. a GPU that is not there ----
for cmd in ("eval", "eval model", "bench latency", "bench latency arch", "predict", "train", "search", "bench table",
            "bench profile"):
    add(case(f"cuda/{cmd.replace(' ', '-')}", "--device cuda without a GPU", with_option(cmd, "--device", "cuda"),
             r"cuda|GPU"))
add(case("cuda/export-trt", "--device cuda without a GPU", BASE["export"] + ("--format", "trt"), r"TensorRT|GPU|cuda"))
add(case("device gpu/eval", "--device cuda without a GPU", with_option("eval", "--device", "gpu"), r"--device.*gpu"))
add(case("device cuda:x/bench-latency", "--device cuda without a GPU", with_option("bench latency", "--device", "cuda:x"),
         r"--device.*cuda:x"))
add(case("ort-provider cuda/bench-latency", "--device cuda without a GPU", BASE["bench latency"] + ("--ort-provider", "cuda"),
         r"cuda|CUDA"))

# ---- 5. labels: INT8 files, results of other work, weights of another detector ----
add(case("int8-label/bench-latency", "INT8 labels and mismatched rows", BASE["bench latency"][:3] + ("$int8",) +
         BASE["bench latency"][4:] + ("--json", "$tmp/r.json"), r"int8", code=0, may_write=r"^r\.json$",
         check=json_field("r.json", "precision", "int8")))
add(case("int8-as-fp32/bench-latency", "INT8 labels and mismatched rows", with_option("bench latency", "--model", "$int8")
         + ("--precision", "fp32"), r"--precision fp32.*int8"))
add(case("int8-as-fp16/bench-latency", "INT8 labels and mismatched rows", with_option("bench latency", "--model", "$int8")
         + ("--precision", "fp16"), r"--precision fp16.*int8"))
add(case("fp32-vs-int8/bench-compare", "INT8 labels and mismatched rows", ("bench", "compare", "$lat_fp32", "$lat_int8"),
         r"precision differs", code=0))
add(case("fp32-vs-backbone/bench-compare", "INT8 labels and mismatched rows",
         ("bench", "compare", "$lat_fp32", "$lat_backbone"), r"scope|size|backbone"))
add(case("other-detector/bench-table", "INT8 labels and mismatched rows", BASE["bench table"] + ("--weights", "$retina"),
         r"--weights|retina"))
add(case("other-onnx/bench-table", "INT8 labels and mismatched rows",
         BASE["bench table"] + ("--model", "$retina_onnx"), r"retina"))
add(case("int8-only/bench-table", "INT8 labels and mismatched rows", with_option("bench table", "--model", "$int8"),
         r"FP32|fp32|int8"))
add(case("convert fp8/bench-table", "INT8 labels and mismatched rows", BASE["bench table"] + ("--convert", "fp8"),
         r"--convert.*fp8"))
add(case("calib-count without int8/bench-table", "INT8 labels and mismatched rows",
         BASE["bench table"] + ("--calib-count", "4"), r"--calib-count"))
add(case("supernet weights/bench-table", "INT8 labels and mismatched rows", BASE["bench table"] + ("--weights", "$supernet"),
         r"--weights|supernet"))

# ---- 6. files that are empty, truncated, of the wrong kind, missing ----
EMPTY, TEXT = b"", b"hello, not a model\n"
for label, content in (("empty", EMPTY), ("text", TEXT), ("truncated", None)):
    setup = (write("m.onnx", content),) if content is not None else (truncated("onnx", "m.onnx"),)
    for cmd, opt in (("export check", None), ("bench latency", "--model"), ("eval model", "--model"),
                     ("predict", "--model"), ("bench table", "--model")):
        argv = ("export", "check", "$tmp/m.onnx") if opt is None else with_option(cmd, opt, "$tmp/m.onnx")
        add(case(f"{label}-onnx/{cmd.replace(' ', '-')}", "empty, truncated or wrong files", argv, r"m\.onnx",
                 setup=setup))
for cmd, opt in (("export check", None), ("bench latency", "--model"), ("eval model", "--model"), ("predict", "--model"),
                 ("bench table", "--model")):
    argv = ("export", "check", "$tmp/nothere.onnx") if opt is None else with_option(cmd, opt, "$tmp/nothere.onnx")
    add(case(f"missing-onnx/{cmd.replace(' ', '-')}", "missing files and folders", argv, r"nothere\.onnx"))
add(case("dir-onnx/export-check", "empty, truncated or wrong files", ("export", "check", "$tmp/d.onnx"), r"d\.onnx",
         setup=(mkdir("d.onnx"),)))
add(case("json-as-onnx/export-check", "empty, truncated or wrong files", ("export", "check", "$lat_fp32"), r"lat_fp32"))
for label, content in (("empty", b""), ("text", b"not a checkpoint"), ("pickle", b"\x80\x04K\x01.")):
    for cmd in ("eval", "export"):
        add(case(f"{label}-weights/{cmd}", "empty, truncated or wrong files", with_option(cmd, "--weights", "$tmp/w"),
                 r"\bw\b|w\.safetensors|w\.json", setup=(write("w.safetensors", content), write("w.json", "{}"))))
add(case("weights-without-sidecar/export", "empty, truncated or wrong files", with_option("export", "--weights", "$tmp/w"),
         r"w\.json|sidecar", setup=(copy("child", "w"), lambda work, fx: (work / "w.json").unlink())))
add(case("edited-sidecar/eval", "empty, truncated or wrong files", with_option("eval", "--weights", "$tmp/w"),
         r"w\.json|w\.safetensors|digest",
         setup=(copy("child", "w"), lambda work, fx: (work / "w.json").write_text(
             (work / "w.json").read_text().replace('"bad-input"', '"edited"')))))
for cmd, opt in (("eval", "--weights"), ("export", "--weights"), ("search", "--supernet"), ("bench table", "--weights")):
    add(case(f"missing-weights/{cmd.replace(' ', '-')}", "missing files and folders", with_option(cmd, opt, "$tmp/nope"),
             r"nope"))
for cmd in ("eval", "data check", "search", "bench table"):
    add(case(f"missing-images/{cmd.replace(' ', '-')}", "missing files and folders",
             with_option(cmd, "--images", "$tmp/noimages"), r"noimages"))
    add(case(f"empty-images/{cmd.replace(' ', '-')}", "missing files and folders",
             with_option(cmd, "--images", "$tmp/emptydir"), r"emptydir|image", setup=(mkdir("emptydir"),)))
    add(case(f"missing-ann/{cmd.replace(' ', '-')}", "missing files and folders", with_option(cmd, "--ann", "$tmp/no.json"),
             r"no\.json"))
    add(case(f"malformed-ann/{cmd.replace(' ', '-')}", "YAML and JSON errors", with_option(cmd, "--ann", "$tmp/bad.json"),
             r"bad\.json.*line", setup=(write("bad.json", '{"images": [1, 2,\n'),)))
add(case("missing-ann/data-split", "missing files and folders", with_option("data split", "--ann", "$tmp/no.json"),
         r"no\.json"))
add(case("ann-without-categories/data-split", "YAML and JSON errors", with_option("data split", "--ann", "$tmp/a.json"),
         r"a\.json", setup=(write("a.json", '{"images": []}'),)))
add(case("ann-is-list/eval", "YAML and JSON errors", with_option("eval", "--ann", "$tmp/a.json"), r"a\.json",
         setup=(write("a.json", "[1, 2, 3]"),)))
add(case("other-classes/eval", "empty, truncated or wrong files", with_option("eval", "--ann", "$tmp/a.json"),
         r"a\.json|classes", setup=(write("a.json", json.dumps({"images": [{"id": 1, "file_name": "000009.png",
                                                                             "width": 128, "height": 128}],
                                                                  "annotations": [], "categories": [{"id": 1, "name": "x"}]})),)))
add(case("missing-image/predict", "missing files and folders", ("predict", "--model", "$onnx", "$tmp/nope.png",
                                                                 "--out", "$tmp/pred"), r"nope\.png"))
add(case("not-an-image/predict", "empty, truncated or wrong files", ("predict", "--model", "$onnx", "$tmp/x.png",
                                                                     "--out", "$tmp/pred"), r"x\.png",
         setup=(write("x.png", "not a png"),)))
add(case("missing-parity-images/export", "missing files and folders",
         drop(BASE["export"], "--no-parity") + ("--parity-images", "$tmp/noimages"), r"noimages"))
add(case("empty-calib-images/export", "missing files and folders", BASE["export"] + ("--precision", "int8",
                                                                                       "--calib-images", "$tmp/emptydir"),
         r"emptydir|calib", setup=(mkdir("emptydir"),)))
add(case("missing-journal/search-report", "missing files and folders", ("search", "report", "$tmp/nope.jsonl"),
         r"nope\.jsonl"))
add(case("empty-journal/search-report", "empty, truncated or wrong files", ("search", "report", "$tmp/j.jsonl"),
         r"j\.jsonl", setup=(write("j.jsonl", ""),)))
add(case("torn-journal/search-report", "empty, truncated or wrong files", ("search", "report", "$tmp/j.jsonl"),
         r"not been timed afresh", code=0, may_write=r"\.(json|png)$",  # a kill's torn last line is dropped, as on --resume
         setup=(lambda work, fx: (work / "j.jsonl").write_bytes(fx.journal.read_bytes()[:-40]),)))
add(case("text-journal/search-report", "empty, truncated or wrong files", ("search", "report", "$tmp/j.jsonl"),
         r"j\.jsonl", setup=(write("j.jsonl", "hello\n"),)))
for label, content in (("missing", None), ("empty", ""), ("list", "[1, 2]"), ("malformed", "{\"stats\": "),
                       ("eval-json", json.dumps({"schema": "detnas.eval/1", "metrics": {}}))):
    setup = () if content is None else (write("a.json", content),)
    add(case(f"{label}-result/bench-compare", "empty, truncated or wrong files", ("bench", "compare", "$tmp/a.json",
                                                                                  "$lat_fp32"), r"a\.json", setup=setup))
add(case("dir-result/bench-compare", "empty, truncated or wrong files", ("bench", "compare", "$tmp/a.json", "$lat_fp32"),
         r"a\.json", setup=(mkdir("a.json"),)))
add(case("missing-profile/bench-predict", "missing files and folders", BASE["bench predict"], r"p\.json"))
add(case("empty-profile/bench-predict", "empty, truncated or wrong files", BASE["bench predict"], r"p\.json",
         setup=(write("p.json", ""),)))
add(case("missing-from/bench-profile", "missing files and folders", BASE["bench profile"] + ("--from", "$tmp/ref.json",
                                                                                             "--archs", "3"), r"ref\.json"))
add(case("engine-on-ort/bench-latency", "empty, truncated or wrong files",
         with_option("bench latency", "--model", "$tmp/m.engine") + ("--scope", "network"), r"m\.engine|--backend trt",
         setup=(write("m.engine", "x"),)))
add(case("child-as-supernet/search", "empty, truncated or wrong files", with_option("search", "--supernet", "$child"),
         r"child|supernet"))
add(case("supernet-without-arch/eval", "empty, truncated or wrong files", with_option("eval", "--weights", "$supernet"),
         r"--arch|supernet"))
add(case("supernet-without-bn/export", "empty, truncated or wrong files",
         with_option("export", "--weights", "$supernet") + ("--arch", ARCH), r"--bn|supernet|BN"))
add(case("init-missing/train-det", "missing files and folders",
         ("train", "supernet-det", "--images", "$train_images", "--ann", "$train_ann", "--space", "$space_file",
          "--out", "$tmp/run", "-n", "1", "--init", "$tmp/nope", "--workers", "0", "--device", "cpu"), r"nope"))
add(case("missing-images/train", "missing files and folders", with_option("train", "--images", "$tmp/noimages"),
         r"noimages"))
add(case("empty-images/train", "missing files and folders", with_option("train", "--images", "$tmp/emptydir"),
         r"emptydir", setup=(mkdir("emptydir"),)))
add(case("corrupt-image/data-check", "empty, truncated or wrong files", ("data", "check", "--ann", "$tmp/d/a.json",
                                                                         "--images", "$tmp/d/img"), r"000009\.png",
         setup=(copy("val_images", "d/img"), lambda work, fx: shutil.copy(fx.val_ann, work / "d/a.json"),
                write("d/img/000009.png", "broken"))))
add(case("missing-arch-file/arch-show", "missing files and folders", ("arch", "show", "$tmp/nope.json"), r"nope\.json"))
add(case("unknown-arch/export", "missing files and folders", BASE["export"] + ("--arch", "NO-SUCH-ARCH"),
         r"NO-SUCH-ARCH"))
add(case("malformed-inline-arch/bench-latency", "YAML and JSON errors", with_option("bench latency arch", "--arch",
                                                                                    '{"space": '), r"arch"))
add(case("other-arch/export", "empty, truncated or wrong files", BASE["export"] + ("--arch", "COCO-FPN-300M"),
         r"--arch|COCO-FPN-300M"))
add(case("unknown-space/arch-sample", "missing files and folders", ("arch", "sample", "--space", "no-such-space"),
         r"no-such-space"))

# ---- 7. numbers: NaN, negative, zero, no unit ----
NUMBERS = [
    ("export", "--max-ap-drop", "nan"), ("export", "--max-ap-drop", "-0.5"), ("export", "--box-tol", "nan"),
    ("export", "--box-tol", "-1"), ("export", "--score-tol", "nan"), ("export", "--score-thresh", "1.5"),
    ("export", "--score-thresh", "nan"), ("export", "--nms-thresh", "2"), ("export", "--max-detections", "0"),
    ("export", "--batch", "0"), ("export", "--proposals", "0"), ("export", "--proposals", "-5"),
    ("export", "--min-parity-detections", "-1"), ("export", "--calib-count", "0"),
    ("eval", "--batch-size", "0"), ("eval", "--max-images", "0"), ("eval", "--proposals", "0"),
    ("predict", "--draw-thresh", "nan"), ("predict", "--draw-thresh", "-1"), ("predict", "--draw-thresh", "inf"),
    ("search", "--latency-target", "12"), ("search", "--latency-target", "nanms"), ("search", "--latency-target", "-5ms"),
    ("search", "--latency-target", "0ms"), ("search", "--latency-target", "ms"), ("search", "--latency-target", "auto:2"),
    ("search", "--latency-target", "auto:nan"), ("search", "--population", "0"), ("search", "--generations", "-1"),
    ("search", "--mutation-prob", "1.5"), ("search", "--mutation-prob", "nan"), ("search", "--soft-weight", "nan"),
    ("search", "--flops-max", "abc"), ("search", "--flops-max", "-1M"), ("search", "--params-max", "nan"),
    ("search", "--latency-runs", "0"), ("search", "--latency-threads", "0"), ("search", "--bn-count", "0"),
    ("search", "--top-k", "0"), ("search", "--max-images", "0"), ("search", "--latency-batch", "0"),
    ("bench latency", "--runs", "0"), ("bench latency", "--warmup", "-1"), ("bench latency", "--threads", "0"),
    ("bench latency", "--batch", "0"), ("bench latency arch", "--workspace-mb", "-1"),
    ("bench compare", "--confidence", "1.5"), ("bench compare", "--confidence", "nan"), ("bench compare", "--k", "nan"),
    ("bench compare", "--k", "-1"), ("bench profile", "--runs", "0"), ("bench profile", "--rounds", "0"),
    ("bench profile", "--n-train", "0"), ("bench profile", "--near-ms", "nan"), ("bench profile", "--near-ms", "-1"),
    ("bench table", "--max-images", "0"), ("bench table", "--runs", "0"), ("bench table", "--threads", "0"),
    ("train", "-n", "-1"), ("data split", "--val-count", "0"), ("data split", "--val-count", "-1"),
    ("data split", "--val-count", "99999"), ("data demo", "--train-count", "0"), ("data demo", "--val-count", "-1"),
    ("arch show", "--num-classes", "0"), ("search report", "--top-k", "0"), ("demo", "--latency-target", "nanms"),
    ("demo", "--latency-target", "12"), ("demo", "--plan", "huge"),
]
#: options whose check lives in a library record that names its field (`runs=0: need runs >= 2`) rather than the option
FIELD_NAMED = {"--runs": "runs", "--warmup": "warmup", "--threads": "threads", "--latency-runs": "runs",
               "--latency-threads": "threads", "--max-detections": "max_detections", "--batch": "batch", "-n": "iterations"}
for cmd, opt, value in NUMBERS:
    argv = with_option(cmd, opt, value)
    if opt == "--latency-target":
        argv = drop(argv, "--no-constraint")
    said = re.escape(opt) + (f"|\\b{FIELD_NAMED[opt]}\\b" if opt in FIELD_NAMED else "")
    add(case(f"{opt.lstrip('-')} {value}/{cmd.replace(' ', '-')}", "NaN, negative or unitless numbers", argv, said))
for key, value in (("lr", "nan"), ("lr", "-1"), ("batch_size", "0"), ("no_such_key", "1"), ("momentum", "abc")):
    add(case(f"set {key}={value}/train", "NaN, negative or unitless numbers", BASE["train"] + ("--set", f"{key}={value}"),
             re.escape(key)))
add(case("set-without-equals/train", "NaN, negative or unitless numbers", BASE["train"] + ("--set", "lr"), r"--set|lr"))

# ---- 8. YAML / JSON config and space files ----
YAMLS = {
    "tab": "iterations: 2\n\tlr: 0.1\n",
    "unclosed": "iterations: [1, 2\n",
    "list": "- 1\n- 2\n",
    "unknown-key": "no_such_key: 1\n",
    "wrong-type": "lr: fast\n",
    "empty": "",
}
for label, text in YAMLS.items():
    empty = label == "empty"  # an empty config adds no keys: the run goes on
    add(case(f"config-{label}/train", "YAML and JSON errors", BASE["train"] + ("--config", "$tmp/c.yaml"),
             r"weights" if empty else r"c\.yaml", code=0 if empty else 2, may_write=r"^run/" if empty else None,
             setup=(write("c.yaml", text),)))
add(case("config-missing/train", "missing files and folders", BASE["train"] + ("--config", "$tmp/nope.yaml"),
         r"nope\.yaml"))
add(case("config-malformed-json/train", "YAML and JSON errors", BASE["train"] + ("--config", "$tmp/c.json"),
         r"c\.json.*line", setup=(write("c.json", '{"iterations": 2,'),)))
SPACES = {"unclosed": "name: x\nstage_widths: [16, 32\n", "mismatch": json.dumps(
    {"name": "bad", "stem_width": 8, "stage_widths": [16, 32], "stage_depths": [1], "head_width": 32}),
          "list": "- 1\n", "missing-field": "name: x\n"}
for label, text in SPACES.items():
    suffix = "json" if label == "mismatch" else "yaml"
    for cmd, argv in (("arch-sample", ("arch", "sample", "--space", f"$tmp/s.{suffix}")),
                      ("search", with_option("search", "--space", f"$tmp/s.{suffix}")),
                      ("train", with_option("train", "--space", f"$tmp/s.{suffix}"))):
        add(case(f"space-{label}/{cmd}", "YAML and JSON errors", argv, rf"s\.{suffix}", setup=(write(f"s.{suffix}", text),)))
add(case("space-file-of-other-space/search", "YAML and JSON errors", with_option("search", "--space", "$tmp/s.json"),
         r"s\.json|--space", setup=(write("s.json", json.dumps({"name": "another", "stem_width": 8,
                                                               "stage_widths": [16, 32, 48, 64],
                                                               "stage_depths": [1, 1, 1, 1], "head_width": 32})),)))
add(case("space-file-of-same-space/search", "YAML and JSON errors", with_option("search", "--space", "$space_file") +
         ("--probe",), r"fastest|probe|ms", code=0, may_write=r"^s(/|$)"))

# ---- 9. two runs on one output; stale locks; runs of another kind ----
for cmd, target, is_file in (("search", "s", False), ("train", "run", False), ("export", "m.onnx", True),
                             ("demo", "demo-run", False)):
    add(case(f"second-run/{cmd.replace(' ', '-')}", "two runs on one output", BASE[cmd], r"in use by another detnas run",
             locked=target, locked_file=is_file))
for cmd, target, said in (("search report", "r", r"not been timed|verdict|winner"), ("data split", "split", r"search validation")):
    # outputs written whole and atomically, from inputs the other run does not change: no lock needed, both succeed
    add(case(f"second-run/{cmd.replace(' ', '-')}", "two runs on one output", BASE[cmd], said, code=0, locked=target,
             may_write=rf"^{target}/"))
add(case("resume-while-running/search", "two runs on one output", BASE["search"] + ("--resume",),
         r"in use by another detnas run", locked="s"))
add(case("resume-while-running/train", "two runs on one output", BASE["train"] + ("--resume",),
         r"in use by another detnas run", locked="run"))
add(case("stale-lock/export", "two runs on one output", BASE["export"], r"took over the lock", code=0,
         setup=(stale_lock("m.onnx", file=True),), may_write=r"^m\.onnx$"))
add(case("stale-lock/train", "two runs on one output", BASE["train"], r"took over the lock", code=0,
         setup=(stale_lock("run"),), may_write=r"^run/"))
add(case("train-into-search-folder/train", "two runs on one output", with_option("train", "--out", "$tmp/s"),
         r"search run", setup=(copy("search", "s"),)))
add(case("search-into-train-folder/search", "two runs on one output", with_option("search", "--out", "$tmp/run"),
         r"training run", setup=(copy("train_run", "run"),)))
add(case("resume-other-config/search", "two runs on one output", with_option("search", "--out", "$tmp/s") +
         ("--resume", "--seed", "7"), r"--resume|seed|configuration", setup=(copy("search", "s"),)))
add(case("resume-other-recipe/train", "two runs on one output", BASE["train"] + ("--resume", "--set", "lr=0.5"),
         r"--resume|lr|config", setup=(copy("train_run", "run"),)))
add(case("resume-nothing/train", "two runs on one output", BASE["train"] + ("--resume",), r"--resume|run|checkpoint"))

# ---- 10. re-export over a good file after a failing step ----
GOOD = (copy("int8", "d.onnx"),)
add(case("gate-fails/re-export", "re-export over a good file",
         with_option("export", "--out", "$tmp/d.onnx") + ("--proposals", "20", "--precision", "int8", "--calib-images",
                                                           "$train_images", "--calib-count", "4", "--gate-ann", "$val_ann",
                                                           "--gate-images", "$val_images", "--max-ap-drop", "0"),
         r"gate|AP|--max-ap-drop", setup=GOOD))
add(case("bad-arch/re-export", "re-export over a good file", with_option("export", "--out", "$tmp/d.onnx") +
         ("--arch", "COCO-FPN-300M"), r"--arch", setup=GOOD))
add(case("fp16-with-calib/re-export", "re-export over a good file", with_option("export", "--out", "$tmp/d.onnx") +
         ("--precision", "fp16", "--calib-count", "4"), r"--calib-count", setup=GOOD))
add(case("parity-fails/re-export", "re-export over a good file",
         drop(with_option("export", "--out", "$tmp/d.onnx"), "--no-parity") +
         ("--parity-images", "$val_images", "--min-parity-detections", "100000"), r"parity|detections", setup=GOOD))
add(case("gate-json-missing/re-export", "re-export over a good file",
         with_option("export", "--out", "$tmp/d.onnx") + ("--precision", "int8", "--calib-images", "$train_images",
                                                           "--calib-count", "4", "--gate-ann", "$tmp/nope.json",
                                                           "--gate-images", "$val_images"),
         r"nope\.json", setup=GOOD))
add(case("json-unwritable/re-export", "re-export over a good file", with_option("export", "--out", "$tmp/d.onnx") +
         ("--json", "$tmp/afile/x.json"), r"afile", setup=GOOD + (write("afile", "x"),)))

# ---- 11. kill -9 mid-way, then the same command again ----
add(case("kill-export/rerun", "kill -9 leftovers", BASE["export"], r"wrote|m\.onnx", code=0,
         kill=Kill(BASE["export"], "*.tmp*"), may_write=r"^m\.onnx$", check=no_leftovers("*.tmp")))
add(case("kill-int8-export/rerun", "kill -9 leftovers",
         with_option("export", "--out", "$tmp/d.onnx") + ("--proposals", "20", "--precision", "int8", "--calib-images",
                                                           "$train_images", "--calib-count", "4"),
         r"d\.onnx", code=0, setup=GOOD, may_change=("d.onnx", "d.precision.json"),
         kill=Kill(with_option("export", "--out", "$tmp/d.onnx") + ("--proposals", "20", "--precision", "int8",
                                                                    "--calib-images", "$train_images", "--calib-count", "4"),
                   "*.tmp", delay_s=2.0), check=no_leftovers("*.tmp")))
add(case("kill-train/resume", "kill -9 leftovers", BASE["train"] + ("--resume",), r"weights", code=0,
         kill=Kill(BASE["train"], "run/checkpoints/iter_0000001.state.json", delay_s=0.3), may_write=r"^run/",
         check=no_leftovers("*.tmp")))
add(case("kill-search/resume", "kill -9 leftovers", BASE["search"] + ("--resume",), r"results in", code=0,
         kill=Kill(BASE["search"], "s/journal.jsonl"), may_write=r"^s/", check=no_leftovers("*.tmp")))
add(case("kill-predict/rerun", "kill -9 leftovers", BASE["predict"], r"detections", code=0,
         kill=Kill(BASE["predict"], "pred/*", after_s=20), may_write=r"^pred/", check=no_leftovers("*.tmp")))
add(case("kill-data-demo/rerun", "kill -9 leftovers", BASE["data demo"], r"detection", code=0,
         kill=Kill(BASE["data demo"], "demo/detection/*"), may_write=r"^demo/", check=no_leftovers("*.tmp")))

# ---- 12. arguable choices, decided ----
add(case("fp16-with-int8-option/export", "arguable choices", BASE["export"] + ("--precision", "fp16", "--calib-method",
                                                                                "entropy"), r"--calib-method"))
for version in ("9.0", "99"):  # decided: linted by every rule that names no version range, and said so
    add(case(f"trt {version}/export-check", "arguable choices", ("export", "check", "$onnx", "--trt", version),
             r"not one of the parsers studied|the newest parser the rules know", code=0))
add(case("proposals 0/bench-table", "arguable choices", BASE["bench table"] + ("--proposals", "0"), r"--proposals"))
add(case("latency-target 1e9ms/search", "arguable choices", drop(with_option("search", "--latency-target", "1e9ms"),
                                                                  "--no-constraint") + ("--probe",),
         r"probe", code=0, may_write=r"^s(/|$)"))
add(case("scope-for-non-onnx/bench-latency", "arguable choices",
         with_option("bench latency", "--model", "$tmp/m.txt"), r"m\.txt", setup=(write("m.txt", "x"),)))

NAMES = [c.name for c in CASES]
assert len(NAMES) == len(set(NAMES)), sorted(n for n in NAMES if NAMES.count(n) > 1)
