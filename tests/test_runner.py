import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gptlab import files
from gptlab.config import apply_overrides, preset
from gptlab.display import LiveProgress
from gptlab.files import write_atomic
from gptlab.grid import RunSpec, load_grid
from gptlab.record import load_record, save_record
from gptlab.runner import (Job, LocalProcessExecutor, RunEvent, execute_job, is_finished, plan_jobs, run_grid, to_run,
                           write_manifest)
from tests.conftest import interruptible

QUICK = {"train.max_iters": 20, "train.eval_interval": 10, "train.eval_windows": 32}


def spec(preset_name="lecture", variant="v", **overrides):
    cfg = apply_overrides(preset(preset_name), {**QUICK, **overrides})
    return RunSpec("g", variant, cfg.train.seed, cfg, cfg.key())


def test_execute_job_returns_a_full_record_and_reports_progress():
    events = []
    run = spec()
    (saved,) = execute_job(Job((run,)), events.append)
    assert (saved.key, saved.grid, saved.variant, saved.status) == (run.key, "g", "v", "done")
    assert saved.config == run.config.to_dict() and saved.git_dirty in (True, False, None)
    assert saved.final_val_loss == saved.history[-1]["val_loss"] and saved.params > 0
    assert saved.sample.startswith("\n") and len(saved.sample) == 301
    attention = saved.extra["attention"]
    assert len(attention["prompt"]) == 8 and len(attention["weights"]) == 8
    assert attention["weights"][0][1] == 0.0  # causal: the first token cannot read the second
    assert events[0].kind == "start" and events[-1].step == 20


def test_divergence_is_recorded_with_its_step():
    (saved,) = execute_job(Job((spec(**{"train.lr": 1e6}),)), lambda e: None)
    assert saved.status == "diverged" and saved.diverged_at is not None and saved.diverged_at <= 20
    assert saved.final_val_loss is None and saved.sample == "" and "attention" not in saved.extra
    assert all(v is None or v == v for row in saved.history for v in row.values())  # no NaN in the JSON


