"""Runs a grid: its runs (or its seed groups) go to an Executor, and each run's record is saved atomically the
moment it ends, so a killed grid loses only the runs in flight and the same command resumes.

``run_grid`` is the library call (the CLI's ``ablate`` is a thin wrapper around it)::

    from gptlab.grid import load_grid
    from gptlab.runner import run_grid
    outcome = run_grid(load_grid("ablations/residuals.yaml"), "reports", jobs=2)
"""

from __future__ import annotations

import copy
import functools
import json
import math
import multiprocessing
import os
import queue
import signal
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Protocol, Sequence

import torch

from gptlab import __version__
from gptlab.data import Corpus
from gptlab.errors import one_line
from gptlab.files import PROJECT_ROOT, write_if_changed
from gptlab.grid import Grid, RunSpec
from gptlab.group import solo_reason, train_group
from gptlab.learner import load_plugins_from_env
from gptlab.locks import Locks, describe, lock_path
from gptlab.record import SAMPLE_SEED, SAMPLE_TOKENS, RecordError, RunRecord, load_record, save_record
from gptlab.model import GPT
from gptlab.sampling import attention_map, generate_text, sample_prompt
from gptlab.sequential import Settlement
from gptlab.train import Progress, TrainResult, train

PROGRESS_INTERVAL_S = 0.25


@dataclass
class RunEvent:
    """What a run reports: it started, made progress, finished (done/diverged), failed, or is held elsewhere."""

    kind: str  # "start" | "progress" | "finished" | "failed" | "held"
    key: str
    label: str
    step: int = 0
    max_iters: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    status: str | None = None  # "done" or "diverged", for "finished"
    error: str | None = None  # one line, for "failed" (and who holds the run, for "held")


OnEvent = Callable[[RunEvent], None]


@dataclass(frozen=True)
class Job:
    """What one worker trains at once: one run, or the seeds of one variant as one stacked model."""

    specs: tuple[RunSpec, ...]
    note: str = ""  # why these runs train together, or why this one trains alone


OnDone = Callable[[Job, "list[RunRecord] | None", "str | None"], None]  # the records, or a one-line error


class Executor(Protocol):
    """Trains jobs: reports progress through ``on_event`` and hands each finished job's records (or its
    one-line error) to ``on_done``, which saves them; one job's failure does not stop the others. ``jobs`` is
    drawn lazily: each job is claimed (its runs locked) as it is drawn, so an executor draws a job when it can
    start it, and runs that another process claimed first are not in it."""

    def run(self, jobs: Iterable[Job], on_event: OnEvent, on_done: OnDone) -> None: ...


def drawn(jobs: Iterable[Job]) -> Iterator[Job] | None:
    """The jobs as one iterator, or None when there are none; the first is drawn (and so claimed) here, for an
    executor to start nothing for an empty grid."""
    queued = iter(jobs)
    first = next(queued, None)
    return None if first is None else chain([first], queued)


def label(spec: RunSpec) -> str:
    return f"{spec.variant} · seed {spec.seed}"


def plan_jobs(specs: Sequence[RunSpec], group_seeds: bool) -> list[Job]:
    """Runs that differ only in their seed form one group (when ``group_seeds``); the rest train alone, each
    with the reason."""
    if not group_seeds:
        return [Job((spec,), "alone (grouping off)") for spec in specs]
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        unseeded = copy.deepcopy(spec.config)
        unseeded.train.seed = 0  # pragma: no mutate (any one value makes the seeds' keys equal)
        groups.setdefault(f"{spec.variant}\0{unseeded.key()}", []).append(spec)
    jobs = []
    for members in groups.values():
        reason = solo_reason(members[0].config)
        if len(members) == 1:
            jobs.append(Job((members[0],), "alone (one seed to run)"))
        elif reason:
            jobs += [Job((spec,), f"alone ({reason})") for spec in members]
        else:
            jobs.append(Job(tuple(members), f"group of {len(members)} seeds"))
    return jobs


def default_grouping(device: str) -> bool:
    """Group seeds by default where it is faster: on CUDA (one launch sequence for every seed)."""
    from gptlab.device import resolve_device

    return resolve_device(device).type == "cuda"


