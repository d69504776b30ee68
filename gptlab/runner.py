"""Runs a grid's runs behind a small Executor interface; each run's record is saved atomically as it ends.

Resume is free: a run whose record exists is skipped, so a killed grid loses only the runs in flight.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import multiprocessing
import os
import queue
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from gptlab import __version__
from gptlab.data import PROJECT_ROOT, Corpus
from gptlab.display import progress_bar
from gptlab.grid import Grid, RunSpec
from gptlab.record import RunRecord, load_record, save_record, write_atomic
from gptlab.sampling import attention_map, generate_text
from gptlab.train import Progress, TrainResult, train

PROGRESS_INTERVAL_S = 0.25
SAMPLE_PROMPT, SAMPLE_TOKENS, SAMPLE_SEED = "\n", 300, 1337


@dataclass
class RunEvent:
    """What an executor reports: a run started, made progress, finished (done/diverged) or failed."""

    kind: str  # "start" | "progress" | "finished" | "failed"
    key: str
    label: str
    step: int = 0
    max_iters: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    status: str | None = None  # "done" or "diverged", for "finished"
    error: str | None = None  # one line, for "failed"


OnEvent = Callable[[RunEvent], None]


class Executor(Protocol):
    """Runs a list of runs, saving each run's record under ``runs_dir`` and reporting through ``on_event``.

    It must save a record the moment its run ends (``execute`` does that), report a run that raises as
    "failed" and go on with the others. A Ray executor would plug in here unchanged for the caller: wrap
    ``execute`` in ``ray.remote(num_gpus=1)`` (or ``num_cpus``), submit one task per spec, send progress
    through a Ray queue or actor in place of the multiprocessing queue, and turn each finished ``ObjectRef``
    into a "finished" or "failed" event; records land on a shared filesystem, so resume works the same.
    """

    def run(self, specs: Sequence[RunSpec], runs_dir: Path, on_event: OnEvent) -> None: ...


def label(spec: RunSpec) -> str:
    return f"{spec.variant} · seed {spec.seed}"


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


@functools.lru_cache(maxsize=4)
def cached_corpus(path: str, train_fraction: float) -> Corpus:
    return Corpus.from_file(path, train_fraction)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()})"
    return device


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def build_record(spec: RunSpec, corpus: Corpus, result: TrainResult, config: dict[str, Any]) -> RunRecord:
    diverged = result.diverged_at is not None
    history = [{k: finite(v) for k, v in row.items()} for row in result.history]
    extra: dict[str, Any] = {}
    sample = ""
    if not diverged:
        sample = generate_text(result.model, corpus.tokenizer, SAMPLE_PROMPT, SAMPLE_TOKENS, seed=SAMPLE_SEED)
        if spec.config.model.arch == "gpt":
            prompt = corpus.tokenizer.decode(corpus.val[: spec.config.model.block_size].tolist())
            weights = attention_map(result.model, corpus.tokenizer, prompt, layer=0, head=0)
            extra["attention"] = {"prompt": prompt, "layer": 0, "head": 0, "weights": weights}
    return RunRecord(
        key=spec.key, grid=spec.grid, variant=spec.variant, seed=spec.seed, config=config,
        status="diverged" if diverged else "done",
        final_val_loss=finite(result.final_val_loss), best_val_loss=finite(result.best_val_loss),
        final_train_loss=finite(result.final_train_loss), diverged_at=result.diverged_at, history=history,
        params=result.model.num_params(), tokens_per_sec=result.tokens_per_sec, wall_time=result.wall_time,
        device=device_name(result.device), torch_version=torch.__version__, gptlab_version=__version__,
        git_commit=git_commit(), sample=sample, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
    )


def execute(spec: RunSpec, runs_dir: Path, emit: OnEvent) -> str:
    """Train one run, save its record atomically, return its status; progress goes to ``emit``."""
    cfg = copy.deepcopy(spec.config)
    corpus = cached_corpus(cfg.data.path, cfg.data.train_fraction)
    name = label(spec)
    emit(RunEvent("start", spec.key, name, max_iters=cfg.train.max_iters))
    last_sent = [0.0]

    def on_progress(p: Progress) -> None:
        now = time.monotonic()
        if p.val_loss is not None or p.step == p.max_iters or now - last_sent[0] >= PROGRESS_INTERVAL_S:
            last_sent[0] = now
            emit(RunEvent("progress", spec.key, name, p.step, p.max_iters, p.train_loss, p.val_loss))

    result = train(cfg, corpus, on_progress)
    record = build_record(spec, corpus, result, cfg.to_dict())
    save_record(runs_dir, record)
    return record.status


def record_path(runs_dir: Path, key: str) -> Path:
    return runs_dir / f"{key}.json"


def is_finished(runs_dir: Path, key: str) -> bool:
    """A readable record exists (records are written atomically, so a present file is a whole one)."""
    try:
        load_record(record_path(runs_dir, key))
    except (OSError, ValueError, TypeError):
        return False
    return True


def to_run(specs: Sequence[RunSpec], runs_dir: Path, force: bool) -> list[RunSpec]:
    return list(specs) if force else [s for s in specs if not is_finished(runs_dir, s.key)]


def write_manifest(grid: Grid, grid_dir: Path, device: str) -> Path:
    """grid.json: what the grid runs plus where and with what code it ran."""
    manifest = {**grid.manifest(), "gptlab_version": __version__, "git_commit": git_commit(),
                "device": device_name(device), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = grid_dir / "grid.json"
    write_atomic(path, json.dumps(manifest, indent=1))
    return path


# -- local processes ---------------------------------------------------------------------------------------

_events: Any = None


def _watch_parent(parent: int) -> None:
    """Exit when the parent dies (kill -9 leaves spawned workers orphaned otherwise)."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _init_worker(events: Any, threads: int, parent: int, slots: Any) -> None:
    global _events
    _events = events
    torch.set_num_threads(threads)
    slot = slots.get()
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(slot % torch.cuda.device_count())
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _execute_in_worker(spec: RunSpec, runs_dir: Path) -> str:
    return execute(spec, runs_dir, _events.put)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalProcessExecutor:
    """``jobs`` spawned worker processes on this machine; the CPU cores are split between them, and with
    several GPUs each worker takes its own (worker i on GPU i mod count)."""

    def __init__(self, jobs: int = 1, cores: int | None = None) -> None:
        self.jobs = max(1, jobs)
        self.threads = max(1, (cores or available_cores()) // self.jobs)

    def run(self, specs: Sequence[RunSpec], runs_dir: Path, on_event: OnEvent) -> None:
        if not specs:
            return
        context = multiprocessing.get_context("spawn")
        events, slots = context.Queue(), context.Queue()
        for slot in range(self.jobs):
            slots.put(slot)
        with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                 initargs=(events, self.threads, os.getpid(), slots)) as pool:
            futures = {pool.submit(_execute_in_worker, spec, runs_dir): spec for spec in specs}
            pending: set[Future[str]] = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    drain(events, on_event)
                    for future in done:
                        report_outcome(futures[future], future, on_event)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        drain(events, on_event)


