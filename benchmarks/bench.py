"""Speed benchmark: each gptlab preset against the recipe it reproduces, in one process, runs interleaved A/B/A/B.

Prints ms/iter, tokens/s, MFU, peak memory, wall time, final val loss and time-to-loss, then the target ratios;
``--group N`` also times N seeds of the ``lecture`` preset trained as one stacked model against one run.
Usage: ``python benchmarks/bench.py [--preset lecture cpu full] [--device cpu|cuda] [--repeats N] [--quick]
[--max-iters N] [--group N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402

from gptlab.config import NANOGPT_RECIPE, ModelConfig, RunConfig, apply_overrides, preset  # noqa: E402
from gptlab.data import Corpus, read_text  # noqa: E402
from gptlab.display import console  # noqa: E402
from gptlab.flops import flops_per_token, matmul_peak_flops, mfu  # noqa: E402
from gptlab.group import train_group  # noqa: E402
from gptlab.train import Progress, train  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt"
DEFAULT_THREADS = torch.get_num_threads()
QUICK_FACTOR = 10  # --quick: a tenth of the iterations and of the eval work, evals at the same relative points
TARGET_LOSS = {"lecture": 2.10, "cpu": 1.89, "full": 1.47}
NANO_GPU = ref.NanoConfig(  # nanoGPT's config/train_shakespeare_char.py on a GPU, compiled as it ships
    batch_size=64, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, max_iters=5000,
    lr_decay_iters=5000, eval_iters=200, compile=True,
)
# The gptlab side of each comparison: the preset, on the reference's optimisation recipe where they differ.
GPTLAB_SIDE: dict[str, dict[str, Any]] = {"lecture": {}, "cpu": {}, "full": NANOGPT_RECIPE}


@dataclass
class Reference:
    name: str
    runner: Callable[..., float]
    config: Any


REFERENCES = {
    "lecture": Reference("lecture gpt.py", ref.train_lecture, ref.LectureConfig()),
    "cpu": Reference("nanoGPT (CPU recipe)", ref.train_nanogpt, ref.NanoConfig()),
    "full": Reference("nanoGPT (GPU recipe, compiled)", ref.train_nanogpt, NANO_GPU),
}


class Clock:
    """Timestamps from a run's callbacks: one per training step, one per finished evaluation."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.last = time.perf_counter()
        self.steps: list[float] = []
        self.threads = 0  # intra-op threads seen during the run's first step
        self.evals: list[tuple[int, float, float]] = []  # (step, val loss, seconds since start)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def step(self) -> None:
        now = self.now()
        self.threads = self.threads or torch.get_num_threads()
        self.steps.append(now - self.last)
        self.last = now

    def eval(self, step: int, val: float) -> None:
        now = self.now()
        self.evals.append((step, val, now - self.start))
        self.last = now


