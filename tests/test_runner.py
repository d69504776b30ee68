import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gptlab import record as record_module
from gptlab.config import apply_overrides, preset
from gptlab.grid import RunSpec, load_grid
from gptlab.record import load_record, write_atomic
from gptlab.runner import LiveProgress, LocalProcessExecutor, RunEvent, execute, is_finished, to_run, write_manifest

QUICK = {"train.max_iters": 20, "train.eval_interval": 10, "train.eval_windows": 32}


def spec(preset_name="lecture", variant="v", **overrides):
    cfg = apply_overrides(preset(preset_name), {**QUICK, **overrides})
    return RunSpec("g", variant, cfg.train.seed, cfg, cfg.key())


def test_execute_saves_a_full_record_and_reports_progress(tmp_path):
    events = []
    run = spec()
    assert execute(run, tmp_path, events.append) == "done"
    saved = load_record(tmp_path / f"{run.key}.json")
    assert (saved.key, saved.grid, saved.variant, saved.status) == (run.key, "g", "v", "done")
    assert saved.final_val_loss == saved.history[-1]["val_loss"] and saved.params > 0
    assert saved.sample.startswith("\n") and len(saved.sample) == 301
    attention = saved.extra["attention"]
    assert len(attention["prompt"]) == 8 and len(attention["weights"]) == 8
    assert attention["weights"][0][1] == 0.0  # causal: the first token cannot read the second
    assert events[0].kind == "start" and events[-1].step == 20
    assert [p.name for p in tmp_path.iterdir()] == [f"{run.key}.json"]


def test_divergence_is_recorded_with_its_step(tmp_path):
    run = spec(**{"train.lr": 1e6})
    assert execute(run, tmp_path, lambda e: None) == "diverged"
    saved = load_record(tmp_path / f"{run.key}.json")
    assert saved.diverged_at is not None and saved.diverged_at <= 20
    assert saved.final_val_loss is None and saved.sample == "" and "attention" not in saved.extra
    assert all(v is None or v == v for row in saved.history for v in row.values())  # no NaN in the JSON


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_atomic(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(record_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_resume_skips_finished_runs_and_force_reruns_them(tmp_path):
    done, todo, corrupt = spec(variant="a"), spec(variant="b", **{"model.n_layer": 1}), spec(**{"model.n_layer": 2})
    execute(done, tmp_path, lambda e: None)
    (tmp_path / f"{corrupt.key}.json").write_text('{"schema": 1, "key": "trunc')
    assert is_finished(tmp_path, done.key) and not is_finished(tmp_path, corrupt.key)
    assert to_run([done, todo, corrupt], tmp_path, force=False) == [todo, corrupt]
    assert to_run([done, todo, corrupt], tmp_path, force=True) == [done, todo, corrupt]


def test_processes_run_the_grid_and_a_failing_run_does_not_stop_it(tmp_path):
    good, bad = spec("bigram", "good"), spec("bigram", "bad", **{"data.path": str(tmp_path / "nope.txt")})
    live = LiveProgress(2)
    LocalProcessExecutor(jobs=2).run([bad, good], tmp_path, live)
    assert live.finished == {good.key: "done"}
    assert live.failed[bad.key].startswith("GptlabError: data.path = ") and "no such file" in live.failed[bad.key]
    assert is_finished(tmp_path, good.key) and not is_finished(tmp_path, bad.key)


def test_live_progress_ignores_progress_that_arrives_after_the_end():
    live = LiveProgress(1)
    live(RunEvent("finished", "k", "v · seed 1", status="diverged"))
    live(RunEvent("progress", "k", "v · seed 1", step=5, max_iters=10, train_loss=2.0))
    assert live.finished == {"k": "diverged"} and live.tasks == {}
    assert live.bar.tasks[0].completed == 1


def test_threads_are_split_between_jobs():
    assert LocalProcessExecutor(jobs=2, cores=8).threads == 4
    assert LocalProcessExecutor(jobs=3, cores=2).threads == 1


def test_manifest_holds_the_grid_and_provenance(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\ngrid: {model.n_layer: [1, 2]}\nseeds: [3]\n")
    grid = load_grid(path)
    manifest = json.loads(write_manifest(grid, tmp_path / "g", "cpu").read_text())
    assert manifest["variants"][1] == {"name": "n_layer=2", "preset": "lecture", "overrides": {"model.n_layer": 2}}
    assert manifest["seeds"] == [3] and manifest["baseline"] == "n_layer=1" and manifest["device"] == "cpu"
    assert {"gptlab_version", "git_commit", "created", "source", "set", "metric"} <= set(manifest)


TINY_GRID = """
name: tiny
preset: bigram
set: {train.max_iters: 400, train.eval_interval: 200, train.eval_windows: 256}
grid:
  train.lr: [0.01, 0.02, 0.03, 0.04, 0.05]
seeds: [1]
"""


def test_kill_9_mid_grid_then_rerun_keeps_finished_runs(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_GRID)
    command = [sys.executable, "-m", "gptlab.cli", "ablate", "tiny.yaml", "--out", "out", "--jobs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "out" / "tiny" / "runs"
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (runs.is_dir() and any(runs.glob("*.json"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1.5)  # the orphaned worker notices its parent is gone and exits, losing only its run in flight
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in runs.glob("*.json")}
    assert 1 <= len(kept) < 5

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} already done, {5 - len(kept)} to run" in " ".join(rerun.stdout.split())
    assert len(list(runs.glob("*.json"))) == 5
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept
    assert len((tmp_path / "out" / "tiny" / "results.csv").read_text().splitlines()) == 6
