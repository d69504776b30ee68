"""Runs a grid's jobs as Ray tasks: on a local Ray instance, or on an existing cluster (``address="auto"`` on
one of its nodes, ``"ray://HOST:10001"`` from outside it).

What is shared and what is not:

- the corpus: the driver reads each ``data.path`` once and puts its text in Ray's object store; every task gets
  it from there, so the workers need no shared filesystem (and no copy of the data);
- the code: each worker imports ``gptlab`` and ``torch`` itself, so every node needs them installed (the same
  versions as the driver);
- the records: a task returns its ``RunRecord`` objects as data; the driver (``runner.Driver``) writes them to
  ``reports/<grid>/runs/`` the moment each task ends. Workers write no files, and resume works as it does
  locally: a run with a record is not trained again;
- progress: workers send their (throttled) events to a small actor, without waiting for it; the driver collects
  them from there for its ``on_event``.

Each job is one task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (a fraction lets several small
runs share a GPU). A task whose worker process dies is retried by Ray (``max_retries``); one that raises is
reported as failed and the other jobs go on. Ray is imported only here, inside functions: ``import gptlab``
never imports it.
"""

from __future__ import annotations

from typing import Any, Sequence

from gptlab.data import read_text
from gptlab.errors import GptlabError, one_line
from gptlab.record import RunRecord
from gptlab.runner import Job, OnDone, OnEvent, RunEvent, execute_job

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
    """The actor between the workers and the driver: workers add events, the driver takes them."""

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

    torch.set_num_threads(threads)
    last: list[Any] = []

    def emit(event: RunEvent) -> None:
        last[:] = [log.add.remote(event)]  # sent, not waited for

    records = execute_job(job, emit, text)
    ray.wait(last, timeout=EVENTS_WAIT_S)  # the log takes calls in order: every event is in before the records
    return records


class RayExecutor:
    """Each job is one Ray task; see the module's docstring for what travels where."""

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 max_retries: int = 2) -> None:
        if cpus_per_run <= 0:
            raise GptlabError(f"--cpus-per-run = {cpus_per_run} is not allowed; must be > 0")
        if gpus_per_run < 0:
            raise GptlabError(f"--gpus-per-run = {gpus_per_run} is not allowed; must be >= 0")
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run
        self.max_retries = max_retries
        self.threads = max(1, int(cpus_per_run))

    def run(self, jobs: Sequence[Job], on_event: OnEvent, on_done: OnDone) -> None:
        if not jobs:
            return
        require_ray()
        import ray

        connected = not ray.is_initialized()
        if connected:  # None starts a local instance; an address connects to a running cluster
            ray.init(address=self.address)
        try:
            self.run_tasks(ray, jobs, on_event, on_done)
        finally:
            if connected:
                ray.shutdown()  # stops the local instance this call started; from a cluster it only disconnects

    def run_tasks(self, ray: Any, jobs: Sequence[Job], on_event: OnEvent, on_done: OnDone) -> None:
        log = ray.remote(num_cpus=0, max_restarts=-1)(EventLog).remote()
        task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=self.max_retries,
                          retry_exceptions=False)(train_job)
        texts: dict[str, Any] = {}  # data.path -> the text's object ref (or the one-line error reading it)
        refs: dict[Any, Job] = {}
        for job in jobs:
            path = job.specs[0].config.data.path
            if path not in texts:
                try:
                    texts[path] = ray.put(read_text(path))
                except GptlabError as err:
                    texts[path] = one_line(err)
            if isinstance(texts[path], str):
                on_done(job, None, texts[path])
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
            for ref in pending:  # interrupt means stop now: what finished is saved, the rest is dropped
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(log)


def take(ray: Any, log: Any) -> list[RunEvent]:
    """The events the workers sent since the last call; none when the log is lost (progress is decoration)."""
    try:
        return list(ray.get(log.take.remote()))
    except Exception:
        return []


def cause(err: Exception) -> BaseException:
    """The exception a task raised, out of Ray's wrapper (a RayTaskError's ``cause``)."""
    inner = getattr(err, "cause", None)
    return inner if isinstance(inner, BaseException) else err
