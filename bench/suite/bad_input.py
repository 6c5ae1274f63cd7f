"""Benchmark of refusals: every case of `bad_input_cases.CASES` (bad options, unwritable or full outputs, wrong
files, two runs on one output, kill -9 points) run as a new user would, each classified as

- clean: the documented exit code and one `error:` line (or, for a case that must go on, its note) naming the option
  or file, nothing else changed;
- wrong message: another exit code, or no error line matching the case's pattern, or a refusal that came late
  (after the run had written outputs);
- silent: exit 0 (or a result) where a refusal was due;
- traceback: "Traceback" on stderr;
- data lost: a file that existed before changed or vanished, or the run left a partial, 0-byte or temporary file.

(the first that applies from the bottom up: data lost outranks a traceback, which outranks the rest).

Each case runs in its own process, forked from one that has imported detnas, torch and ONNX Runtime once (a fresh
`detnas` process spends 3-5 s on imports; a fork starts at once), with the same argv the console script passes
`detnas.cli.main.main`, its stdout and stderr file descriptors redirected to files. A full disk and a read-only
file system are real: the case's process gets its own mount namespace with a small tmpfs at `<case>/disk`, filled
to the last byte or remounted read-only after the case's files are placed (root only; elsewhere those cases are
reported as not run). Two cases run at a time.

Run: python -m detnas.bench.suite.bad_input --out bad_input.json [--fixtures DIR] [--only REGEX] [--jobs 2]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from detnas.bench.suite.bad_input_cases import CASES, Case, Kill, expand
from detnas.bench.suite.bad_input_fixtures import Fixtures, build

VERDICTS = ("clean", "wrong message", "silent", "traceback", "data lost")
NOT_RUN = "not run"  # the harness could not set the case up (e.g. no mount namespace for a full disk): not counted
FILLER = ".bad-input-filler"
HARNESS_ERROR = "harness-error.txt"
_CLONE_NEWNS = 0x00020000


@dataclass
class Outcome:
    """What one case did and its verdict (`VERDICTS`), with the reasons behind it."""

    name: str
    category: str
    argv: list[str]
    verdict: str
    code: int | None
    expected_code: int
    error_line: str
    reasons: list[str]
    seconds: float
    stderr_tail: str


def manifest(folder: Path) -> dict[str, str]:
    """relative path -> sha256 ('empty', 'dir') of everything under `folder` but the disk filler and lock files:
    what a case's run may change is judged against it."""
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.name == FILLER or path.name.endswith(".detnas.lock"):  # locks come and go with their runs
            continue
        rel = str(path.relative_to(folder))
        if path.is_dir():
            files[rel] = "dir"
        elif path.is_file():
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.stat().st_size else "empty"
    return files


def _mount_disk(folder: Path) -> None:
    """A private mount namespace with a 2 MiB tmpfs at `folder` (the case's files then go there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) refused")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], check=True, capture_output=True)


def _constrain_disk(folder: Path, kind: str) -> None:
    """Fill the case's tmpfs to its last byte, or remount it read-only."""
    if kind == "readonly":
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        return
    fd = os.open(folder / FILLER, os.O_WRONLY | os.O_CREAT)
    for chunk in (1 << 16, 4096, 1):  # down to the last byte
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * chunk)
    os.close(fd)


def _run_cli(argv: list[str], stdout: Path, stderr: Path) -> int:
    """`detnas ARGV` in this (forked) process as the console script runs it; an escaping exception prints its
    traceback as Python would and gives exit code 1."""
    out_fd, err_fd = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.argv = ["detnas", *argv]
    from detnas.cli.main import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what an uncaught exception does to the real console script
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _hold_lock(target: Path, folder: bool) -> int:
    """Fork a process that holds `target`'s output lock as a running detnas command would, until killed."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        try:
            from detnas.lock import output_lock

            with output_lock(target, folder=folder, command="detnas (the first run)"):
                os.write(ready_w, b"1")
                time.sleep(600)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def _kill_during(argv: list[str], work: Path, kill: Kill) -> None:
    """Run `detnas ARGV` in a forked process and kill -9 it `kill.delay_s` after a path matching `kill.trigger` (a
    glob under `work`) appears, or after `kill.after_s` seconds."""
    pid = os.fork()
    if pid == 0:
        code = _run_cli(argv, work / "killed.stdout", work / "killed.stderr")
        os._exit(code)
    deadline = time.monotonic() + kill.after_s
    while time.monotonic() < deadline and not list(work.glob(kill.trigger)):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return  # it finished before the kill point
        time.sleep(0.01)
    time.sleep(kill.delay_s)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _case_process(case: Case, fx: Fixtures, work: Path, record: Path) -> None:
    """The body of a case's own process: setup, constraints, the run, and the before/after manifests in `record`."""
    import torch

    torch.set_num_threads(1)
    os.environ["DETNAS_PROGRESS_INTERVAL"] = "3600"
    os.environ["XDG_CACHE_HOME"] = str(work / ".cache-home")
    os.chdir(work)
    if case.disk:
        _mount_disk(work / "disk")
    for step in case.setup:
        step(work, fx)
    before = manifest(work)
    if case.disk:
        _constrain_disk(work / "disk", case.disk)
    holder = _hold_lock(work / case.locked, folder=not case.locked_file) if case.locked else None
    if case.kill is not None:
        _kill_during(expand(case.kill.argv, work, fx), work, case.kill)
    code = _run_cli(expand(case.argv, work, fx), work / "stdout.txt", work / "stderr.txt")
    if holder is not None:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    after = manifest(work)
    record.write_text(json.dumps({"code": code, "before": before, "after": after}))


