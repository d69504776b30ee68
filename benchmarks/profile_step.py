"""Where a training step's time goes: ``gptlab.train.train`` run under torch's profiler, each phase labelled.

The phases are the trainer's own calls, wrapped in ``record_function`` here (the library is not edited): drawing
the batch (``Batches.batch`` and the stack), the forward pass (``losses``), the backward pass, clipping,
``zero_grad``, the optimizer's step and the evaluations. Prints, per training step, each phase's time and its
top operators by self time, as markdown tables (benchmarks/step.md keeps the figures). The profiler's own
overhead inflates every figure; the shares and the op counts are what to read, and ms/step is measured again
without it at the end.
Usage: ``python benchmarks/profile_step.py [--preset lecture] [--steps 600] [--threads 1] [--top 8]``.
To profile another checkout of gptlab (the code before a change), put it first: ``PYTHONPATH=../old python ...``.
``--against ../old`` profiles nothing: it times this checkout's steps and the other's, alternating in fresh
processes (``--pairs`` of them), and prints each side's times and best, the before/after of one run.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import gptlab
from gptlab import train as training
from gptlab.config import preset
from gptlab.data import Batches, Corpus

PHASES = ["batch", "forward", "backward", "clip", "zero_grad", "optimizer", "eval"]
LABELS = {"Optimizer.step#AdamW.step": "optimizer", "Optimizer.zero_grad#AdamW.zero_grad": "zero_grad"}


def labelled(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(name):
            return fn(*args, **kwargs)

    return wrapper


def label_phases() -> None:
    """Wrap the trainer's calls; the optimizer's step and zero_grad label themselves."""
    Batches.batch = labelled("batch", Batches.batch)  # type: ignore[method-assign]
    training.OneModel.losses = labelled("forward", training.OneModel.losses)  # type: ignore[method-assign]
    training.OneModel.clip = labelled("clip", training.OneModel.clip)  # type: ignore[method-assign]
    training.Evaluator.__call__ = labelled("eval", training.Evaluator.__call__)  # type: ignore[method-assign]
    torch.Tensor.backward = labelled("backward", torch.Tensor.backward)  # type: ignore[method-assign]
    stack = torch.stack
    torch.stack = labelled("batch", stack)  # only the trainer's loop calls it outside a phase


def phase_of(event: Any) -> str | None:
    """The labelled range an event belongs to (its outermost labelled ancestor), None outside every one."""
    phase = None
    while event is not None:
        phase = LABELS.get(event.name, event.name if event.name in PHASES else phase)
        event = event.cpu_parent
    return phase


def run(preset_name: str, steps: int, threads: int, eval_windows: int | None = None) -> tuple[Any, float]:
    cfg = preset(preset_name)
    cfg.train.max_iters, cfg.train.threads, cfg.train.device = steps, threads, "cpu"
    cfg.train.eval_windows = eval_windows or cfg.train.eval_windows
    cfg.train.eval_interval = steps // 2  # three evaluations: at 0, half-way and the end
    corpus = Corpus.from_file(cfg.data.path)
    return cfg, training.train(cfg, corpus).tokens_per_sec


def ms_per_step(preset_name: str, steps: int, threads: int) -> float:
    cfg, tokens_per_sec = run(preset_name, steps, threads, eval_windows=64)  # evaluation is not timed
    return cfg.train.batch_size * cfg.model.block_size / tokens_per_sec * 1e3


def timed_in(tree: Path, args: argparse.Namespace) -> float:
    """ms/step of one run in a fresh process that imports gptlab from ``tree``."""
    command = [sys.executable, __file__, "--time-only", "--preset", args.preset, "--steps", str(args.steps),
               "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return float(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.split()[-1])


def against(other: Path, args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parents[1]
    times: dict[Path, list[float]] = {here: [], other: []}
    for _ in range(args.pairs):
        for tree in times:
            times[tree].append(timed_in(tree, args))
    for tree, values in times.items():
        print(f"{tree}: ms/step {' '.join(f'{v:.2f}' for v in values)}; best {min(values):.2f}")
    print(f"best here / best there: {min(times[here]) / min(times[other]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lecture")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="operators listed per phase")
    parser.add_argument("--eval-windows", type=int, help="windows an evaluation scores (default: the preset's)")
    parser.add_argument("--against", type=Path, help="another checkout: time both, alternating, no profile")
    parser.add_argument("--pairs", type=int, default=3, help="with --against: runs of each side")
    parser.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_only:
        print(f"{ms_per_step(args.preset, args.steps, args.threads):.4f}")
        return
    if args.against:
        against(args.against.resolve(), args)
        return
    print(f"gptlab from {gptlab.__file__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"preset {args.preset}, {args.steps} steps")
    run(args.preset, 50, args.threads, args.eval_windows)  # warm-up: first-call costs stay out of the profile
    label_phases()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(args.preset, args.steps, args.threads, args.eval_windows)
    totals: dict[str, float] = collections.defaultdict(float)
    ops: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    calls: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for event in prof.events():
        phase = phase_of(event)
        if phase is None:
            continue
        if event.name in PHASES or event.name in LABELS:
            if phase_of(event.cpu_parent) is None:  # the outermost range: its whole time
                totals[phase] += event.cpu_time_total
        elif event.name.startswith("aten::") or event.name.startswith("autograd::"):
            ops[phase][event.name] += event.self_cpu_time_total
            calls[phase][event.name] += 1
    evals, per = 3, args.steps
    print("\n| phase | us/step (profiled) | share |\n| --- | --- | --- |")
    train_total = sum(v for k, v in totals.items() if k != "eval")
    for phase in PHASES:
        if phase in totals:
            scale = evals if phase == "eval" else per
            share = "" if phase == "eval" else f"{totals[phase] / train_total:.0%}"
            print(f"| {phase}{' (one)' if phase == 'eval' else ''} | {totals[phase] / scale:,.0f} | {share} |")
    for phase in PHASES:
        if phase not in ops:
            continue
        scale = evals if phase == "eval" else per
        print(f"\n**{phase}**: top operators by self time, per {'evaluation' if phase == 'eval' else 'step'}\n")
        print("| operator | calls | self us |\n| --- | --- | --- |")
        for name, micros in ops[phase].most_common(args.top):
            print(f"| `{name}` | {calls[phase][name] / scale:.0f} | {micros / scale:,.0f} |")
    times = [ms_per_step(args.preset, args.steps, args.threads) for _ in range(3)]  # without the profiler
    print(f"\nms/step without the profiler (training steps only, best of 3): {min(times):.2f}")


if __name__ == "__main__":
    main()
