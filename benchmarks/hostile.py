"""Hostile inputs and faults, re-measured as a user meets them: the real ``gptlab`` command in a subprocess, each
case in a fresh temporary folder, each command with a time limit.

    python benchmarks/hostile.py                     # every case: ~5 minutes (308 s on 2 shared cores, load 3)
    python benchmarks/hostile.py --only =nan         # the cases whose name holds a substring (repeatable)

One row per case: case, command (the one shown; QUICK stands for the tiny-run --set flags), its exit code and
seconds, the first line of its output, and the verdict with its reason; then "N good, M bad of K". Exit 1 when a
case is bad.

A refused case is good when it exits 2 within a few seconds with exactly one ``error:`` line that names the field
or value, and no "Traceback" anywhere in stdout or stderr. A fault case is good when it ends with exit 0 (1 where
runs failed, 130 for an interrupt) and nothing finished is lost. tests/test_hostile.py, tests/test_grid.py and
tests/test_runner.py check the same cases in-process; this script runs the real command line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

QUICK = ["--set", "train.max_iters=4", "--set", "train.eval_interval=2", "--set", "train.eval_windows=8"]
QUICK_SET = "train.max_iters: 4, train.eval_interval: 2, train.eval_windows: 8"
FEW_SECONDS = 20.0  # a refusal, startup included: `ablate` imports and checks for ~12 s on 2 cores at load 5
TRAIN_S = 180       # the limit of a command that trains
SCRIPT = Path(sys.executable).with_name("gptlab")
GPTLAB = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "gptlab.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


class Bad(Exception):
    """The case did not behave as specified; the message says how."""


def interruptible() -> None:
    """In a started command, before exec: SIGINT at its default, as in a terminal's foreground. Started from a
    background job of a non-interactive shell, it would inherit SIGINT ignored and never see the Ctrl-C case's
    interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def check(ok: bool, why: str) -> None:
    if not ok:
        raise Bad(why)


@dataclass
class Run:
    """One finished command: its arguments, exit code, seconds and stdout + stderr (interleaved)."""

    args: list[str]
    code: int
    seconds: float
    output: str

    @property
    def flat(self) -> str:
        return " ".join(self.output.split())

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.output.splitlines() if line.strip()), "")


@dataclass(frozen=True)
class Started:
    process: subprocess.Popen[bytes]
    args: list[str]
    began: float
    log: Path