def _judge(case: Case, work: Path, record: dict | None, seconds: float, argv: list[str],
           timed_out: bool = False) -> Outcome:
    stderr = (work / "stderr.txt").read_text(errors="replace") if (work / "stderr.txt").exists() else ""
    stdout = (work / "stdout.txt").read_text(errors="replace") if (work / "stdout.txt").exists() else ""
    errors = [" ".join(line.split()) for line in stderr.splitlines() if line.startswith("error:")]
    error_line = errors[-1] if errors else ""
    reasons: list[str] = []
    code = record["code"] if record else None
    if timed_out:
        reasons.append(f"{'silent' if case.code else 'wrong message'}: still running after {seconds:.0f} s"
                       + (" where a refusal was due" if case.code else ""))
    elif (work / HARNESS_ERROR).exists():
        lines = (work / HARNESS_ERROR).read_text().strip().splitlines()
        return Outcome(case.name, case.category, argv, NOT_RUN, None, case.code, "", [f"harness: {lines[-1]}"],
                       round(seconds, 2), "")
    elif record is None:
        reasons.append("wrong message: the case's process died without a record")
    else:
        before, after = record["before"], record["after"]
        ignored = re.compile(case.may_write) if case.may_write else None
        for path, digest in before.items():
            if path in case.may_change or (ignored and ignored.search(path)):
                continue
            if path not in after:
                reasons.append(f"data lost: {path} was removed")
            elif after[path] != digest:
                reasons.append(f"data lost: {path} changed")
        refused = code not in (0, None)
        for path, digest in after.items():
            if path in before or path in _OWN_FILES or path.startswith(".cache-home") or digest == "dir" or \
                    Path(path).name == "latency.sqlite" or (ignored and ignored.search(path)):
                continue  # a latency cache is no output: a refused search may have opened it
            if Path(path).name.endswith(".tmp") or ".detnas-" in Path(path).name:
                reasons.append(f"data lost: temporary {path} left behind")
            elif digest == "empty":
                reasons.append(f"data lost: 0-byte {path} left behind")
            elif refused and case.code != 0:
                reasons.append(f"wrong message: refused late, after writing {path}")
    if "Traceback" in stderr:
        reasons.append("traceback: " + (stderr.strip().splitlines() or [""])[-1][:200])
    if code == 0 and case.code != 0:
        reasons.append("silent: exit 0 where a refusal was due")
    elif code is not None and code != case.code:
        reasons.append(f"wrong message: exit code {code}, expected {case.code}")
    if case.code != 0 and code not in (0, None):
        if not error_line:
            reasons.append("wrong message: no 'error:' line on stderr")
        elif len(errors) > 1:
            reasons.append(f"wrong message: {len(errors)} 'error:' lines")
        elif not re.search(case.message, error_line):
            reasons.append(f"wrong message: the error line does not match /{case.message}/")
    if case.code == 0 and code == 0 and case.message and not re.search(case.message, " ".join((stdout + stderr).split())):
        reasons.append(f"wrong message: no output matches /{case.message}/")
    if case.check is not None and code == case.code:
        problem = case.check(work)
        if problem:
            reasons.append(problem)
    verdict = "clean"
    for name in VERDICTS[1:]:
        if any(r.startswith(name) for r in reasons):
            verdict = name
    return Outcome(case.name, case.category, argv, verdict, code, case.code, error_line, reasons, round(seconds, 2),
                   stderr[-600:])


_OWN_FILES = {"stdout.txt", "stderr.txt", "killed.stdout", "killed.stderr", HARNESS_ERROR}