@dataclass
class RunStats:
    """One finished run, measured from outside."""

    step_times: list[float]
    threads: int
    evals: list[tuple[int, float, float]]
    wall: float
    final_val: float
    peak_mib: float
    tokens_per_step: int
    flops_token: float

    @property
    def ms_per_iter(self) -> float:
        """Median step time after warm-up (the first fifth of the steps, at most 50)."""
        warmup = min(50, len(self.step_times) // 5)
        return 1e3 * statistics.median(self.step_times[warmup:])

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens_per_step / (self.ms_per_iter / 1e3)

    def time_to(self, loss: float) -> float:
        """Seconds from launch to the end of the first evaluation at or below ``loss`` (nan if never)."""
        return next((t for _, val, t in self.evals if val <= loss), math.nan)


@dataclass
class Comparison:
    preset: str
    reference: str
    target_loss: float
    ours: list[RunStats] = field(default_factory=list)
    theirs: list[RunStats] = field(default_factory=list)


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak: CUDA's allocator stats, or Linux's RSS high-water mark (clear_refs 5)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the figure is the process's peak so far


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measured(device: torch.device, threads: int, run: Callable[[Clock], tuple[float, int, float]]) -> RunStats:
    """Run ``run(clock)`` -> (final val, tokens per step, FLOPs per token) from ``threads`` and a fresh memory peak."""
    torch.set_num_threads(threads)
    reset_peak_memory(device)
    clock = Clock(device)
    final_val, tokens_per_step, flops_token = run(clock)
    wall = clock.now() - clock.start
    peak = peak_memory_mib(device)
    return RunStats(clock.steps, clock.threads, clock.evals, wall, final_val, peak, tokens_per_step, flops_token)


def shrunk(value: int) -> int:
    """--quick: a tenth, keeping zero at zero and anything else at least 1."""
    return max(1, value // QUICK_FACTOR) if value else 0


def gptlab_config(name: str, device: torch.device, quick: bool, threads: int,
                  max_iters: int | None = None) -> RunConfig:
    cfg = apply_overrides(preset(name), {**GPTLAB_SIDE[name], "train.device": device.type, "train.threads": threads,
                                         **({"train.max_iters": max_iters} if max_iters else {})})
    if quick:
        for key in ("max_iters", "eval_interval", "eval_windows", "warmup_iters"):
            setattr(cfg.train, key, shrunk(getattr(cfg.train, key)))
    return cfg


def reference_config(name: str, quick: bool, max_iters: int | None = None) -> Any:
    """The reference's recipe; ``max_iters`` stops it early (its lr schedule keeps its own length)."""
    config = REFERENCES[name].config
    if max_iters:
        config = dataclasses.replace(config, max_iters=max_iters)
    if not quick:
        return config
    keys = ("max_iters", "eval_interval", "eval_iters", "warmup_iters", "lr_decay_iters")
    scaled = {key: shrunk(getattr(config, key)) for key in keys if hasattr(config, key)}
    return dataclasses.replace(config, **scaled)


def run_gptlab(cfg: RunConfig, text: str, clock: Clock) -> tuple[float, int, float]:
    def on_progress(p: Progress) -> None:
        if p.val_loss is not None:
            clock.eval(p.step, p.val_loss)
        else:
            clock.step()

    result = train(cfg, Corpus.from_text(text), on_progress)
    flops = flops_per_token(cfg.model, result.model.num_params())
    return result.final_val_loss, cfg.train.batch_size * cfg.model.block_size, flops


def run_reference(name: str, config: Any, text: str, device: torch.device, clock: Clock) -> tuple[float, int, float]:
    final_val = REFERENCES[name].runner(text, config, device, ref.Hooks(clock.step, clock.eval))
    shape = ModelConfig(n_layer=config.n_layer, n_embd=config.n_embd, block_size=config.block_size)
    model = ref.LectureGPT(config) if isinstance(config, ref.LectureConfig) else ref.NanoGPT(config)
    n_params = sum(p.numel() for p in model.parameters())
    return final_val, config.batch_size * config.block_size, flops_per_token(shape, n_params)


def compare(name: str, device: torch.device, args: argparse.Namespace, target_loss: float) -> Comparison:
    """gptlab and its reference, alternating A/B/A/B so that load on the machine hits both alike.

    Both start from ``--threads`` or torch's default; gptlab's ``train.threads`` = ``--threads`` (0 = automatic).
    """
    text = read_text(DATA)
    cfg = gptlab_config(name, device, args.quick, args.threads, args.max_iters)
    config = reference_config(name, args.quick, args.max_iters)
    threads, repeats = args.threads or DEFAULT_THREADS, args.repeats
    result = Comparison(name, REFERENCES[name].name, target_loss)
    for i in range(repeats):
        console.print(f"[dim]{name}: run {i + 1}/{repeats}: gptlab ...[/]")
        result.ours.append(measured(device, threads, lambda clock: run_gptlab(cfg, text, clock)))
        console.print(f"[dim]{name}: run {i + 1}/{repeats}: {result.reference} ...[/]")
        result.theirs.append(measured(device, threads, lambda clock: run_reference(name, config, text, device, clock)))
    return result


def median_of(runs: list[RunStats], metric: Callable[[RunStats], float]) -> float:
    return statistics.median(metric(r) for r in runs)


def ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def metrics(c: Comparison, peak: float) -> list[tuple[str, Callable[[RunStats], float], str]]:
    """(label, metric of one run, format) for every row of a comparison table."""
    return [
        ("CPU threads", lambda r: r.threads, "{:.0f}"),
        ("ms/iter (median after warm-up)", lambda r: r.ms_per_iter, "{:.2f}"),
        ("tokens/s (training steps)", lambda r: r.tokens_per_sec, "{:,.0f}"),
        ("MFU vs measured matmul peak", lambda r: mfu(r.flops_token, r.tokens_per_sec, peak), "{:.1%}"),
        ("peak memory MiB", lambda r: r.peak_mib, "{:,.0f}"),
        ("wall time s (whole run, evals incl.)", lambda r: r.wall, "{:.1f}"),
        ("final val loss (own eval)", lambda r: r.final_val, "{:.4f}"),
        (f"time to val <= {c.target_loss} s (own eval)", lambda r: r.time_to(c.target_loss), "{:.1f}"),
    ]


def comparison_table(c: Comparison, peak: float) -> Table:
    table = Table(title=f"preset {c.preset} vs {c.reference}  ({len(c.ours)} run(s) each, medians)")
    for column in ("metric", "gptlab", c.reference, "gptlab / ref"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for label, metric, fmt in metrics(c, peak):
        ours, theirs = median_of(c.ours, metric), median_of(c.theirs, metric)
        table.add_row(label, fmt.format(ours), fmt.format(theirs), f"{ratio(ours, theirs):.2f}")
    return table


def curve(runs: list[RunStats]) -> str:
    """The first run's val loss at each eval point: where time-to-loss comes from."""
    return "  ".join(f"{step}: {val:.3f}" for step, val, _ in runs[0].evals)


def target_rows(c: Comparison, peak: float) -> list[tuple[str, float, str]]:
    """(target, measured value, goal) for the issue's rows this comparison can measure."""
    ours, theirs = c.ours, c.theirs
    if c.preset == "lecture":
        return [("lecture: wall time gptlab / reference", ratio(median_of(ours, lambda r: r.wall),
                                                                 median_of(theirs, lambda r: r.wall)), "<= 0.5")]
    if c.preset == "cpu":
        return [
            ("cpu: ms/iter gptlab / nanoGPT", ratio(median_of(ours, lambda r: r.ms_per_iter),
                                                     median_of(theirs, lambda r: r.ms_per_iter)), "<= 1.0"),
            (f"cpu: time to val <= {c.target_loss} gptlab / nanoGPT",
             ratio(median_of(ours, lambda r: r.time_to(c.target_loss)),
                   median_of(theirs, lambda r: r.time_to(c.target_loss))), "<= 0.7"),
            ("cpu: gptlab MFU", median_of(ours, lambda r: mfu(r.flops_token, r.tokens_per_sec, peak)), ">= 0.40"),
        ]
    return [
        ("full: ms/iter gptlab (eager) / nanoGPT (compiled)",
         ratio(median_of(ours, lambda r: r.ms_per_iter), median_of(theirs, lambda r: r.ms_per_iter)), "<= 1.0"),
        ("full: gptlab ms/iter", median_of(ours, lambda r: r.ms_per_iter), "<= 7"),
        (f"full: gptlab time to val <= {c.target_loss} s", median_of(ours, lambda r: r.time_to(c.target_loss)),
         "<= 30"),
        (f"full: time to val <= {c.target_loss} gptlab / nanoGPT",
         ratio(median_of(ours, lambda r: r.time_to(c.target_loss)),
               median_of(theirs, lambda r: r.time_to(c.target_loss))), "<= 1.0"),
        ("full: gptlab MFU", median_of(ours, lambda r: mfu(r.flops_token, r.tokens_per_sec, peak)), ">= 0.15"),
    ]


def group_speed(device: torch.device, seeds: int, max_iters: int | None, quick: bool) -> Table:
    """One ``lecture`` run against ``seeds`` seeds trained as one stacked model, interleaved: wall times."""
    text = read_text(DATA)
    cfg = gptlab_config("lecture", device, quick, 0, max_iters)
    cfgs = [apply_overrides(cfg, {"train.seed": 1337 + i}) for i in range(seeds)]
    times: dict[str, list[float]] = {"one run": [], f"{seeds} seeds as one group": []}
    for _ in range(2):
        for label, run in (("one run", lambda: train(cfg, Corpus.from_text(text))),
                           (f"{seeds} seeds as one group", lambda: train_group(cfgs, Corpus.from_text(text)))):
            clock = Clock(device)
            run()
            times[label].append(clock.now() - clock.start)
    table = Table(title=f"lecture preset, {cfg.train.max_iters} iters: {seeds} seeds as one stacked model vs one "
                        "run (2 interleaved pairs, medians; whole runs, evals included)")
    for column in ("what", "wall time s", "ratio to one run", "seeds per second of training"):
        table.add_column(column, justify="left" if column == "what" else "right")
    one = statistics.median(times["one run"])
    for label, values in times.items():
        wall, count = statistics.median(values), 1 if label == "one run" else seeds
        table.add_row(label, f"{wall:.1f}", f"{wall / one:.2f}", f"{count / wall:.3f}")
    return table


def meets(value: float, goal: str) -> bool:
    op, bound = goal.split()
    return math.isfinite(value) and (value <= float(bound) if op == "<=" else value >= float(bound))


def targets_table(comparisons: list[Comparison], peak: float, quick: bool) -> Table:
    table = Table(title="issue 6 targets" + (" (--quick: a smoke test, not a measurement)" if quick else ""))
    for column in ("target", "measured", "goal", "met"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for c in comparisons:
        for label, value, goal in target_rows(c, peak):
            table.add_row(label, f"{value:.2f}", goal, "yes" if meets(value, goal) else "NO")
    return table


def peak_flops(device: torch.device) -> float:
    """This machine's matmul peak: fp32 on the CPU, bf16 on CUDA (big enough matrices to fill a GPU)."""
    torch.set_num_threads(DEFAULT_THREADS)
    return matmul_peak_flops(size=8192 if device.type == "cuda" else 2048, device=device.type)


def machine(device: torch.device, peak: float) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{name}; {os.cpu_count()} CPU cores, torch {torch.__version__}, {DEFAULT_THREADS} threads by default; "
            f"measured matmul peak {peak / 1e9:,.0f} GFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'}); "
            f"load average {load}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="*", choices=list(REFERENCES), default=["lecture", "cpu"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="A/B pairs per preset (medians are reported)")
    parser.add_argument("--quick", action="store_true", help=f"1/{QUICK_FACTOR} of the iterations: a smoke test")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin both sides to N CPU threads (default 0: each as its user runs it)")
    parser.add_argument("--target-loss", type=float, help=f"time-to-loss target, all presets (default {TARGET_LOSS})")
    parser.add_argument("--max-iters", type=int, help="stop every run after N iterations (schedules keep their length)")
    parser.add_argument("--group", type=int, default=0, help="also time N lecture seeds as one group vs one run")
    args = parser.parse_args(argv)
    for name, least in (("repeats", 1), ("threads", 0), ("group", 0)):
        if getattr(args, name) < least:
            parser.error(f"--{name} = {getattr(args, name)} is not allowed; must be >= {least}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device on this machine")
    if "full" in args.preset and args.device != "cuda":
        parser.error("--preset full needs --device cuda (it takes hours on a CPU)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    peak = peak_flops(device)
    started = time.perf_counter()
    console.print(f"machine: {machine(device, peak)}")
    comparisons = [compare(name, device, args, args.target_loss or TARGET_LOSS[name]) for name in args.preset]
    peak = max(peak, peak_flops(device))  # the better of two, in case load hit one
    console.print(f"matmul peak used for MFU: {peak / 1e9:,.0f} GFLOP/s (best of start and end)")
    for c in comparisons:
        console.print(comparison_table(c, peak))
        console.print(f"val loss by step, gptlab: {curve(c.ours)}")
        console.print(f"val loss by step, {c.reference}: {curve(c.theirs)}")
    console.print(targets_table(comparisons, peak, args.quick))
    if args.group:
        console.print(group_speed(device, args.group, args.max_iters, args.quick))
    console.print(
        "Each side's val loss is its own evaluation: gptlab scores fixed, evenly spaced validation windows "
        "(train.eval_windows); the references score random batches (eval_iters), so time-to-loss compares each "
        "on its own yardstick. ms/iter, tokens/s and MFU count training steps only; wall time counts everything."
    )
    console.print(f"benchmark took {time.perf_counter() - started:.0f} s; load average now "
                  f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
