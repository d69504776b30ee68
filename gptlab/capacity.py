"""How many runs a machine trains at once, and how long a grid will take on it, from a measurement.

``--jobs auto`` (the default) runs as many jobs at once as the cores allow at the threads each run uses (1 for a
model too small to split, like the lecture's; torch's count otherwise), as far as the memory allows, and no
more than there are jobs; on CUDA, one job per GPU (on MPS, one: a Mac has one GPU). The estimate trains a few steps of each distinct config here,
at the threads its worker will have, times an evaluation, and scales both to the run's steps and evaluations; the
jobs are then dealt to the workers longest first.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from gptlab.device import available_bytes, cpu_threads, resolve_device, threads_for
from gptlab.errors import GptlabError
from gptlab.flops import flops_per_token, param_estimate, training_bytes

if TYPE_CHECKING:
    from gptlab.config import RunConfig
    from gptlab.data import Corpus
    from gptlab.grid import Grid
    from gptlab.runner import Job

PROBE_STEPS = 20


def parse_jobs(value: str) -> int | None:
    """``--jobs``: ``auto`` (None: chosen for this machine) or a whole number >= 1."""
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise GptlabError(f"--jobs = {value!r} is not allowed; give auto or a whole number >= 1")
    return int(value)


def run_threads(cfg: RunConfig, cores: int) -> int:
    """The threads one run of ``cfg`` uses with the machine's ``cores`` to itself (``device.threads_for``: 1 for a
    step too small to split, every core otherwise), at most ``cores``."""
    step_flops = flops_per_token(cfg.model, param_estimate(cfg.model)) * cfg.train.batch_size * cfg.model.block_size
    return min(cores, threads_for(cfg.train.threads, step_flops, cores))


@dataclass(frozen=True)
class JobChoice:
    jobs: int
    threads: int  # each worker's share of the cores
    why: str      # one line: what bounded the choice


def choose_jobs(grid: Grid, planned: int, requested: int | None, growing: bool = False) -> JobChoice:
    """``--jobs N`` as given, or for ``auto`` (None) what ``auto_jobs`` finds for the grid's variants and the
    ``planned`` jobs (a grid ``growing`` by rounds of seeds may have as many as it has variants)."""
    from gptlab.runner import available_cores

    cores = available_cores()
    if requested is not None:
        return JobChoice(requested, max(1, cores // requested), f"--jobs {requested}")
    configs = [grid.config(v, grid.seeds[0]) for v in grid.variants]
    return auto_jobs(configs, max(planned, len(grid.variants) if growing else 1), cores)


def auto_jobs(configs: Sequence[RunConfig], planned: int, cores: int) -> JobChoice:
    """Runs at once for these configs (the largest decides): CUDA's GPU count, else the cores over the threads a
    run uses, bounded by the memory available and the ``planned`` jobs."""
    import torch

    device = resolve_device(configs[0].train.device)
    if device.type in ("cuda", "mps"):
        gpus = torch.cuda.device_count() if device.type == "cuda" else 1  # a Mac has one GPU
        jobs = max(1, min(gpus, planned))
        return JobChoice(jobs, max(1, cores // jobs), f"--jobs auto: {jobs} at once (one job per GPU, {gpus} here)")
    threads = max(run_threads(cfg, cores) for cfg in configs)
    by_cores = max(1, cores // threads)
    by_memory = max(1, available_bytes(device) // max(training_bytes(cfg) for cfg in configs))
    jobs = max(1, min(by_cores, by_memory, planned))
    bound = ("the memory" if by_memory < by_cores and by_memory < planned else
             "the jobs to run" if planned < by_cores else f"{cores} cores at {threads} thread{'s' * (threads > 1)} a run")
    return JobChoice(jobs, max(1, cores // jobs), f"--jobs auto: {jobs} at once ({bound})")


@dataclass(frozen=True)
class RunTime:
    """A run's time here, measured on a short probe: seconds per training step and per evaluation of both splits."""

    step: float
    evaluation: float

    def of(self, cfg: RunConfig) -> float:
        t = cfg.train
        evaluations = t.max_iters // t.eval_interval + 1 + (t.max_iters % t.eval_interval > 0)
        return t.max_iters * self.step + evaluations * self.evaluation


def probe(cfg: RunConfig, corpus: Corpus, threads: int) -> RunTime:
    """Train ``PROBE_STEPS`` steps of ``cfg`` with ``threads`` threads to hand (a worker's), evaluating ``PROBE_WINDOWS`` windows at the
    start and the end; the evaluation's time is scaled to the run's ``eval_windows``."""
    from gptlab.train import train

    short = copy.deepcopy(cfg)
    short.train.max_iters = short.train.eval_interval = PROBE_STEPS
    with cpu_threads(threads):
        result = train(short, corpus)
    last = result.history[-1]["elapsed"]  # when the last evaluation began: one evaluation and the steps before
    evaluation = result.wall_time - last
    step = max(0.0, last - evaluation) / PROBE_STEPS
    return RunTime(step, evaluation)


def grid_seconds(jobs: Sequence[Job], workers: int, threads: int) -> float:
    """The wall time of ``jobs`` on ``workers`` at once: each distinct config probed once (its seeds cost the
    same), each job's runs one after another, the jobs dealt longest first to the worker free soonest."""
    from gptlab.runner import cached_corpus

    probes: dict[str, RunTime] = {}
    costs = []
    for job in jobs:
        cost = 0.0
        for spec in job.specs:
            unseeded = copy.deepcopy(spec.config)
            unseeded.train.seed = 0
            key = unseeded.key()
            if key not in probes:
                probes[key] = probe(unseeded, cached_corpus(unseeded.data.path, unseeded.data.train_fraction), threads)
            cost += probes[key].of(spec.config)
        costs.append(cost)
    loads = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += cost
    return max(loads)


def estimate_line(seconds: float, jobs: int, started: float) -> str:
    """``about 9 min with 2 jobs here``, and how long measuring it took."""
    minutes = seconds / 60
    span = f"{seconds:.0f} s" if seconds < 90 else f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
    return (f"estimate: about {span} with {jobs} job{'s' * (jobs > 1)} here (measured on a {PROBE_STEPS}-step probe "
            f"of each config, {time.perf_counter() - started:.1f} s)")