def drain(events: Any, on_event: OnEvent) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return


def report_outcome(spec: RunSpec, future: Future[str], on_event: OnEvent) -> None:
    try:
        status = future.result()
    except Exception as err:  # any run's failure is reported, and the grid goes on
        on_event(RunEvent("failed", spec.key, label(spec), error=one_line(err)))
        return
    on_event(RunEvent("finished", spec.key, label(spec), status=status))


# -- what the caller sees ----------------------------------------------------------------------------------


class LiveProgress:
    """A rich display: overall runs done / total with ETA, one line per run in flight (step and loss).

    Also collects the outcome: ``finished`` (key -> status) and ``failed`` (key -> one-line reason).
    """

    def __init__(self, total: int) -> None:
        self.bar = progress_bar()
        self.overall = self.bar.add_task("runs", total=total, losses="")
        self.tasks: dict[str, Any] = {}
        self.last_val: dict[str, float] = {}
        self.finished: dict[str, str] = {}
        self.failed: dict[str, str] = {}

    def __enter__(self) -> LiveProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, event: RunEvent) -> None:
        if event.kind in ("finished", "failed"):
            self.end(event)
            return
        if event.key in self.finished or event.key in self.failed:
            return
        if event.key not in self.tasks:
            self.tasks[event.key] = self.bar.add_task(f"  {event.label}", total=event.max_iters or None, losses="")
        if event.val_loss is not None:
            self.last_val[event.key] = event.val_loss
        losses = []
        if event.train_loss is not None:
            losses.append(f"train {event.train_loss:.3f}")
        if event.key in self.last_val:
            losses.append(f"val {self.last_val[event.key]:.3f}")
        self.bar.update(self.tasks[event.key], completed=event.step, losses="  ".join(losses))

    def end(self, event: RunEvent) -> None:
        if event.kind == "failed":
            self.failed[event.key] = event.error or "failed"
        else:
            self.finished[event.key] = event.status or "done"
        task = self.tasks.pop(event.key, None)
        if task is not None:
            self.bar.remove_task(task)
        parts = [f"{len(self.finished)} finished"] + ([f"{len(self.failed)} failed"] if self.failed else [])
        self.bar.update(self.overall, advance=1, losses=", ".join(parts))