def run_cases(cases: list[Case], fx: Fixtures, work: Path, jobs: int = 2, timeout_s: float = 120.0,
              log=print) -> list[Outcome]:
    """Run `cases` (at most `jobs` processes at a time), each in `work/<name>`; the outcomes in case order. A case
    still running after `timeout_s` is killed (with what it started) and judged on what it left."""
    pending = list(enumerate(cases))
    running: dict[int, tuple[int, Case, float]] = {}
    outcomes: dict[int, Outcome] = {}
    while pending or running:
        while pending and len(running) < jobs:
            index, case = pending.pop(0)
            folder = work / case.name
            folder.mkdir(parents=True)
            pid = os.fork()
            if pid == 0:
                try:
                    os.setpgid(0, 0)
                    _case_process(case, fx, folder, work / f"{case.name}.record.json")
                except BaseException:  # the harness's own failure (setup, mounts): the case is not run
                    (folder / HARNESS_ERROR).write_text(traceback.format_exc())
                finally:
                    os._exit(0)
            running[pid] = (index, case, time.perf_counter())
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for other, (_, _, started) in list(running.items()):
                if time.perf_counter() - started > timeout_s:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(other, signal.SIGKILL)
            time.sleep(0.05)
            continue
        if pid not in running:
            continue
        index, case, start = running.pop(pid)
        seconds = time.perf_counter() - start
        record_path = work / f"{case.name}.record.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else None
        outcomes[index] = _judge(case, work / case.name, record, seconds, expand(case.argv, work / case.name, fx),
                                 timed_out=seconds > timeout_s)
        o = outcomes[index]
        log(f"{len(outcomes):4d}/{len(cases)} {o.verdict:13s} {o.seconds:6.1f}s {case.name}"
            + (f"  [{'; '.join(o.reasons)[:160]}]" if o.reasons else ""))
    return [outcomes[i] for i in range(len(cases))]


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    tally = Counter(o.verdict for o in outcomes)
    return {v: tally.get(v, 0) for v in (*VERDICTS, NOT_RUN)}


def _preload() -> None:
    """Import what the commands import, once, before the cases are forked (no computation: a fork after an OpenMP
    parallel region could hang)."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import detnas.cli.main  # noqa: F401
    import detnas.evaluation  # noqa: F401
    import detnas.export.api  # noqa: F401
    import detnas.search.runner  # noqa: F401
    import detnas.train  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file of the counts and every case's outcome")
    parser.add_argument("--fixtures", help="folder of the shared fixtures: built there when missing, reused after")
    parser.add_argument("--work", help="folder for the cases' files (default: a temporary folder, removed)")
    parser.add_argument("--only", help="run only the cases whose name matches this regex")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at a time")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a case may run before it is killed")
    args = parser.parse_args()
    from detnas.io import atomic_write_json, check_writable

    check_writable(args.out, "--out")
    cases = [c for c in CASES if not args.only or re.search(args.only, c.name)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="detnas-bad-input-") as scratch:
        fixtures_root = Path(args.fixtures) if args.fixtures else Path(scratch) / "fixtures"
        if not (fixtures_root / "done").exists():
            print(f"building fixtures in {fixtures_root}")
            _in_child(lambda: build(fixtures_root))
            (fixtures_root / "done").write_text("")
        fx = Fixtures(fixtures_root)
        fixtures_s = time.perf_counter() - start
        _preload()
        work = Path(args.work) if args.work else Path(scratch) / "cases"
        work.mkdir(parents=True, exist_ok=False)
        outcomes = run_cases(cases, fx, work, args.jobs, args.timeout)
    tally = counts(outcomes)
    total = time.perf_counter() - start
    print(f"{len(outcomes)} cases in {total:.0f} s ({fixtures_s:.0f} s of it building fixtures), {args.jobs} at a time: "
          + ", ".join(f"{n} {v}" for v, n in tally.items()))
    by_category: dict[str, Counter] = {}
    for o in outcomes:
        by_category.setdefault(o.category, Counter())[o.verdict] += 1
    for category, tally_c in by_category.items():
        print(f"  {category:28s} " + ", ".join(f"{n} {v}" for v, n in tally_c.items()))
    for o in outcomes:
        if o.verdict != "clean":
            print(f"{o.verdict:13s} {o.name}: {'; '.join(o.reasons)}")
    atomic_write_json(args.out, {"counts": tally, "cases": len(outcomes), "seconds": total,
                                 "fixtures_seconds": fixtures_s, "jobs": args.jobs,
                                 "by_category": {k: dict(v) for k, v in by_category.items()},
                                 "outcomes": [asdict(o) for o in outcomes]})
    print(f"wrote {args.out}")


def _in_child(work) -> None:
    """Run `work` in a forked process (torch computes there, never in the process the cases fork from)."""
    pid = os.fork()
    if pid == 0:
        try:
            work()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("building the fixtures failed (see above)")


if __name__ == "__main__":
    from detnas.bench.suite import run_suite

    run_suite(main)
