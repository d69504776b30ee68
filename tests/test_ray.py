"""RayExecutor: the same records and table as local processes, Ctrl-C and kill -9 of the driver then resume, a
killed worker retried, a real local cluster of two nodes (by address and by Ray Client), a one-line hint without
Ray.

Run with ``pytest -m ray tests/test_ray.py`` (needs ``pip install -e '.[ray]'``). It starts Ray six times (one of
them a two-node cluster): on two cores 2 min 3-6 s at a 1-minute load of 1-2, 4 min 16 s at about 6.
Every Ray process a test starts lives under its own RAY_TMPDIR; the ``ray_tmp`` fixture checks that none is
left behind and stops, by pid, any that is (not ``ray stop``, which would stop every Ray instance of the machine).
"""

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gptlab.errors import GptlabError
from gptlab.grid import load_grid
from gptlab.ray_executor import INSTALL_HINT, RayExecutor, require_ray
from gptlab.record import load_record
from gptlab.results import load_grid_runs, summarize_grid
from gptlab.runner import LocalProcessExecutor, run_grid
from tests.conftest import interruptible

pytestmark = pytest.mark.ray


def write_grid(folder, name, iters, lrs, seeds, extra="", data=None):
    path = folder / f"{name}.yaml"
    sets = f"train.max_iters: {iters}, train.eval_interval: {iters // 2}, train.eval_windows: 16"
    sets += f", data.path: {data}" if data else ""
    path.write_text(f"name: {name}\npreset: bigram\nset: {{{sets}}}\ngrid: {{train.lr: {lrs}}}\n"
                    f"seeds: {seeds}\n{extra}")
    return path


# -- Ray's processes, found and stopped by pid ----------------------------------------------------------------


def processes():
    """pid -> (parent pid, command line) of every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rpartition(")")[2].split()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if state[0] != "Z":
                table[int(entry.name)] = (int(state[1]), command)
    return table


def ray_processes(*marks):
    """The processes whose command line holds one of ``marks`` (Ray's session folder, its port), and their
    descendants (workers rename themselves ``ray::...``)."""
    table = processes()
    found = {pid for pid, (_, command) in table.items() if any(m in command for m in marks) and pid != os.getpid()}
    while True:
        more = {pid for pid, (parent, _) in table.items() if parent in found} - found
        if not more:
            return found
        found |= more


def still_alive(pids, within):
    deadline = time.monotonic() + within
    while True:
        alive = set(pids) & set(processes())
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def stop(pids, grace=3.0):
    """SIGTERM, and SIGKILL what is still there ``grace`` seconds later (what `ray stop` does, by pid)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in still_alive(pids, 0):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not still_alive(pids, grace):
            return


@pytest.fixture
def ray_tmp(monkeypatch):
    """A short, fresh RAY_TMPDIR (Ray's sockets live under it); at the end no Ray process of it may be left."""
    pytest.importorskip("ray")
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", folder)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield folder
    left = still_alive(ray_processes(folder), 20)
    stop(left)
    shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"Ray processes left behind: {sorted(left)}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the tests ------------------------------------------------------------------------------------------------


def test_ray_gives_the_records_and_table_of_local_processes_and_the_same_failures(tmp_path, ray_tmp):
    (tmp_path / "tiny.txt").write_text("abcde")  # shorter than a block: fails inside the worker
    extra = (f"variants:\n  - {{name: tiny text, set: {{data.path: {tmp_path / 'tiny.txt'}}}}}\n"
             f"  - {{name: no text, set: {{data.path: {tmp_path / 'missing.txt'}}}}}\n")
    grid = load_grid(write_grid(tmp_path, "same", 200, [0.01, 0.02], [1, 2], extra))
    local = run_grid(grid, tmp_path / "local", group_seeds=False, executor=LocalProcessExecutor(jobs=2))
    events = []
    remote = run_grid(grid, tmp_path / "ray", group_seeds=False, executor=RayExecutor(), on_event=events.append)

    assert remote.finished == local.finished and len(remote.finished) == 4
    assert remote.failed == local.failed and len(remote.failed) == 4
    for spec in grid.runs():
        if spec.variant == "tiny text":  # raised in the worker: Ray's wrapper is taken off
            assert remote.failed[spec.key].startswith("GptlabError: model.block_size = 8 is too long")
        elif spec.variant == "no text":  # the driver could not read it: nothing was sent
            assert remote.failed[spec.key] == f"GptlabError: data.path = '{tmp_path / 'missing.txt'}': no such file"
    assert {e.kind for e in events} == {"start", "progress", "finished", "failed"}
    assert [e.step for e in events if e.kind == "progress" and e.val_loss is not None].count(200) == 4
    for key in remote.finished:
        a = load_record(tmp_path / "local" / "same" / "runs" / f"{key}.json")
        b = load_record(tmp_path / "ray" / "same" / "runs" / f"{key}.json")
        assert (a.variant, a.seed, a.status, a.params, a.sample) == (b.variant, b.seed, b.status, b.params, b.sample)
        assert b.final_val_loss == pytest.approx(a.final_val_loss, abs=1e-6)
        assert [r["val_loss"] for r in b.history] == pytest.approx([r["val_loss"] for r in a.history], abs=1e-6)

    def table(folder):
        return [dataclasses.replace(row, tokens_per_sec=None) for row in summarize_grid(load_grid_runs(folder))]

    local_rows, ray_rows = table(tmp_path / "local" / "same"), table(tmp_path / "ray" / "same")
    assert [r.variant for r in ray_rows] == [r.variant for r in local_rows]
    for a, b in zip(local_rows, ray_rows):
        for name, value in a.to_dict().items():
            assert b.to_dict()[name] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value)


