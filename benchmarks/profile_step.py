"""Where a training step's time goes: ``gptlab.train.train`` run under torch's profiler, each phase labelled.

The phases are the trainer's own calls, wrapped in ``record_function`` here (the library is not edited): drawing
the batch (``Batches.batch`` and the stack), the forward pass (``losses``), the backward pass, clipping,
``zero_grad``, the optimizer's step and the evaluations. Prints, per training step, each phase's time and its
top operators by self time, as markdown tables (benchmarks/step.md keeps the figures). The profiler's own
overhead inflates every figure; the shares and the op counts are what to read, and ms/step is measured again
without it at the end.
Usage: ``python benchmarks/profile_step.py [--preset lecture] [--steps 600] [--threads 1] [--top 8]``; ``--cache``
times the step's main operators alone, warm and cold, and ``--flat-pairs N`` the trainer with and without its flat
AdamW buffers (no profile for either).
To profile another checkout of gptlab (the code before a change), put it first: ``PYTHONPATH=../old python ...``;
``benchmarks/against.py ../old`` times the two side by side (ms/step among its measures).
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import gptlab
from gptlab import train as training
from gptlab.config import preset
from gptlab.data import Batches, Corpus
from gptlab.flops import matmul_peak_flops

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


def run(preset_name: str, steps: int, threads: int, eval_windows: int | None = None) -> tuple[Any, float, float]:
    cfg = preset(preset_name)
    cfg.train.max_iters, cfg.train.threads, cfg.train.device = steps, threads, "cpu"
    cfg.train.eval_windows = eval_windows or cfg.train.eval_windows
    cfg.train.eval_interval = steps // 2  # three evaluations: at 0, half-way and the end
    corpus = Corpus.from_file(cfg.data.path)
    result = training.train(cfg, corpus)
    return cfg, result.tokens_per_sec, result.final_val_loss


def ms_per_step(preset_name: str, steps: int, threads: int) -> float:
    cfg, tokens_per_sec, _ = run(preset_name, steps, threads, eval_windows=64)  # evaluation is not timed
    return cfg.train.batch_size * cfg.model.block_size / tokens_per_sec * 1e3


def flat_against_per_parameter(preset_name: str, steps: int, threads: int, pairs: int) -> None:
    """The kept lever on its own: the trainer as it is, and with ``gptlab.train.flattened`` made the identity (AdamW
    over the parameters one by one), alternating in this process, the order swapped every pair; the same losses."""
    flat = training.flattened
    times: dict[bool, list[float]] = {True: [], False: []}
    losses: dict[bool, set[float]] = {True: set(), False: set()}
    for i in range(pairs + 1):  # the first pair warms up
        for on in (True, False) if i % 2 else (False, True):
            training.flattened = flat if on else lambda group: group  # type: ignore[assignment]
            cfg, tokens_per_sec, val = run(preset_name, steps, threads, eval_windows=64)
            if i:
                times[on].append(cfg.train.batch_size * cfg.model.block_size / tokens_per_sec * 1e3)
                losses[on].add(val)
    training.flattened = flat
    for on, label in ((True, "flat buffers"), (False, "per parameter")):
        print(f"{label}: ms/step {' '.join(f'{v:.2f}' for v in times[on])}; median {statistics.median(times[on]):.2f}; "
              f"final val loss {' '.join(f'{v:.4f}' for v in sorted(losses[on]))}")
    ratios = [a / b for a, b in zip(times[True], times[False])]
    print(f"flat / per parameter: median {statistics.median(ratios):.3f}, flat faster in "
          f"{sum(r < 1 for r in ratios)} of {len(ratios)} pairs")


def operators(rows: int) -> dict[str, Callable[[], Any]]:
    """The step's main operators at the ``lecture`` preset's widths (C 32, 4 heads, block 8, 65 symbols) over
    ``rows`` tokens (the step has 256: batch 32 x block 8)."""
    C, T, H, V = 32, 8, 4, 65
    x, hidden, w1, b1 = torch.randn(rows, C), torch.randn(rows, 4 * C), torch.randn(4 * C, C), torch.zeros(4 * C)
    wq, gain, bias = torch.randn(C, C), torch.ones(C), torch.zeros(C)
    q, scores = torch.randn(rows // T, H, T, C // H), torch.randn(rows * H, T)
    logits, targets = torch.randn(rows, V), torch.randint(0, V, (rows,))
    return {
        "`addmm`: a Linear C -> 4C with bias": lambda: torch.addmm(b1, x, w1.t()),
        "`mm`: a Linear C -> C (a query map)": lambda: torch.mm(x, wq.t()),
        "`layer_norm` over C": lambda: F.layer_norm(x, (C,), gain, bias),
        "`relu` of the 4C hidden layer": lambda: torch.relu(hidden),
        "`softmax` over 8 keys, 4 heads": lambda: torch.softmax(scores, -1),
        "`scaled_dot_product_attention`, causal": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True),
        "`cross_entropy` over 65 symbols": lambda: F.cross_entropy(logits, targets),
    }


def cache_table(repeats: int) -> None:
    """Each operator alone on one thread: warm (the same data again and again, in cache), cold (a 32 MB buffer
    written before each call pushes its data out of the caches, as the rest of a step does) and warm over 4x the
    tokens (a cost that grows with the data is work on it, not a fixed cost per call)."""
    torch.set_num_threads(1)
    flush = torch.empty(8 << 20)

    def micros(op: Callable[[], Any], cold: bool) -> float:
        total = 0.0
        for i in range(repeats + 20):
            if cold:
                flush.add_(1.0)
            start = time.perf_counter()
            op()
            total += (time.perf_counter() - start) if i >= 20 else 0.0  # the first 20 calls warm up
        return total / repeats * 1e6

    step, wide = operators(256), operators(1024)
    print("| operator (one thread, us a call) | warm, 256 tokens | cold, 256 tokens | warm, 1,024 tokens |\n"
          "| --- | --- | --- | --- |")
    warm = {}
    for name, op in step.items():
        warm[name] = micros(op, False)
        print(f"| {name} | {warm[name]:.1f} | {micros(op, True):.1f} | {micros(wide[name], False):.1f} |")
    seconds = warm["`addmm`: a Linear C -> 4C with bias"] / 1e6
    print(f"\nthe warm `addmm` runs at {2 * 256 * 32 * 128 / seconds / 1e9:.0f} GFLOP/s; this machine's matmul peak "
          f"on one thread: {matmul_peak_flops() / 1e9:.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lecture")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=8, help="operators listed per phase")
    parser.add_argument("--eval-windows", type=int, help="windows an evaluation scores (default: the preset's)")
    parser.add_argument("--cache", action="store_true",
                        help="no profile: the step's main operators alone, warm and cold (cache flushed), one thread")
    parser.add_argument("--flat-pairs", type=int, metavar="N",
                        help="no profile: N pairs of runs with and without the flat AdamW buffers, alternating")
    parser.add_argument("--time-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cache:
        cache_table(repeats=args.steps // 2)
        return
    if args.flat_pairs:
        flat_against_per_parameter(args.preset, args.steps, args.threads, args.flat_pairs)
        return
    if args.time_only:
        print(f"{ms_per_step(args.preset, args.steps, args.threads):.4f}")
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