@functools.lru_cache(maxsize=4)
def cached_corpus(path: str, train_fraction: float) -> Corpus:
    return Corpus.from_file(path, train_fraction)


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool | None]:
    """The checkout's commit and whether its code has uncommitted changes (("unknown", None) outside git)."""
    try:
        head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no",
                                 "--", "gptlab"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    if head.returncode or status.returncode:
        return "unknown", None
    return head.stdout.strip(), bool(status.stdout.strip())


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()})"
    return device


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def looks(spec: RunSpec, corpus: Corpus, result: TrainResult) -> tuple[str, dict[str, Any]]:
    """A finished run's sample and first head's attention map; decoration: a failure here is noted, not fatal."""
    if result.diverged_at is not None:
        return "", {}
    extra: dict[str, Any] = {}
    try:
        prompt = sample_prompt(corpus.tokenizer)
        sample = generate_text(result.model, corpus.tokenizer, prompt, SAMPLE_TOKENS, seed=SAMPLE_SEED)
        extra["sample_prompt"] = prompt
        if isinstance(result.model, GPT):
            window = corpus.tokenizer.decode(corpus.val[: spec.config.model.block_size].tolist())
            weights = attention_map(result.model, corpus.tokenizer, window, layer=0, head=0)  # pragma: no mutate (the defaults)
            extra["attention"] = {"prompt": window, "layer": 0, "head": 0, "weights": weights}
    except Exception as err:  # a sample is decoration: the run's numbers are kept whatever happens here
        return "", {"sample_error": one_line(err)}
    return sample, extra


def build_record(spec: RunSpec, corpus: Corpus, result: TrainResult) -> RunRecord:
    history = [{k: finite(v) for k, v in row.items()} for row in result.history]
    sample, extra = looks(spec, corpus, result)
    commit, dirty = git_state()
    return RunRecord(
        key=spec.key, grid=spec.grid, variant=spec.variant, seed=spec.seed, config=spec.config.to_dict(),
        status="diverged" if result.diverged_at is not None else "done",
        final_val_loss=finite(result.final_val_loss), best_val_loss=finite(result.best_val_loss),
        final_train_loss=finite(result.final_train_loss), diverged_at=result.diverged_at, history=history,
        params=result.model.num_params(), tokens_per_sec=result.tokens_per_sec, wall_time=result.wall_time,
        device=device_name(result.device), torch_version=torch.__version__, gptlab_version=__version__,
        git_commit=commit, git_dirty=dirty, sample=sample,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), extra={**extra, **result.extra},
    )


def execute_job(job: Job, emit: OnEvent, text: str | None = None) -> list[RunRecord]:
    """Train a job (one run, or a group of seeds as one stacked model) and return each run's record;
    progress goes to ``emit``. ``text`` is the corpus, where the worker cannot read ``data.path`` itself."""
    cfgs = [copy.deepcopy(spec.config) for spec in job.specs]
    data = cfgs[0].data
    corpus = Corpus.from_text(text, data.train_fraction) if text is not None else cached_corpus(data.path, data.train_fraction)
    last_sent = [0.0] * len(cfgs)  # pragma: no mutate (the first progress, step 0's evaluation, is always sent)
    for spec, cfg in zip(job.specs, cfgs):
        emit(RunEvent("start", spec.key, label(spec), max_iters=cfg.train.max_iters))

    def on_progress(member: int, p: Progress) -> None:
        now = time.monotonic()
        if p.val_loss is not None or p.step == p.max_iters or now - last_sent[member] >= PROGRESS_INTERVAL_S:
            last_sent[member] = now
            spec = job.specs[member]
            emit(RunEvent("progress", spec.key, label(spec), p.step, p.max_iters, p.train_loss, p.val_loss))

    if len(cfgs) == 1:
        results = [train(cfgs[0], corpus, lambda p: on_progress(0, p))]
    else:
        results = train_group(cfgs, corpus, on_progress)
    return [build_record(spec, corpus, result) for spec, result in zip(job.specs, results)]


def record_path(runs_dir: Path, key: str) -> Path:
    return runs_dir / f"{key}.json"


def is_finished(runs_dir: Path, spec: RunSpec, since: str = "") -> bool:
    """A usable record of exactly this run exists (records are written atomically: a present file is whole),
    created at or after ``since`` (an ISO time) when given."""
    try:
        record = load_record(record_path(runs_dir, spec.key))
    except (OSError, RecordError):
        return False
    return (record.grid, record.variant, record.seed) == (spec.grid, spec.variant, spec.seed) and record.created >= since


