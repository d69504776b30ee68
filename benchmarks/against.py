"""Two checkouts of gptlab side by side, in one run: this one ("here") and another ("there", the code before a change).

Each measure runs in fresh processes, each importing gptlab from one checkout, the two alternating (here, there,
here, there, ...) so that load on the machine hits both alike. It prints every value, each side's median and the
ratio of the medians (here / there), as a markdown table (benchmarks/step.md keeps the figures). The measures:

- ``step``: ms per training step, training steps only (``profile_step.py --time-only``): the ``lecture`` preset on
  one thread, the ``cpu`` preset at its automatic thread count;
- ``process``: the whole ``gptlab train --preset lecture`` command, wall time, and in the same alternation the
  lecture's own recipe (``reference.train_lecture``, its script's defaults) as a process of its own, once a
  pair: each checkout's command as a share of it;
- ``startup``: ``import gptlab.cli, gptlab.train`` in a fresh interpreter, what ``gptlab train`` loads first;
- ``--grid NAME``: ``gptlab ablate NAME --force`` into a fresh folder, wall time (minutes a side).

Usage: ``python benchmarks/against.py ../before [--pairs 3] [--measures step process startup] [--grid lecture]``;
``git worktree add ../before COMMIT`` makes the other checkout. ``--quick`` shrinks every run to a smoke test.
"""

from __future__ import annotations

import argparse
import os
import platform
from statistics import median
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parents[1]
PROFILE_STEP = HERE / "benchmarks" / "profile_step.py"
MEASURES = ("step", "process", "startup")
# --quick: every run cut to a smoke test of the plumbing (its figures mean nothing)
QUICK_TRAIN = ["--set", "train.max_iters=40", "--set", "train.eval_interval=20", "--set", "train.eval_windows=64"]


@dataclass
class Measure:
    """One row: the command a checkout runs (in a scratch folder) and how its output gives the value."""

    name: str
    unit: str
    command: Callable[[Path], list[str]]  # a scratch folder -> argv
    value: Callable[[str, float], float] = lambda stdout, wall: wall  # (stdout, wall seconds) -> value
    values: dict[str, list[float]] = field(default_factory=dict)


def last_number(stdout: str, wall: float) -> float:
    return float(stdout.split()[-1])


def step_measure(preset: str, steps: int, threads: int, label: str) -> Measure:
    return Measure(f"`{preset}` training step, {label}", "ms",
                   lambda scratch: [sys.executable, str(PROFILE_STEP), "--time-only", "--preset", preset,
                                    "--steps", str(steps), "--threads", str(threads)], last_number)


def measures(args: argparse.Namespace) -> list[Measure]:
    quick = args.quick
    rows = []
    if "step" in args.measures:
        rows += [step_measure("lecture", 30 if quick else 1500, 1, "one thread"),
                 step_measure("cpu", 4 if quick else 300, 0, "automatic threads")]
    if "process" in args.measures:
        rows.append(Measure("`gptlab train --preset lecture`, the whole command", "s",
                            lambda scratch: [sys.executable, "-m", "gptlab.cli", "train", "--preset", "lecture",
                                             "--out", str(scratch / "out"), *(QUICK_TRAIN if quick else [])]))
    if "startup" in args.measures:
        rows.append(Measure("start-up: `import gptlab.cli, gptlab.train`", "s",
                            lambda scratch: [sys.executable, "-c", "import gptlab.cli, gptlab.train"]))
    if args.grid:
        grid_quick = ["--seeds", "1", "--set", "train.max_iters=20", "--set", "train.eval_windows=64"] if quick else []
        rows.append(Measure(f"`gptlab ablate {args.grid} --force`, the whole grid", "s",
                            lambda scratch: [sys.executable, "-m", "gptlab.cli", "ablate", args.grid, "--force",
                                             "--out", str(scratch / "grid"), *grid_quick]))
    return rows


def timed(command: Callable[[Path], list[str]], tree: Path | None) -> tuple[str, float]:
    """Run ``command`` in a fresh scratch folder, importing gptlab from ``tree``: (stdout, wall seconds)."""
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else dict(os.environ)
    with tempfile.TemporaryDirectory() as scratch:
        argv = command(Path(scratch))
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=scratch, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout, wall