DRIVER = """
import sys
from gptlab.grid import load_grid
from gptlab.ray_executor import RayExecutor
from gptlab.runner import run_grid
outcome = run_grid(load_grid(sys.argv[1]), sys.argv[2], group_seeds=False, executor=RayExecutor(*sys.argv[3:]))
print(len(outcome.finished), len(outcome.failed))
"""  # a driver of its own: Ray reads RAY_AUTH_MODE once per process, and a kill -9 must not hit pytest


def test_ctrl_c_then_kill_9_of_the_driver_keep_finished_runs_leave_no_ray_behind_and_resume(tmp_path, ray_tmp):
    path = write_grid(tmp_path, "killed", 300, [0.01, 0.02, 0.03, 0.04], [1, 2])
    runs = tmp_path / "out" / "killed" / "runs"

    def driver_after_a_new_record():
        before = len(list(runs.glob("*.json")))
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), "out"], cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                  preexec_fn=interruptible)
        deadline = time.monotonic() + 120
        while len(list(runs.glob("*.json"))) == before and time.monotonic() < deadline:
            assert driver.poll() is None
            time.sleep(0.02)
        table = processes()
        started = ray_processes(ray_tmp)
        return driver, started, {pid for pid in started if table[pid][1].startswith(
            ("ray::DashboardAgent", "ray::RuntimeEnvAgent"))}

    driver, started, _ = driver_after_a_new_record()
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C in a terminal: the driver's whole process group
    assert driver.wait(timeout=20) == -signal.SIGINT  # KeyboardInterrupt: tasks cancelled, Ray shut down
    assert not still_alive(started, 10) and not list(runs.glob("*.lock"))

    driver, started, agents = driver_after_a_new_record()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    # Ray's processes share the fate of the driver that started them: its workers, raylet and GCS stop at once;
    # the raylet's two agents (helpers that train nothing) exit by themselves a minute later: stopped here
    assert len(started - agents) >= 4 and not still_alive(started - agents, 30)
    stop(agents, grace=0)
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.glob("*.json")}
    assert 2 <= len(kept) < 8

    events = []  # the rerun trains a variant's two seeds as one stacked model: one task, two records
    outcome = run_grid(load_grid(path), tmp_path / "out", group_seeds=True, executor=RayExecutor(),
                       on_event=events.append)
    trained = {e.key for e in events if e.kind == "start"}
    assert trained == {s.key for s in outcome.todo} == {s.key for s in outcome.specs} - {p.stem for p in kept}
    assert len(outcome.finished) == 8 - len(kept) and not outcome.failed
    groups = [job for job in outcome.jobs if len(job.specs) == 2]
    assert groups and all(load_record(runs / f"{s.key}.json").extra["group"]["size"] == 2
                          for job in groups for s in job.specs)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept  # byte-identical, untouched
    assert all(load_record(runs / f"{s.key}.json").key == s.key for s in outcome.specs)
    assert not list(runs.glob("*.lock"))