def to_run(specs: Sequence[RunSpec], runs_dir: Path, force: bool, kept: Collection[str] = ()) -> list[RunSpec]:
    """The runs without a record; with ``force`` all of them but those in ``kept`` (trained by this call)."""
    return [s for s in specs if s.key not in kept] if force else [s for s in specs if not is_finished(runs_dir, s)]


def write_manifest(grid: Grid, grid_dir: Path, device: str, trained: bool) -> bool:
    """grid.json: what the grid runs, plus where and with what code its runs were last trained. Provenance is
    renewed only when runs are trained; a grid whose description is unchanged leaves the file untouched.
    Returns whether it wrote."""
    path = grid_dir / "grid.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))  # pragma: no mutate (ASCII JSON: any codec name reads it)
    except (OSError, ValueError):
        old = None  # pragma: no mutate ("" is no dict either)
    commit, dirty = git_state()
    provenance = {"gptlab_version": __version__, "git_commit": commit, "git_dirty": dirty,
                  "device": device_name(device), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if not trained and isinstance(old, dict) and all(k in old for k in provenance):
        provenance = {k: old[k] for k in provenance}
    return write_if_changed(path, json.dumps({**grid.manifest(), **provenance}, indent=1))


# -- local processes ---------------------------------------------------------------------------------------
# Not mutated (`no mutate block`): processes, queues and signals, run in spawned workers that mutmut cannot map to
# a test; test_runner.py and test_hostile.py test them end to end (workers, kill -9, Ctrl-C), seconds a run.

_events: Any = None


def _watch_parent(parent: int) -> None:  # pragma: no mutate block (a worker's)
    """Exit when the parent dies (kill -9 leaves spawned workers orphaned otherwise)."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _init_worker(events: Any, threads: int, parent: int, slots: Any) -> None:  # pragma: no mutate block (a worker's)
    global _events
    _events = events
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the workers
    torch.set_num_threads(threads)
    slot = slots.get()
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(slot % torch.cuda.device_count())
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    load_plugins_from_env()  # the variants the parent's plugins registered


def _execute_in_worker(job: Job) -> list[RunRecord]:  # pragma: no mutate block (a worker's)
    return execute_job(job, _events.put)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalProcessExecutor:
    """``jobs`` spawned worker processes on this machine; the CPU cores are split between them, and with
    several GPUs each worker takes its own (worker i on GPU i mod count). An interrupt terminates them."""

    def __init__(self, jobs: int = 1, cores: int | None = None) -> None:
        self.jobs = max(1, jobs)
        self.threads = max(1, (cores or available_cores()) // self.jobs)

    def run(self, jobs: Iterable[Job], on_event: OnEvent, on_done: OnDone) -> None:  # pragma: no mutate block
        queued = drawn(jobs)
        if queued is None:
            return
        context = multiprocessing.get_context("spawn")
        events, slots = context.Queue(), context.Queue()
        for slot in range(self.jobs):
            slots.put(slot)
        pool = ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_worker,
                                   initargs=(events, self.threads, os.getpid(), slots))
        futures: dict[Future[list[RunRecord]], Job] = {}
        pending: set[Future[list[RunRecord]]] = set()
        try:
            # a job is drawn, and so claimed, only when a worker is free to start it
            for job in queued:
                while len(pending) >= self.jobs:
                    pending = self.collect(pending, futures, events, on_event, on_done)
                future = pool.submit(_execute_in_worker, job)
                futures[future] = job
                pending.add(future)
            while pending:
                pending = self.collect(pending, futures, events, on_event, on_done)
            drain(events, on_event)
        except BaseException:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()  # interrupt means stop now: what finished is saved, the rest is dropped
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    @staticmethod
    def collect(pending: set[Future[list[RunRecord]]], futures: dict[Future[list[RunRecord]], Job], events: Any,
                on_event: OnEvent, on_done: OnDone) -> set[Future[list[RunRecord]]]:  # pragma: no mutate block
        """Waits a moment for jobs to end, passes on their events and hands each ended job to ``on_done``."""
        done, still = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
        drain(events, on_event)
        for future in done:
            try:
                records = future.result()
            except Exception as err:  # a job that raises is reported as failed, and the grid goes on
                on_done(futures[future], None, one_line(err))
            else:
                on_done(futures[future], records, None)
        return still


def drain(events: Any, on_event: OnEvent) -> None:
    while True:
        try:
            on_event(events.get_nowait())  # pragma: no mutate (on_event(None) never empties the queue: a hang, a timeout)
        except queue.Empty:
            return


# -- the library call --------------------------------------------------------------------------------------


@dataclass
class GridOutcome:
    """What ``run_grid`` planned and did: runs already done, the jobs trained, and each run's outcome."""

    specs: list[RunSpec]
    todo: list[RunSpec]
    jobs: list[Job]
    finished: dict[str, str] = field(default_factory=dict)  # key -> "done" | "diverged"
    failed: dict[str, str] = field(default_factory=dict)    # key -> one-line reason
    held: dict[str, str] = field(default_factory=dict)      # key -> who holds it (another process trains it)


class Driver:
    """Saves what an executor hands back and keeps the outcome: each record is written atomically the
    moment its job returns, then the run's lock is released and its end is reported."""

    def __init__(self, runs_dir: Path, locks: Locks, outcome: GridOutcome, on_event: OnEvent | None) -> None:
        self.runs_dir, self.locks, self.outcome, self.then = runs_dir, locks, outcome, on_event

    def event(self, event: RunEvent) -> None:
        self.locks.heartbeat()
        if self.then is not None:
            self.then(event)

    def done(self, job: Job, records: list[RunRecord] | None, error: str | None) -> None:
        for i, spec in enumerate(job.specs):
            if records is not None:
                save_record(self.runs_dir, records[i])
                self.outcome.finished[spec.key] = records[i].status
                event = RunEvent("finished", spec.key, label(spec), status=records[i].status)
            else:
                self.outcome.failed[spec.key] = error or "failed"
                event = RunEvent("failed", spec.key, label(spec), error=error)
            self.locks.release(spec.key)
            self.event(event)


def claim(jobs: list[Job], locks: Locks, outcome: GridOutcome, on_event: OnEvent | None,
          since: str = "") -> Iterator[Job]:
    """Each job with the runs this process could lock, locked as the job is drawn (just before it trains); a run
    another live process holds, or has finished since ``since`` (when this process planned), is left to it, so
    two processes on one folder share out a grid's runs and train each once."""
    for job in jobs:
        mine = []
        for spec in job.specs:
            if not locks.acquire(spec.key):
                elsewhere = describe(lock_path(locks.runs_dir, spec.key))
            elif is_finished(locks.runs_dir, spec, since):
                locks.release(spec.key)
                elsewhere = "another process, which has finished it"
            else:
                mine.append(spec)
                continue
            outcome.held[spec.key] = elsewhere
            if on_event is not None:
                on_event(RunEvent("held", spec.key, label(spec), error=elsewhere))
        if mine:
            yield Job(tuple(mine), job.note if len(mine) == len(job.specs) else f"group of {len(mine)} seeds"
                      if len(mine) > 1 else "alone (the other seeds are held elsewhere)")


def plan(grid: Grid, out: str | Path, force: bool = False, group_seeds: bool | None = None,
         kept: Collection[str] = ()) -> GridOutcome:
    """What ``run_grid`` would do: the runs without a record (all with ``force``, but those ``kept``), as jobs."""
    specs = grid.runs()
    todo = to_run(specs, Path(out) / grid.name / "runs", force, kept)
    grouping = default_grouping(specs[0].config.train.device) if group_seeds is None else group_seeds
    return GridOutcome(specs, todo, plan_jobs(todo, grouping))


def run_grid(grid: Grid, out: str | Path = "reports", jobs: int = 1, force: bool = False,
             group_seeds: bool | None = None, executor: Executor | None = None,
             on_event: OnEvent | None = None, kept: Collection[str] = ()) -> GridOutcome:
    """Train the grid's runs that have no record yet (all with ``force``) into ``out/<grid.name>/runs/``.

    Runs that differ only in their seed train as one stacked model where ``group_seeds`` (default: on CUDA).
    Each run is locked while it trains, so another process on the same folder trains the others. grid.json is
    written when runs are trained (or the grid's description changed). ``on_event`` sees every event. Reports
    are the caller's next step (``gptlab.report.render``).
    """
    from gptlab.device import resolve_device

    # a record created after this moment is another process's work (claim skips it)
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")  # pragma: no mutate (now(None): local time, UTC here)
    outcome = plan(grid, out, force, group_seeds, kept)
    grid_dir = Path(out) / grid.name
    write_manifest(grid, grid_dir, str(resolve_device(outcome.specs[0].config.train.device)),
                   trained=bool(outcome.todo))
    locks = Locks(grid_dir / "runs")
    try:
        claimed = claim(outcome.jobs, locks, outcome, on_event, since)
        driver = Driver(grid_dir / "runs", locks, outcome, on_event)
        (executor or LocalProcessExecutor(jobs)).run(claimed, driver.event, driver.done)
    finally:
        locks.release_all()
    return outcome


DEFAULT_MAX_SEEDS = 40  # per variant, for --until-settled


@dataclass
class Round:
    """One round of seeds until settled: the look just taken, and the seeds each variant gets for the next."""

    settlement: Settlement
    added: dict[str, list[int]]  # variant -> the seeds it gets next (empty: settled, budget spent, or stuck)


def run_until_settled(grid: Grid, out: str | Path, max_seeds: int, jobs: int, force: bool, group_seeds: bool | None,
                      executor: Executor | None, on_event: OnEvent | None,
                      on_round: Callable[[Round], None] | None) -> GridOutcome:
    """Train the grid, then add seeds in rounds of the grid's seed count (counting on from its largest seed) to
    the variants that an unsettled claim involves, until every claim holds or is contradicted at the rule's
    looks (``gptlab.sequential``) or ``max_seeds`` per variant are spent. The added runs are ordinary records;
    which variant needs which seeds is replayed from the records each round, so the same call resumes. A variant
    keeps every seed it has on record (within ``max_seeds``), even where restated claims settle at an earlier look:
    the replay stops at the look where they settle, so the seeds past it stay in the report without changing a
    verdict. ``force`` retrains every run once. Returns the rounds' outcomes as one: at most one round a look."""
    from gptlab.results import load_grid_runs
    from gptlab.sequential import Design

    grid.design = Design(len(grid.seeds), len(grid.seeds), max_seeds)
    grid.seed_counts = seeds_on_record(grid, Path(out) / grid.name / "runs", max_seeds)
    outcomes: list[GridOutcome] = []
    for _ in grid.design.looks():
        trained = {key for o in outcomes for key in o.finished}
        outcomes.append(run_grid(grid, out, jobs, force, group_seeds, executor, on_event, kept=trained))
        settlement = load_grid_runs(Path(out) / grid.name).settlement(grid.design)
        before = {name: grid.seeds_of(name) for name in settlement.wanted}
        raised = {name: max(n, len(before[name])) for name, n in settlement.wanted.items()}  # a count never falls
        grid.seed_counts = {**grid.seed_counts, **raised}
        added = {name: grid.seeds_of(name)[len(seeds):] for name, seeds in before.items()
                 if len(grid.seeds_of(name)) > len(seeds)}  # none where the look waits on runs that failed
        if on_round is not None:
            on_round(Round(settlement, added))
        if not added:
            break
    return merged(outcomes)


def seeds_on_record(grid: Grid, runs_dir: Path, max_seeds: int) -> dict[str, int]:
    """variant -> its seeds up to its last seed (of the first ``max_seeds``) with a record in ``runs_dir``, where
    more than the grid's: the seed count that keeps in the grid every run trained for it."""
    budget = replace(grid, seed_counts=dict.fromkeys(grid.variant_names, max_seeds))
    counts: dict[str, int] = {}
    for spec in budget.runs():
        if is_finished(runs_dir, spec):
            counts[spec.variant] = budget.seeds_of(spec.variant).index(spec.seed) + 1  # the seeds come in order
    return {name: n for name, n in counts.items() if n > len(grid.seeds)}


def merged(outcomes: list[GridOutcome]) -> GridOutcome:
    """Rounds of one grid as one outcome: the last round's runs, and every round's jobs and ends."""
    joined = GridOutcome(outcomes[-1].specs, [s for o in outcomes for s in o.todo], [j for o in outcomes for j in o.jobs])
    for outcome in outcomes:
        joined.finished.update(outcome.finished)
        joined.failed.update(outcome.failed)
        joined.held.update(outcome.held)
    return joined
