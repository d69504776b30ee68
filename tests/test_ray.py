"""RayExecutor: the same records and table as local processes, resume after a killed driver, a killed worker
retried, a real local cluster of two nodes, and a one-line hint without Ray.

Run with ``pytest -m ray tests/test_ray.py`` (needs ``pip install -e '.[ray]'``; about two minutes on two cores).
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

pytestmark = pytest.mark.ray


def write_grid(folder, name, iters, lrs, seeds, extra="", data=None):
    path = folder / f"{name}.yaml"
    sets = f"train.max_iters: {iters}, train.eval_interval: {iters // 2}, train.eval_windows: 16"
    sets += f", data.path: {data}" if data else ""
    path.write_text(f"name: {name}\npreset: bigram\nset: {{{sets}}}\ngrid: {{train.lr: {lrs}}}\nseeds: {seeds}\n{extra}")
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


def stop(pids):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in still_alive(pids, 0):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not still_alive(pids, 10):
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
    local = run_grid(grid, tmp_path / "local", jobs=2, group_seeds=False, executor=LocalProcessExecutor(2))
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
run_grid(load_grid(sys.argv[1]), sys.argv[2], group_seeds=False, executor=RayExecutor())
"""


def test_kill_9_of_the_driver_keeps_finished_runs_leaves_no_ray_behind_and_resumes(tmp_path, ray_tmp):
    path = write_grid(tmp_path, "killed", 300, [0.01, 0.02, 0.03], [1, 2])
    runs = tmp_path / "out" / "killed" / "runs"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), str(tmp_path / "out")], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (runs.is_dir() and any(runs.glob("*.json"))) and time.monotonic() < deadline:
        assert driver.poll() is None
        time.sleep(0.02)
    started_by_driver = ray_processes(ray_tmp) | {driver.pid}
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not still_alive(started_by_driver, 30)  # Ray's processes share the fate of the driver that started them
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.glob("*.json")}
    assert 1 <= len(kept) < 6

    events = []
    outcome = run_grid(load_grid(path), tmp_path / "out", group_seeds=False, executor=RayExecutor(),
                       on_event=events.append)
    trained = {e.key for e in events if e.kind == "start"}
    assert trained == {s.key for s in outcome.todo} == {s.key for s in outcome.specs} - {p.stem for p in kept}
    assert len(outcome.finished) == 6 - len(kept) and not outcome.failed
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept  # byte-identical, untouched
    assert all(load_record(runs / f"{s.key}.json").key == s.key for s in outcome.specs)
    assert not list(runs.glob("*.lock"))


def test_a_killed_worker_is_retried_and_the_grid_completes(tmp_path, ray_tmp):
    grid = load_grid(write_grid(tmp_path, "retried", 1500, [0.01, 0.02], [1]))
    killed = []
    events = []

    def kill_a_worker(event):
        events.append(event)
        if event.kind == "progress" and event.step > 0 and not killed:
            table = processes()
            workers = sorted(pid for pid in ray_processes(ray_tmp) if table[pid][1].startswith("ray::train_job"))
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])

    outcome = run_grid(grid, tmp_path / "out", group_seeds=False, executor=RayExecutor(), on_event=kill_a_worker)
    assert killed and not outcome.failed and len(outcome.finished) == 2
    starts = [e.key for e in events if e.kind == "start"]
    assert sorted(starts.count(key) for key in set(starts)) == [1, 2]  # the killed run started again
    assert all(load_record(tmp_path / "out" / "retried" / "runs" / f"{s.key}.json") for s in outcome.specs)


def test_a_local_cluster_of_two_nodes_trains_the_grid_through_an_address(tmp_path, ray_tmp, monkeypatch):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # `ray start --head` turns token auth on; the others must follow
    (tmp_path / "corpus.txt").write_text((Path(__file__).parents[1] / "data" / "tinyshakespeare.txt").read_text())
    monkeypatch.chdir(tmp_path)  # data.path "corpus.txt" resolves here, on the driver only: the workers run in /
    try:
        subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                        f"--temp-dir={ray_tmp}/ray"], check=True, capture_output=True, timeout=120, cwd="/")
        subprocess.run([ray_cli, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2"], check=True,
                       capture_output=True, timeout=120, cwd="/")  # the head has no CPU: every run goes here
        grid = load_grid(write_grid(tmp_path, "cluster", 200, [0.01, 0.02], [1], data="corpus.txt"))
        outcome = run_grid(grid, tmp_path / "out", group_seeds=False, executor=RayExecutor(f"127.0.0.1:{port}"))
        assert not outcome.failed and len(outcome.finished) == 2
        assert all(load_record(tmp_path / "out" / "cluster" / "runs" / f"{s.key}.json") for s in outcome.specs)
    finally:
        stop(ray_processes(ray_tmp, f":{port}"))


def test_without_ray_the_executor_says_how_to_install_it_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(GptlabError) as raised:
        require_ray()
    assert str(raised.value) == INSTALL_HINT == "--executor ray needs Ray: pip install 'gptlab[ray]'"
    with pytest.raises(GptlabError):
        RayExecutor().run([object()], print, print)  # type: ignore[list-item]
    probe = "import sys, gptlab.cli, gptlab.runner, gptlab.ray_executor; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
