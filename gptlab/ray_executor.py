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
- progress: workers send their (throttled) events through a small queue actor to the driver's ``on_event``.

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


def require_ray() -> None:
    """Raise a one-line GptlabError when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise GptlabError(INSTALL_HINT) from None


def train_job(job: Job, text: str, threads: int, events: Any) -> list[RunRecord]:
    """The Ray task: train one job in this worker process and return its records."""
    import torch

    torch.set_num_threads(threads)

    def emit(event: RunEvent) -> None:
        try:
            events.put_nowait(event)
        except Exception:  # progress is decoration: a lost event must not fail the run
            pass

    return execute_job(job, emit, text)


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
        from ray.util.queue import Queue

        events = Queue(actor_options={"num_cpus": 0})
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
                refs[task.remote(job, texts[path], self.threads, events)] = job
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                drain(events, on_event)
                for ref in done:
                    try:
                        records = ray.get(ref)
                    except Exception as err:  # a job that raises is reported as failed, and the grid goes on
                        on_done(refs[ref], None, one_line(cause(err)))
                    else:
                        on_done(refs[ref], records, None)
            drain(events, on_event)
        except BaseException:
            for ref in pending:  # interrupt means stop now: what finished is saved, the rest is dropped
                ray.cancel(ref, force=True)
            raise
        finally:
            events.shutdown(force=True)


def cause(err: Exception) -> BaseException:
    """The exception a task raised, out of Ray's wrapper (a RayTaskError's ``cause``)."""
    inner = getattr(err, "cause", None)
    return inner if isinstance(inner, BaseException) else err


def drain(events: Any, on_event: OnEvent) -> None:
    count = events.qsize()
    if count:
        for event in events.get_nowait_batch(count):
            on_event(event)