@dataclass
class Lab:
    """A fresh folder to run ``gptlab`` in (the working directory of every command) and the commands run."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    shown: Run | None = None
    started: list[Started] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.root / "work"

    def write(self, name: str, text: str) -> Path:
        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def start(self, *args: str, umask: int = -1) -> subprocess.Popen[bytes]:
        """Start ``gptlab ARGS`` in its own session (its process group is its pid), output to a log file."""
        log = self.root / f"cmd{len(self.started)}.log"
        with open(log, "wb") as sink:
            process = subprocess.Popen(GPTLAB + list(args), cwd=self.work, env=ENV, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True, umask=umask,
                                       preexec_fn=interruptible)
        self.started.append(Started(process, list(args), time.monotonic(), log))
        return process

    def wait(self, process: subprocess.Popen[bytes], timeout: float, show: bool = False) -> Run:
        started = next(s for s in self.started if s.process is process)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
            raise Bad(f"no answer in {timeout:.0f} s: killed (a hang)") from None
        run = Run(started.args, process.returncode, time.monotonic() - started.began,
                  started.log.read_text(errors="replace"))
        self.runs.append(run)
        if show:
            self.shown = run
        return run

    def gptlab(self, *args: str, timeout: float = TRAIN_S, show: bool = False, umask: int = -1) -> Run:
        return self.wait(self.start(*args, umask=umask), timeout, show)

    def close(self) -> None:
        for started in self.started:
            kill_group(started.process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command and every worker it spawned (they share its process group), if any is left."""
    if process.poll() is None or left_in_group(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


def left_in_group(pgid: int) -> list[str]:
    """The command lines of the processes still running in process group ``pgid`` (zombies aside; Linux /proc)."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # gone meanwhile
        if state != "Z" and int(group) == pgid:
            left.append(command.strip())
    return left


# -- checks shared by the cases ------------------------------------------------------------------------------


def no_traceback(run: Run) -> None:
    check("Traceback" not in run.output, f"a traceback: {last_line(run)}")


def last_line(run: Run) -> str:
    lines = [line.strip() for line in run.output.splitlines() if line.strip()]
    return lines[-1][:120] if lines else "(no output)"


def expect_refusal(run: Run, message: str) -> str:
    """Exit 2, one ``error:`` line holding ``message``, no traceback, within a few seconds."""
    no_traceback(run)
    errors = [line for line in run.output.splitlines() if line.startswith("error")]
    check(run.code == 2, f"exit {run.code}, not 2: {last_line(run)}")
    check(len(errors) == 1, f"{len(errors)} error lines, not one")
    check(message in " ".join(errors[0].split()), f"the error does not say {message!r}")
    check(run.seconds < FEW_SECONDS, f"refused, but after {run.seconds:.1f} s")
    return f"refused in one line: {message!r}"


def expect_exit(run: Run, code: int = 0) -> None:
    no_traceback(run)
    check(run.code == code, f"exit {run.code}, not {code}: {last_line(run)}")


def records(runs_dir: Path) -> dict[str, bytes]:
    """File name -> bytes of every run record of a grid."""
    return {p.name: p.read_bytes() for p in sorted(runs_dir.glob("*.json"))}


def planned(run: Run) -> tuple[int, int]:
    """(already done, to run) of an ``ablate`` title line."""
    found = re.search(r"(\d+) already done, (\d+) to run", run.flat)
    check(found is not None, f"no 'already done, to run' line: {run.first_line}")
    assert found is not None
    return int(found[1]), int(found[2])


def grid_file(name: str, axis: str, extra_set: str = "") -> str:
    """A grid of tiny bigram runs varying ``axis`` (YAML mapping items, e.g. ``train.lr: [0.01, 0.02]``)."""
    sets = QUICK_SET + (f", {extra_set}" if extra_set else "")
    return f"name: {name}\npreset: bigram\nset: {{{sets}}}\ngrid: {{{axis}}}\n"


def alias_bomb(key: str) -> str:
    """A grid file whose ``key`` is a billion laughs: 9 levels of 9 aliases of the level below (9^9 items)."""
    levels = "abcdefghi"
    items = ["&a [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&{b} [" + ", ".join([f"*{a}"] * 9) + "]" for a, b in itertools.pairwise(levels)]
    return f"name: bomb\ngrid: {{model.n_layer: [1]}}\n{key}: [{', '.join(items)}]\n"


def huge_grid() -> str:
    values = "[" + ", ".join(str(v) for v in range(1, 11)) + "]"
    keys = ["model.n_layer", "model.n_head", "model.block_size", "model.ffn_mult", "model.n_embd", "train.eval_windows"]
    return "name: huge\ngrid: {" + ", ".join(f"{k}: {values}" for k in keys) + "}\n"


def save_checkpoint(lab: Lab, payload: object, name: str = "ckpt.pt") -> None:
    import torch

    torch.save(payload, lab.work / name)


class Evil:
    """Unpickling this creates the folder ``path``: code a checkpoint must never run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (str(self.path),)


# -- the cases -----------------------------------------------------------------------------------------------

CaseFn = Callable[[Lab], str]  # runs the case in the lab; returns why it is good, raises Bad


@dataclass(frozen=True)
class Case:
    name: str
    run: CaseFn


def refused(*args: str, message: str, setup: Callable[[Lab], object] | None = None,
            written: tuple[str, ...] = ()) -> CaseFn:
    """A case that must be refused in one line naming ``message``; ``written``: paths that must not appear."""

    def case(lab: Lab) -> str:
        if setup is not None:
            setup(lab)
        reason = expect_refusal(lab.gptlab(*args, timeout=60, show=True), message)
        for path in written:
            check(not (lab.work / path).exists(), f"refused, but wrote {path}")
        return reason + (f"; nothing written ({', '.join(written)})" if written else "")

    return case


def writes(name: str, text: str) -> Callable[[Lab], Path]:
    return lambda lab: lab.write(name, text)


def a_checkpoint(lab: Lab) -> None:
    expect_exit(lab.gptlab("train", "--preset", "bigram", *QUICK, "--out", "o", "--sample-tokens", "0"))


def wrong_checkpoint(payload: object) -> Callable[[Lab], None]:
    return lambda lab: save_checkpoint(lab, payload)


def malicious_checkpoint(lab: Lab) -> None:
    save_checkpoint(lab, {"format": "gptlab-checkpoint-1", "config": Evil(lab.work / "pwned")})


def bad_record(field_name: str, value: object) -> CaseFn:
    """A trained grid; one record's field gets a wrong type; ``report`` names it, ``ablate`` retrains only it."""

    def case(lab: Lab) -> str:
        lab.write("g.yaml", grid_file("g", "train.lr: [0.01, 0.02]"))
        expect_exit(lab.gptlab("ablate", "g.yaml", "--out", "r"))
        runs = lab.work / "r" / "g" / "runs"
        before = records(runs)
        broken, kept = sorted(before)
        raw = json.loads(before[broken])
        (runs / broken).write_text(json.dumps({**raw, field_name: value}, indent=1))
        report = lab.gptlab("report", "r", timeout=60)
        expect_exit(report)
        check(broken in report.flat and f"field {field_name}" in report.flat, "report does not name the bad record")
        again = lab.gptlab("ablate", "g.yaml", "--out", "r", show=True)
        expect_exit(again)
        check(planned(again) == (1, 1), f"ablate planned {planned(again)} (done, to run), not (1, 1)")
        after = records(runs)
        check(after[kept] == before[kept], "the good record was rewritten")
        fixed = json.loads(after[broken])
        check(isinstance(fixed[field_name], type(raw[field_name])), "the bad record is still there")
        return "report names it (skipped), ablate retrains it alone: 1 done, 1 to run; the other record untouched"

    return case


def wrong_manifest(lab: Lab) -> None:
    lab.write("r/g/grid.json", json.dumps({"name": "g", "preset": "bigram", "variants": 5, "seeds": [1],
                                           "baseline": "a"}))
    (lab.work / "r" / "g" / "runs").mkdir()


def big_corpus(lab: Lab) -> str:
    line = "First Citizen: Before we proceed any further, hear me speak.\n"
    lab.write("big.txt", line * (30_000_000 // len(line) + 1))
    run = lab.gptlab("train", "--data", "big.txt", "--preset", "bigram", *QUICK, "--out", "o", show=True)
    expect_exit(run)
    check((lab.work / "o" / "ckpt.pt").is_file(), "no checkpoint written")
    return f"trained on 30M characters in {run.seconds:.0f} s"


def diverged(lab: Lab) -> str:
    """The lecture preset (as tests/test_hostile.py): a bigram at lr=1e6 keeps a finite loss (~1e18), no NaN."""
    run = lab.gptlab("train", "--preset", "lecture", *QUICK, "--set", "train.lr=1e6", "--out", "o", show=True)
    expect_exit(run)
    check("diverged" in run.output, "no 'diverged' line")
    check("sample" not in run.output.split("wrote")[-1], "a sample of a diverged model was printed")
    check(json.loads((lab.work / "o" / "result.json").read_text())["diverged_at"] is not None,
          "result.json lacks diverged_at")
    return "exit 0, 'diverged at step N; no sample', result.json keeps diverged_at"


def no_newline(lab: Lab) -> str:
    lab.write("one-line.txt", "to be or not to be that is the question " * 400)
    lab.write("g.yaml", grid_file("g", "train.lr: [0.01, 0.02]", "data.path: one-line.txt"))
    expect_exit(lab.gptlab("ablate", "g.yaml", "--out", "r"))
    kept = [json.loads(b) for b in records(lab.work / "r" / "g" / "runs").values()]
    check(len(kept) == 2, f"{len(kept)} records, not 2")
    check(all(r["sample"].startswith(" ") for r in kept), "a record without its sample (prompted with ' ')")
    run = lab.gptlab("train", "--data", "one-line.txt", "--preset", "bigram", *QUICK, "--out", "t", show=True)
    expect_exit(run)
    return "ablate keeps both records (samples prompted with ' '), train exits 0"


def renamed_record(lab: Lab) -> str:
    lab.write("a.yaml", grid_file("a", "train.lr: [0.01]"))
    lab.write("b.yaml", grid_file("b", "train.lr: [0.02]"))
    expect_exit(lab.gptlab("ablate", "a.yaml", "--out", "r"))
    expect_exit(lab.gptlab("ablate", "b.yaml", "--out", "r"))
    (theirs,), (ours,) = (list((lab.work / "r" / g / "runs").glob("*.json")) for g in ("a", "b"))
    ours.write_bytes(theirs.read_bytes())  # grid a's record under grid b's key
    run = lab.gptlab("ablate", "b.yaml", "--out", "r", show=True)
    expect_exit(run)
    check(planned(run) == (0, 1), f"ablate planned {planned(run)} (done, to run): the copied record counted")
    now = json.loads(ours.read_text())
    check(now["grid"] == "b" and now["config"]["train"]["lr"] == 0.02, "the copied record is still there")
    return "not counted as done (0 done, 1 to run): retrained, b's own record again"


def two_processes(lab: Lab) -> str:
    lab.write("g.yaml", "name: g\npreset: bigram\nset: {train.max_iters: 600, train.eval_interval: 300, "
                        "train.eval_windows: 64}\ngrid: {train.lr: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}\n")
    first = lab.start("ablate", "g.yaml", "--out", "out")
    time.sleep(1.0)
    second = lab.gptlab("ablate", "g.yaml", "--out", "out", timeout=300, show=True)
    one = lab.wait(first, 300)
    expect_exit(one)
    expect_exit(second)
    trained = [planned(r)[1] - r.flat.count("held by ") for r in (one, second)]  # to run, less those held
    runs = lab.work / "out" / "g" / "runs"
    check(len(records(runs)) == 6 and not list(runs.glob("*.lock")), "not 6 records, or a lock left")
    check(sum(trained) == 6, f"trained {trained[0]} + {trained[1]} runs, not 6 in all")
    check("held by pid" in one.flat + second.flat, "no 'held by pid' seen")
    return f"6 records, each trained once ({trained[0]} + {trained[1]}), 'held by pid' seen, no lock left"


TINY_GRID = ("name: tiny\npreset: bigram\nset: {train.max_iters: ITERS, train.eval_interval: 200, "
             "train.eval_windows: 256}\ngrid: {train.lr: [0.01, 0.02, 0.03, 0.04, 0.05]}\nseeds: [1]\n")
TINY = ["ablate", "tiny.yaml", "--out", "out", "--jobs", "1"]


def first_record(lab: Lab, iters: int) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the 5-run tiny grid; return once its first record is written."""
    lab.write("tiny.yaml", TINY_GRID.replace("ITERS", str(iters)))
    runs = lab.work / "out" / "tiny" / "runs"
    process = lab.start(*TINY)
    deadline = time.monotonic() + TRAIN_S
    while not (runs.is_dir() and any(runs.glob("*.json"))):
        check(process.poll() is None, f"ablate ended (exit {process.returncode}) before a record")
        check(time.monotonic() < deadline, f"no record in {TRAIN_S} s")
        time.sleep(0.05)
    return process, runs


def kill_9(lab: Lab) -> str:
    process, runs = first_record(lab, 400)
    os.killpg(process.pid, signal.SIGKILL)
    lab.wait(process, 30)
    time.sleep(1.5)
    kept = records(runs)
    rerun = lab.gptlab(*TINY, show=True)
    expect_exit(rerun)
    check(planned(rerun) == (len(kept), 5 - len(kept)), f"planned {planned(rerun)} with {len(kept)} records kept")
    after = records(runs)
    check(len(after) == 5 and not list(runs.glob("*.lock")), f"{len(after)} records after the rerun, or a lock left")
    check(all(after[name] == data for name, data in kept.items()), "a finished record was rewritten")
    return f"{len(kept)} records kept byte for byte, only {5 - len(kept)} trained again"


def interrupt(lab: Lab) -> str:
    process, runs = first_record(lab, 4000)
    time.sleep(0.5)
    kept = records(runs)
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGINT)  # the parent alone: it must stop its workers
    run = lab.wait(process, 30, show=True)
    stop_s = time.monotonic() - stopped_at
    expect_exit(run, 130)
    check(stop_s < 5, f"stopped {stop_s:.1f} s after SIGINT")
    time.sleep(1.0)
    left = left_in_group(process.pid)
    check(not left, f"still running: {cut('; '.join(left), 100)}")
    after = records(runs)
    check(all(after.get(name) == data for name, data in kept.items()) and not list(runs.glob("*.lock")),
          "a finished record was lost, or a lock left")
    return f"exit 130 {stop_s:.1f} s after SIGINT, no worker left, {len(after)} finished records kept"


def umask_022(lab: Lab) -> str:
    lab.write("g.yaml", grid_file("g", "train.lr: [0.01]"))
    expect_exit(lab.gptlab("ablate", "g.yaml", "--out", "r", umask=0o022, show=True))
    folder = lab.work / "r" / "g"
    files = [*folder.glob("runs/*.json"), folder / "grid.json", folder / "README.md", folder / "results.csv"]
    modes = {p.relative_to(folder).as_posix(): oct(p.stat().st_mode & 0o777) for p in files if p.exists()}
    check(len(modes) == 4, f"missing: {sorted({str(p.relative_to(folder)) for p in files} - set(modes))}")
    wrong = {name: mode for name, mode in modes.items() if mode != "0o644"}
    check(not wrong, f"not 0644: {wrong}")
    return "record, grid.json, README.md, results.csv: 0644"


CKPT = {"format": "gptlab-checkpoint-1"}
VOCAB_65 = "".join(chr(c) for c in range(ord("A"), ord("A") + 65))
WRONG_CHECKPOINTS = [  # tests/test_hostile.py's payloads, and one with a vocabulary that gets past the first check
    ("ckpt: format only", CKPT, "it has no 'config' (a gptlab checkpoint holds config, vocab and model)"),
    ("ckpt: config.model=5", {**CKPT, "config": {"model": 5}, "vocab": "ab", "model": {}},
     "config.model = 5: must be a mapping of field -> value"),
    ("ckpt: vocab 2, vocab_size 3", {**CKPT, "config": {"model": {"vocab_size": 3}}, "vocab": "ab", "model": {}},
     "its vocabulary (2) does not match model.vocab_size = 3"),
    ("ckpt: n_embd=1e11, vocab a*65", {**CKPT, "config": {"model": {"n_embd": 10**11, "n_head": 1}}, "vocab": "a" * 65,
                                       "model": {}}, "its vocabulary repeats characters (1 distinct of 65)"),
    ("ckpt: n_embd=1e11, 65 chars", {**CKPT, "config": {"model": {"n_embd": 10**11, "n_head": 1}}, "vocab": VOCAB_65,
                                     "model": {}}, "GiB for its weights (model.n_embd = 100000000000"),
]
BOMB = "the alias *b refers to a nested mapping or list"
DUPLICATE = "name: x\nname: y\ngrid: {model.n_layer: [1]}\n"
PYTHON_TAG = "name: !!python/object/apply:os.system ['mkdir pwned']\ngrid: {model.n_layer: [1]}\n"


def a_folder(lab: Lab) -> None:
    (lab.work / "corpus").mkdir()


def cases() -> Iterator[Case]:
    # tracebacks -> one line, exit 2
    for key, value, expected in [("train.lr", "nan", "a finite number"), ("train.lr", "inf", "a finite number"),
                                 ("train.grad_clip", "nan", "a finite number"),
                                 ("train.seed", "99999999999999999999999", "an integer")]:
        yield Case(f"{key}={value}", refused("train", "--set", f"{key}={value}",
                                             message=f"{key} = {value} is not allowed; expected {expected}"))
    yield Case("n_embd=1e11 (memory)", refused("train", "--set", "model.n_embd=100000000000", "--set", "model.n_head=1",
                                               message="this run needs about"))
    yield Case("train --out FILE", refused("train", "--preset", "bigram", *QUICK, "--out", "README.md",
                                           setup=writes("README.md", "x"),
                                           message="--out = 'README.md': a file (or inside one)"))
    yield Case("ablate --out FILE", refused("ablate", "masking", *QUICK, "--out", "README.md",
                                            setup=writes("README.md", "x"),
                                            message="README.md/masking/grid.json: cannot write there"))
    yield Case("record final_val_loss='abc'", bad_record("final_val_loss", "abc"))
    yield Case("record history=5", bad_record("history", 5))
    yield Case("grid.json variants=5", refused("report", "r", setup=wrong_manifest,
                                               message="grid.json: variants: must be a non-empty list"))
    for name, payload, message in WRONG_CHECKPOINTS:
        yield Case(name, refused("sample", "ckpt.pt", setup=wrong_checkpoint(payload), message=message))
    yield Case("30M-character corpus", big_corpus)
    # lost or wasted work
    yield Case("diverged run (lr=1e6)", diverged)
    yield Case("corpus without newlines", no_newline)
    yield Case("ablate data.path=missing", refused("ablate", "masking", "--set", "data.path=missing.txt", "--out", "r",
                                                   message="data.path = 'missing.txt': no such file", written=("r",)))
    yield Case("record renamed to our key", renamed_record)
    yield Case("two ablate processes", two_processes)
    yield Case("kill -9 mid-grid, rerun", kill_9)
    # hangs
    for key in ("seeds", "title", "insight"):
        yield Case(f"alias bomb in {key}:", refused("ablate", "bomb.yaml", "--dry-run", message=BOMB,
                                                    setup=writes("bomb.yaml", alias_bomb(key))))
    yield Case("10^6-combination grid", refused("ablate", "huge.yaml", "--dry-run",
                                                setup=writes("huge.yaml", huge_grid()),
                                                message="grid: 1,000,000 combinations x 1 seeds = 1,000,000 runs"))
    yield Case("sample --tokens 10^9", refused("sample", "o/ckpt.pt", "--tokens", "1000000000", setup=a_checkpoint,
                                               message="tokens = 1000000000 is not allowed; must be in 1..100,000"))
    yield Case("SIGINT to the ablate parent", interrupt)
    # small
    yield Case("duplicate key in a grid", refused("ablate", "dup.yaml", "--dry-run",
                                                  setup=writes("dup.yaml", DUPLICATE),
                                                  message="duplicate key 'name' at line 2"))
    yield Case("umask 022 -> 0644", umask_022)
    yield Case("train --sample-tokens -5", refused("train", "--sample-tokens", "-5",
                                                   message="--sample-tokens = -5 is not allowed; must be in 0.."))
    yield Case("train --data FOLDER", refused("train", "--data", "corpus", setup=a_folder,
                                              message="data.path = 'corpus': a folder; give a text file"))
    # already good at the start
    yield Case("malicious pickle checkpoint", refused("sample", "ckpt.pt", setup=malicious_checkpoint,
                                                      written=("pwned",), message="not a readable gptlab checkpoint"))
    yield Case("grid name ../evil", refused("ablate", "evil.yaml", "--out", "r", written=("evil", "r"),
                                            setup=writes("evil.yaml", grid_file("../evil", "train.lr: [0.01]")),
                                            message="name: '../evil' is not allowed"))
    yield Case("!!python/object/apply tag", refused("ablate", "tag.yaml", "--dry-run", written=("pwned",),
                                                    setup=writes("tag.yaml", PYTHON_TAG), message="not valid YAML"))


# -- the table -----------------------------------------------------------------------------------------------

COLUMNS = [("case", 28), ("command", 46), ("exit", 4), ("s", 5), ("first line", 40)]


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short(args: list[str]) -> str:
    return "gptlab " + " ".join(args).replace(" ".join(QUICK), "QUICK")


def row(*cells: str) -> str:
    return "  ".join(cut(c, w).ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=False)) + "  " + cells[-1]


def run_case(case: Case) -> bool:
    root = Path(tempfile.mkdtemp(prefix="gptlab-hostile-"))
    lab = Lab(root)
    lab.work.mkdir()
    try:
        good, reason = True, case.run(lab)
    except Bad as err:
        good, reason = False, str(err)
    except Exception as err:  # the case found something it did not expect (a file not written, say)
        good, reason = False, f"{type(err).__name__}: {err}"
    finally:
        lab.close()
    shown = lab.shown or (lab.runs[-1] if lab.runs else None)
    cells = [short(shown.args), str(shown.code), f"{shown.seconds:.1f}", shown.first_line] if shown else [""] * 4
    print(row(case.name, *cells, f"{'good' if good else 'BAD'}: {reason}"), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="SUBSTRING",
                        help="run only the cases whose name holds SUBSTRING (repeatable)")
    args = parser.parse_args(argv)
    chosen = [c for c in cases() if not args.only or any(s.lower() in c.name.lower() for s in args.only)]
    if not chosen:
        print(f"no case matches {args.only}", file=sys.stderr)
        return 2
    started = time.monotonic()
    print(row(*(name for name, _ in COLUMNS), "verdict"))
    print("-" * 150)
    goods = [run_case(case) for case in chosen]
    print(f"\n{sum(goods)} good, {goods.count(False)} bad of {len(goods)} ({time.monotonic() - started:.0f} s)")
    return 0 if all(goods) else 1


if __name__ == "__main__":
    sys.exit(main())