def run_measure(measure: Measure, trees: dict[str, Path]) -> None:
    for side, tree in trees.items():
        stdout, wall = timed(measure.command, tree)
        measure.values.setdefault(side, []).append(measure.value(stdout, wall))


def lecture_recipe(quick: bool) -> None:
    """The lecture's own recipe as a process (the body of ``--lecture-recipe``)."""
    import dataclasses

    import torch

    sys.path.insert(0, str(HERE / "benchmarks"))
    import reference as ref

    config = ref.LectureConfig()
    if quick:
        config = dataclasses.replace(config, max_iters=40, eval_interval=20, eval_iters=5)
    text = (HERE / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    ref.train_lecture(text, config, torch.device("cpu"), ref.Hooks(lambda: None, lambda step, val: None))


def table(rows: list[Measure], recipe: list[float], trees: dict[str, Path]) -> str:
    here, there = trees
    lines = [f"| measure | {here} | {there} | {here} / {there} (medians) |", "| --- | --- | --- | --- |"]
    for m in rows:
        cells = [" ".join(f"{v:.2f}" for v in m.values[side]) + f" (median {median(m.values[side]):.2f} {m.unit})"
                 for side in trees]
        lines.append(f"| {m.name} | {cells[0]} | {cells[1]} | {median(m.values[here]) / median(m.values[there]):.3f} |")
    if recipe:
        process = next(m for m in rows if m.name.startswith("`gptlab train"))
        shares = [median(process.values[side]) / median(recipe) for side in trees]
        lines.append(f"| the lecture's own recipe, the whole process (once a pair) | "
                     f"{' '.join(f'{v:.2f}' for v in recipe)} (median {median(recipe):.2f} s) | | |")
        lines.append(f"| `gptlab train --preset lecture` / the lecture's recipe | {shares[0]:.3f} | {shares[1]:.3f} | "
                     f"{shares[0] / shares[1]:.3f} |")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit_of(tree: Path) -> str:
    """The checkout's commit, and '+ changes' where its tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True).stdout.strip()

    return f"{git('rev-parse', '--short', 'HEAD') or '?'}{' + changes' if git('status', '--porcelain', '--', 'gptlab') else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("there", type=Path, nargs="?", help="the other checkout (the code before)")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--measures", nargs="*", choices=MEASURES, default=list(MEASURES))
    parser.add_argument("--grid", help="also time `gptlab ablate GRID --force` on each side")
    parser.add_argument("--quick", action="store_true", help="every run cut short: a smoke test")
    parser.add_argument("--lecture-recipe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.lecture_recipe:
        lecture_recipe(args.quick)
        return 0
    if args.there is None or not (args.there / "gptlab" / "__init__.py").is_file():
        parser.error(f"there = {args.there}: not a checkout of gptlab (no gptlab/__init__.py in it)")
    if args.pairs < 1:
        parser.error(f"--pairs = {args.pairs} is not allowed; must be >= 1")
    trees = {"here": HERE, "there": args.there.resolve()}
    rows = measures(args)
    recipe: list[float] = []
    print(f"here: {HERE} at {commit_of(HERE)}; there: {trees['there']} at {commit_of(trees['there'])}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average at the "
          f"start {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    for i in range(args.pairs):
        for m in rows:
            run_measure(m, trees)
            print(f"pair {i + 1}/{args.pairs}: {m.name}: here {m.values['here'][-1]:.2f}, "
                  f"there {m.values['there'][-1]:.2f} {m.unit}", flush=True)
        if "process" in args.measures:
            recipe.append(timed(lambda scratch: [sys.executable, __file__, "--lecture-recipe",
                                                 *(["--quick"] if args.quick else [])], None)[1])
            print(f"pair {i + 1}/{args.pairs}: the lecture's recipe {recipe[-1]:.2f} s", flush=True)
    print()
    print(table(rows, recipe, trees))
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