def test_a_killed_worker_is_retried_in_the_programs_own_ray_session(tmp_path, ray_tmp):
    grid = load_grid(write_grid(tmp_path, "retried", 1500, [0.01, 0.02], [1]))
    killed = []
    events = []

    def kill_a_worker(event):
        events.append(event)
        if event.kind == "progress" and event.step > 0 and not killed:
            table = processes()  # a worker names itself after the task it runs
            workers = sorted(p for p in ray_processes(ray_tmp) if table.get(p, (0, ""))[1].startswith("ray::train_job"))
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])

    import ray

    ray.init()  # the program's own Ray session: the executor uses it and leaves it running
    try:
        outcome = run_grid(grid, tmp_path / "out", group_seeds=False, executor=RayExecutor(), on_event=kill_a_worker)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert killed and not outcome.failed and len(outcome.finished) == 2
    starts = [e.key for e in events if e.kind == "start"]
    assert sorted(starts.count(key) for key in set(starts)) == [1, 2]  # the killed run started again
    assert all(load_record(tmp_path / "out" / "retried" / "runs" / f"{s.key}.json") for s in outcome.specs)


def test_a_local_cluster_of_two_nodes_trains_through_an_address_and_through_ray_client(tmp_path, ray_tmp):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port, client_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # `ray start --head` turns token auth on: the others follow
    (tmp_path / "corpus.txt").write_text((Path(__file__).parents[1] / "data" / "tinyshakespeare.txt").read_text())
    runs = tmp_path / "out" / "cluster" / "runs"

    def drive(seeds, address):
        path = write_grid(tmp_path, "cluster", 200, [0.01, 0.02], seeds, data="corpus.txt")
        driver = subprocess.run([sys.executable, "-c", DRIVER, str(path), "out", address], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=240)
        assert driver.returncode == 0 and driver.stdout.split() == ["2", "0"], driver.stderr[-2000:]
        return {p: p.read_bytes() for p in runs.glob("*.json")}

    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", f"--ray-client-server-port={client_port}",
                        "--num-cpus=0", "--include-dashboard=false", f"--temp-dir={ray_tmp}/ray"],
                       check=True, capture_output=True, timeout=120, cwd="/", env=env)
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2"], check=True,
                       capture_output=True, timeout=120, cwd="/", env=env)  # the head has no CPU: runs go here
        # data.path "corpus.txt" is found in the driver's folder only (the workers run in /): the text travels
        first = drive([1], f"127.0.0.1:{port}")
        both = drive([1, 2], f"ray://127.0.0.1:{client_port}")  # seed 1 is done: only seed 2's runs train
    finally:
        stop(ray_processes(ray_tmp, f":{port}"))
    assert len(first) == 2 and len(both) == 4 and {p: both[p] for p in first} == first
    assert sorted(load_record(p).seed for p in both) == [1, 1, 2, 2]


def test_no_cluster_at_the_address_is_one_line(ray_tmp, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(GptlabError, match=r"^--address = auto: ConnectionError: Could not find any running Ray"):
        RayExecutor(address="auto").run([object()], print, print)


def test_without_ray_the_executor_says_how_to_install_it_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(GptlabError) as raised:
        require_ray()
    assert str(raised.value) == INSTALL_HINT == "--executor ray needs Ray: pip install 'gptlab[ray]'"
    with pytest.raises(GptlabError):
        RayExecutor().run([object()], print, print)
    probe = "import sys, gptlab.cli, gptlab.runner, gptlab.ray_executor; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