def test_a_group_returns_one_record_per_seed_with_its_group_noted():
    runs = [spec(variant="v", **{"train.seed": seed}) for seed in (1, 2)]
    records = execute_job(Job(tuple(runs)), lambda e: None)
    assert [(r.seed, r.key) for r in records] == [(1, runs[0].key), (2, runs[1].key)]
    assert records[0].final_val_loss != records[1].final_val_loss
    assert records[0].extra["group"]["size"] == 2 and records[0].sample and "attention" in records[0].extra


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_atomic(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_resume_skips_finished_runs_and_force_reruns_them(tmp_path):
    done, todo, corrupt = spec(variant="a"), spec(variant="b", **{"model.n_layer": 1}), spec(**{"model.n_layer": 2})
    (record,) = execute_job(Job((done,)), lambda e: None)
    save_record(tmp_path, record)
    (tmp_path / f"{corrupt.key}.json").write_text('{"schema": 1, "key": "trunc')
    assert is_finished(tmp_path, done) and not is_finished(tmp_path, corrupt)
    assert to_run([done, todo, corrupt], tmp_path, force=False) == [todo, corrupt]
    assert to_run([done, todo, corrupt], tmp_path, force=True) == [done, todo, corrupt]
    renamed = RunSpec("other-grid", done.variant, done.seed, done.config, done.key)
    assert not is_finished(tmp_path, renamed)  # the record is another grid's run: not this one's


def test_seeds_of_a_variant_are_grouped_and_the_rest_say_why_not():
    runs = [spec(variant="a", **{"train.seed": s}) for s in (1, 2, 3)] + [spec(variant="b", **{"model.n_layer": 1})]
    runs += [spec(variant="c", **{"train.compile": True, "train.seed": s}) for s in (1, 2)]
    jobs = plan_jobs(runs, group_seeds=True)
    assert [(len(j.specs), j.note) for j in jobs] == [
        (3, "group of 3 seeds"), (1, "alone (one seed to run)"),
        (1, "alone (train.compile: a compiled model trains alone)"),
        (1, "alone (train.compile: a compiled model trains alone)")]
    assert all(len(j.specs) == 1 and j.note == "alone (grouping off)" for j in plan_jobs(runs, group_seeds=False))


def test_processes_run_the_jobs_and_a_failing_job_does_not_stop_them():
    good, bad = spec("bigram", "good"), spec("bigram", "bad", **{"data.path": "/nonexistent/nope.txt"})
    done = {}
    LocalProcessExecutor(jobs=2).run([Job((bad,)), Job((good,))], lambda e: None,
                                     lambda job, records, error: done.update({job.specs[0].key: (records, error)}))
    assert done[good.key][0][0].status == "done" and done[good.key][1] is None
    assert done[bad.key][0] is None and done[bad.key][1].startswith("GptlabError: data.path = ")


def test_live_progress_ignores_progress_that_arrives_after_the_end():
    live = LiveProgress(1)
    live(RunEvent("finished", "k", "v · seed 1", status="diverged"))
    live(RunEvent("progress", "k", "v · seed 1", step=5, max_iters=10, train_loss=2.0))
    assert live.finished == 1 and live.tasks == {}
    assert live.bar.tasks[0].completed == 1


def test_threads_are_split_between_jobs():
    assert LocalProcessExecutor(jobs=2, cores=8).threads == 4
    assert LocalProcessExecutor(jobs=3, cores=2).threads == 1


def test_manifest_holds_the_grid_and_keeps_its_provenance_when_nothing_trains(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\ngrid: {model.n_layer: [1, 2]}\nseeds: [3]\n")
    grid = load_grid(path)
    assert write_manifest(grid, tmp_path / "g", "cpu", trained=True)
    manifest = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert manifest["variants"][1] == {"name": "n_layer=2", "preset": "lecture", "overrides": {"model.n_layer": 2}}
    assert manifest["seeds"] == [3] and manifest["baseline"] == "n_layer=1" and manifest["device"] == "cpu"
    assert {"gptlab_version", "git_commit", "git_dirty", "created", "source", "set", "metric", "claims",
            "scale"} <= set(manifest)
    stamped = dict(manifest, created="2000-01-01T00:00:00")
    (tmp_path / "g" / "grid.json").write_text(json.dumps(stamped, indent=1))
    assert not write_manifest(grid, tmp_path / "g", "cpu", trained=False)  # nothing trained: nothing written
    assert json.loads((tmp_path / "g" / "grid.json").read_text())["created"] == "2000-01-01T00:00:00"


def test_run_grid_saves_records_releases_locks_and_leaves_held_runs_alone(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\npreset: bigram\nset: {train.max_iters: 20, train.eval_interval: 10, "
                    "train.eval_windows: 16}\ngrid: {train.lr: [0.01, 0.02]}\nseeds: [1, 2]\n")
    grid = load_grid(path)
    runs_dir = tmp_path / "out" / "g" / "runs"
    runs_dir.mkdir(parents=True)
    held = grid.runs()[0]
    (runs_dir / f"{held.key}.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getppid()}))
    outcome = run_grid(grid, tmp_path / "out", group_seeds=True)
    assert outcome.held == {held.key: f"pid {os.getppid()} on {os.uname().nodename}"}
    assert len(outcome.finished) == 3 and not outcome.failed
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(
        [f"{held.key}.lock"] + [f"{s.key}.json" for s in grid.runs()[1:]])
    assert load_record(runs_dir / f"{grid.runs()[1].key}.json").extra.get("group") is None  # its partner was held


TINY_GRID = """
name: tiny
preset: bigram
set: {train.max_iters: 400, train.eval_interval: 200, train.eval_windows: 256}
grid:
  train.lr: [0.01, 0.02, 0.03, 0.04, 0.05]
seeds: [1]
"""


def start_grid(tmp_path, runs):
    command = [sys.executable, "-m", "gptlab.cli", "ablate", "tiny.yaml", "--out", "out", "--jobs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "ablate.log", "w") as log:  # what the grid printed, for a failure's message
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=interruptible)
    deadline = time.monotonic() + 60
    while not (runs.is_dir() and any(runs.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    return command, env, process


def test_kill_9_mid_grid_then_rerun_keeps_finished_runs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_GRID)
    runs = tmp_path / "out" / "tiny" / "runs"
    command, env, first = start_grid(tmp_path, runs)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1.5)  # the orphaned worker notices its parent is gone and exits, losing only its run in flight
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.glob("*.json")}
    assert 1 <= len(kept) < 5

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} already done, {5 - len(kept)} to run" in " ".join(rerun.stdout.split())
    assert len(list(runs.glob("*.json"))) == 5 and not list(runs.glob("*.lock"))  # the dead process's lock: taken over
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept
    assert len((tmp_path / "out" / "tiny" / "results.csv").read_text().splitlines()) == 6


def test_an_interrupt_stops_the_grid_within_seconds_and_keeps_what_finished(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_GRID.replace("400", "4000"))
    runs = tmp_path / "out" / "tiny" / "runs"
    command, env, process = start_grid(tmp_path, runs)
    time.sleep(0.5)
    assert process.poll() is None, (tmp_path / "ablate.log").read_text()  # mid-grid
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGINT)  # to the parent alone: it must stop its workers
    code = process.wait(timeout=20)
    assert code == 130, f"exit {code} {time.monotonic() - stopped_at:.1f} s after SIGINT, with " + \
        f"{len(list(runs.glob('*.json')))} records; it printed:\n" + (tmp_path / "ablate.log").read_text()
    assert time.monotonic() - stopped_at < 5
    time.sleep(1.0)
    done = list(runs.glob("*.json"))
    assert 1 <= len(done) < 5 and not list(runs.glob("*.lock"))
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in out and "spawn_main" not in out  # no worker left training


def test_adding_a_config_field_with_a_default_keeps_every_key_and_record(tmp_path, monkeypatch):
    """gptlab 0.2 keys hash only the non-default fields: a new field (at its default) re-keys nothing."""
    from gptlab.config import RunConfig

    path = tmp_path / "g.yaml"
    path.write_text("name: g\npreset: bigram\nset: {train.max_iters: 10, train.eval_interval: 10, "
                    "train.eval_windows: 8}\ngrid: {train.lr: [0.01, 0.02]}\n")
    grid = load_grid(path)
    run_grid(grid, tmp_path / "out")
    runs_dir = tmp_path / "out" / "g" / "runs"
    keys = [s.key for s in grid.runs()]
    original = RunConfig.to_dict

    def with_a_new_field(self):
        raw = original(self)
        return {**raw, "model": {**raw["model"], "new_knob": 0.5}}  # a field added in a later version

    monkeypatch.setattr(RunConfig, "to_dict", with_a_new_field)
    assert [s.key for s in load_grid(path).runs()] == keys
    assert to_run(load_grid(path).runs(), runs_dir, force=False) == []  # the old records still count as done
    assert all(load_record(runs_dir / f"{key}.json").key == key for key in keys)
    monkeypatch.setattr(RunConfig, "to_dict", lambda self: {**original(self), "model": {
        **original(self)["model"], "new_knob": 0.5 if self == RunConfig() else 0.7}})
    assert not {s.key for s in load_grid(path).runs()} & set(keys)  # set off its default, it is in the key
