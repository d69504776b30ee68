"""Runs a grid's jobs as Ray tasks: on a local Ray instance, or on a running cluster (``address="auto"`` or
``"HOST:6379"`` on one of its nodes, ``"ray://HOST:10001"`` through Ray Client from outside it).

What is shared and what is not:

- the corpus: the driver reads each ``data.path`` once and puts the text in Ray's object store; every task
  gets it from there, so the workers need no shared filesystem and no copy of the data;
- the code: each worker imports ``gptlab`` and ``torch`` itself: every node needs them installed (the driver's
  versions);
- the records: a task returns its ``RunRecord`` objects as data, and the driver (``runner.Driver``) writes them
  to ``<out>/<grid>/runs/`` the moment the task ends. Workers write no files; resume works as it does locally:
  a run with a record is not trained again;
- progress: workers send their (throttled) events to a small actor without waiting for it; the driver takes
  them from there for its ``on_event``.

Each job is one task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (a fraction lets small runs
share a GPU; a task given no GPU is shown none). A task whose worker process dies is retried by Ray
(``max_retries``); one that raises is reported as failed and the other jobs go on. Ray is imported inside
functions only: ``import gptlab`` never imports it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterable

from gptlab.data import read_text
from gptlab.errors import GptlabError, one_line
from gptlab.record import RunRecord
from gptlab.learner import load_plugins_from_env
from gptlab.runner import Job, OnDone, OnEvent, RunEvent, drawn, execute_job

INSTALL_HINT = "--executor ray needs Ray: pip install 'gptlab[ray]'"
POLL_S = 0.1  # how often the driver looks for finished tasks and new progress events
EVENTS_WAIT_S = 10.0  # at most this long a finished task waits for its last event to reach the log


def require_ray() -> None:
    """Raise a one-line GptlabError when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise GptlabError(INSTALL_HINT) from None


class EventLog:
    """The actor between workers and driver: workers add events, the driver takes what has arrived."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []

    def add(self, event: RunEvent) -> None:
        self.events.append(event)

    def take(self) -> list[RunEvent]:
        events, self.events = self.events, []
        return events


def train_job(job: Job, text: str, threads: int, log: Any) -> list[RunRecord]:
    """The Ray task: train one job in this worker process and return its records."""
    import ray
    import torch

    if not ray.get_gpu_ids():  # Ray gave this task no GPU (Ray 2.60 no longer hides them itself): use none
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(threads)
    load_plugins_from_env()  # a node needs the plugin files at the driver's paths (docs/ray.md)
    last: list[Any] = []

    def emit(event: RunEvent) -> None:
        last[:] = [log.add.remote(event)]  # sent, not waited for

    records = execute_job(job, emit, text)
    if last:
        ray.wait(last, timeout=EVENTS_WAIT_S)  # an actor runs one caller's calls in order: all events are in
    return records


class RayExecutor:
    """Each job is one Ray task (see the module's docstring for what travels where). ``address`` None starts
    a local Ray instance (unless RAY_ADDRESS names a cluster); "auto", "HOST:PORT" or "ray://HOST:10001"
    connects to a running one."""

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 max_retries: int = 2) -> None:
        if cpus_per_run <= 0:
            raise GptlabError(f"--cpus-per-run = {cpus_per_run} is not allowed; must be > 0")
        if gpus_per_run < 0:
            raise GptlabError(f"--gpus-per-run = {gpus_per_run} is not allowed; must be >= 0")
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run
        self.max_retries = max_retries
        self.threads = max(1, int(cpus_per_run))

    def run(self, jobs: Iterable[Job], on_event: OnEvent, on_done: OnDone) -> None:
        """Submits every job at once (Ray queues them on the cluster), so each is claimed as it is submitted."""
        queued = drawn(jobs)
        if queued is None:
            return
        require_ray()
        import ray

        ours = not ray.is_initialized()  # a caller's own Ray session is used as it is, and left running
        if ours:
            try:
                ray.init(address=self.address)
            except Exception as err:  # no cluster there, a refused token, ...: one line, as for any bad option
                where = f"--address = {self.address}" if self.address else "a local Ray instance"
                raise GptlabError(f"{where}: {one_line(err)}") from None
        try:
            self.run_tasks(ray, queued, on_event, on_done)
        finally:
            if ours:
                ray.shutdown()  # stops the local instance it started; from a cluster it only disconnects

    def run_tasks(self, ray: Any, jobs: Iterable[Job], on_event: OnEvent, on_done: OnDone) -> None:
        log = ray.remote(num_cpus=0, max_restarts=-1)(EventLog).remote()
        task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=self.max_retries,
                          retry_exceptions=False)(train_job)
        texts: dict[str, Any] = {}        # data.path -> its text in the object store
        unreadable: dict[str, str] = {}   # data.path -> why the driver could not read it
        refs: dict[Any, Job] = {}
        for job in jobs:
            path = job.specs[0].config.data.path
            if path not in texts and path not in unreadable:
                try:
                    texts[path] = ray.put(read_text(path))
                except GptlabError as err:
                    unreadable[path] = one_line(err)
            if path in unreadable:
                on_done(job, None, unreadable[path])
            else:
                refs[task.remote(job, texts[path], self.threads, log)] = job
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                for event in take(ray, log):
                    on_event(event)
                for ref in done:
                    try:
                        records = ray.get(ref)
                    except Exception as err:  # a job that raises is reported as failed, and the grid goes on
                        on_done(refs[ref], None, one_line(cause(err)))
                    else:
                        on_done(refs[ref], records, None)
        except BaseException:
            for ref in pending:  # an interrupt means stop now: what finished is saved, the rest is dropped
                ray.cancel(ref, force=True)
            raise
        finally:
            with contextlib.suppress(Exception):  # a lost connection must not hide why the loop ended
                ray.kill(log)


def take(ray: Any, log: Any) -> list[RunEvent]:
    """The events that arrived since the last call; none if the log is lost (progress is decoration)."""
    try:
        return list(ray.get(log.take.remote()))
    except Exception:
        return []


def cause(err: Exception) -> BaseException:
    """The exception a task raised, out of Ray's wrapper (a RayTaskError keeps it as ``cause``)."""
    inner = getattr(err, "cause", None)
    return inner if isinstance(inner, BaseException) else err
