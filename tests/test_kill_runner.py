"""The runner's resume logic without training (an executor that hands back made-up records): which runs a grid
still needs, what is trained again with --force, how a run held by another process is left to it, what each
job's outcome saves and reports, and what a record keeps of its run; and the run locks under it."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
import torch

import gptlab.locks
import gptlab.runner
from gptlab import __version__
from gptlab.config import apply_overrides, preset
from gptlab.data import Corpus, read_text
from gptlab.grid import RunSpec, load_grid
from gptlab.locks import HEARTBEAT_S, STALE_S, Locks, describe, lock_path, pid_alive, stale
from gptlab.model import build_model
from gptlab.record import SAMPLE_SEED, SAMPLE_TOKENS, RunRecord, load_record, save_record
from gptlab.runner import (Driver, GridOutcome, Job, LocalProcessExecutor, RunEvent, available_cores, build_record,
                           claim, default_grouping, device_name, drain, drawn, execute_job, git_state, looks, plan,
                           plan_jobs, run_grid, write_manifest)
from gptlab.sampling import attention_map, generate_text
from gptlab.train import TrainResult
from tests.conftest import DATA

SMALL = Corpus.from_text(read_text(DATA)[:20_000])


@pytest.fixture(autouse=True)
def no_local_workers(monkeypatch):
    """run_grid here is given its executor: starting worker processes instead would be a bug (and slow)."""

    class Forbidden:
        def __init__(self, *args, **kw):
            raise AssertionError("run_grid started local workers although it was given an executor")

    monkeypatch.setattr(gptlab.runner, "LocalProcessExecutor", Forbidden)


def made_up_record(spec, status="done"):
    loss = 2.0 + spec.seed / 100 if status == "done" else None
    return RunRecord(
        key=spec.key, grid=spec.grid, variant=spec.variant, seed=spec.seed, config=spec.config.to_dict(),
        status=status, final_val_loss=loss, best_val_loss=loss, final_train_loss=loss, diverged_at=None if loss else 3,
        history=[{"step": 0, "val_loss": 4.0}], params=1, tokens_per_sec=1.0, wall_time=1.0, device="cpu",
        torch_version="t", gptlab_version="v", git_commit="c", sample="", created="2000-01-01T00:00:00+00:00")


class Recorder:
    """An executor that trains nothing: each job's records are made up, or the job fails with ``fail[key]``."""

    def __init__(self, fail=None, diverge=()):
        self.jobs, self.fail, self.diverge = [], fail or {}, set(diverge)

    def run(self, jobs, on_event, on_done):
        for job in jobs:
            self.jobs.append(job)
            for spec in job.specs:
                on_event(RunEvent("start", spec.key, f"{spec.variant} · seed {spec.seed}"))
            key = job.specs[0].key
            if key in self.fail:
                on_done(job, None, self.fail[key])
            else:
                on_done(job, [made_up_record(s, "diverged" if s.key in self.diverge else "done") for s in job.specs],
                        None)


def make_grid(tmp_path, seeds="[1, 2]", device="cpu"):
    path = tmp_path / "g.yaml"
    path.write_text(f"name: g\npreset: bigram\nset: {{train.max_iters: 10, train.device: {device}}}\n"
                    f"grid: {{train.lr: [0.01, 0.02]}}\nseeds: {seeds}\n")
    return load_grid(path)


def keys(jobs):
    return [[s.key for s in job.specs] for job in jobs]


def snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


# -- resuming a grid -----------------------------------------------------------------------------------------


def test_a_rerun_trains_exactly_the_runs_without_a_usable_record(tmp_path):
    grid = make_grid(tmp_path)
    specs = grid.runs()
    out = tmp_path / "out"
    first = Recorder()
    outcome = run_grid(grid, out, executor=first)
    runs_dir = out / "g" / "runs"
    assert keys(first.jobs) == [[s.key] for s in specs] and outcome.todo == specs
    assert outcome.finished == {s.key: "done" for s in specs} and not outcome.failed and not outcome.held
    assert sorted(os.listdir(runs_dir)) == sorted(f"{s.key}.json" for s in specs)  # no lock left behind

    (runs_dir / f"{specs[0].key}.json").unlink()  # never finished
    (runs_dir / f"{specs[1].key}.json").write_text('{"schema": 1, "key": "trunc')  # cut short
    other = made_up_record(RunSpec("other-grid", specs[2].variant, specs[2].seed, specs[2].config, specs[2].key))
    save_record(runs_dir, other)  # the same config, another grid's run
    kept = snapshot(runs_dir)
    second = Recorder()
    outcome = run_grid(grid, out, executor=second)
    assert outcome.specs == specs and outcome.todo == specs[:3]
    assert keys(second.jobs) == [[s.key] for s in specs[:3]]
    assert snapshot(runs_dir)[f"{specs[3].key}.json"] == kept[f"{specs[3].key}.json"]  # a done run: untouched

    third = Recorder()
    assert run_grid(grid, out, executor=third).todo == [] and third.jobs == []
    forced = Recorder()
    assert run_grid(grid, out, force=True, executor=forced).todo == specs and len(forced.jobs) == 4


def test_plan_says_what_a_run_would_do_and_writes_nothing(tmp_path):
    grid = make_grid(tmp_path)
    specs = grid.runs()
    save_record(tmp_path / "out" / "g" / "runs", made_up_record(specs[1]))
    outcome = plan(grid, tmp_path / "out")
    assert outcome.todo == [specs[0], *specs[2:]] and keys(outcome.jobs) == [[s.key] for s in outcome.todo]
    assert plan(grid, str(tmp_path / "out"), force=True).todo == specs
    grouped = plan(grid, tmp_path / "out", force=True, group_seeds=True)
    assert keys(grouped.jobs) == [[specs[0].key, specs[1].key], [specs[2].key, specs[3].key]]
    assert os.listdir(tmp_path / "out" / "g" / "runs") == [f"{specs[1].key}.json"]


def test_seeds_are_grouped_by_default_on_cuda_only(tmp_path, monkeypatch):
    assert not default_grouping("cpu")
    assert [len(j.specs) for j in plan(make_grid(tmp_path), tmp_path / "out").jobs] == [1, 1, 1, 1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_grouping("cuda") and default_grouping("auto") and not default_grouping("cpu")
    assert [len(j.specs) for j in plan(make_grid(tmp_path, device="cuda"), tmp_path / "out").jobs] == [2, 2]
    one_seed = make_grid(tmp_path, seeds="[1]", device="cuda")
    assert [j.note for j in plan(one_seed, tmp_path / "out").jobs] == ["alone (one seed to run)"] * 2


def test_planning_groups_leaves_each_runs_own_seed():
    runs = [apply_overrides(preset("bigram"), {"train.seed": s}) for s in (4, 5)]
    specs = [RunSpec("g", "v", r.train.seed, r, r.key()) for r in runs]
    (job,) = plan_jobs(specs, group_seeds=True)
    assert [s.config.train.seed for s in job.specs] == [4, 5]  # not the 0 the grouping key sets


# -- runs another process holds ------------------------------------------------------------------------------


def hold(runs_dir, key, pid=None, host=None):
    runs_dir.mkdir(parents=True, exist_ok=True)
    owner = {"host": host or socket.gethostname(), "pid": os.getppid() if pid is None else pid}
    lock_path(runs_dir, key).write_text(json.dumps(owner))
    return f"pid {owner['pid']} on {owner['host']}"


def test_a_run_another_live_process_holds_is_left_to_it(tmp_path):
    grid = make_grid(tmp_path)
    specs = grid.runs()
    runs_dir = tmp_path / "out" / "g" / "runs"
    who = hold(runs_dir, specs[1].key)
    events, executor = [], Recorder()
    outcome = run_grid(grid, tmp_path / "out", executor=executor, on_event=events.append)
    assert outcome.held == {specs[1].key: who}
    assert keys(executor.jobs) == [[specs[0].key], [specs[2].key], [specs[3].key]]
    held = [e for e in events if e.kind == "held"]
    assert [(e.key, e.label, e.error) for e in held] == [(specs[1].key, f"{specs[1].variant} · seed 2", who)]
    assert sorted(os.listdir(runs_dir)) == sorted([f"{specs[1].key}.lock"] + [f"{s.key}.json" for s in specs
                                                                              if s != specs[1]])


def test_a_group_with_held_seeds_trains_the_rest_and_says_so(tmp_path):
    grid = make_grid(tmp_path, seeds="[1, 2, 3]")
    specs = grid.runs()
    runs_dir = tmp_path / "out" / "g" / "runs"
    hold(runs_dir, specs[0].key)
    hold(runs_dir, specs[3].key)
    hold(runs_dir, specs[4].key)
    outcome = GridOutcome(specs, specs, plan_jobs(specs, group_seeds=True))
    locks = Locks(runs_dir)
    claimed = list(claim(outcome.jobs, locks, outcome, None))
    assert [(len(j.specs), j.note) for j in claimed] == [(2, "group of 2 seeds"),
                                                         (1, "alone (the other seeds are held elsewhere)")]
    assert locks.held == {specs[1].key, specs[2].key, specs[5].key} and len(outcome.held) == 3
    locks.release_all()
    assert not (runs_dir / f"{specs[1].key}.lock").exists() and (runs_dir / f"{specs[0].key}.lock").exists()
    free = GridOutcome(specs, specs, plan_jobs(specs, group_seeds=True))
    assert [j.note for j in claim(free.jobs[:1], Locks(tmp_path / "free"), free, None)] == ["group of 3 seeds"]


def test_drawn_is_none_for_no_jobs_and_takes_only_the_first_ahead():
    assert drawn([]) is None and drawn(iter([])) is None
    taken = []

    def jobs():
        for name in ("a", "b", "c"):
            taken.append(name)
            yield name

    queued = drawn(jobs())
    assert taken == ["a"]  # an executor starting nothing yet has claimed only the first job
    assert list(queued) == ["a", "b", "c"] and taken == ["a", "b", "c"]


def test_a_job_is_claimed_only_when_it_is_drawn(tmp_path):
    specs = make_grid(tmp_path).runs()
    runs_dir = tmp_path / "out" / "g" / "runs"
    outcome = GridOutcome(specs, specs, plan_jobs(specs, group_seeds=False))
    locks = Locks(runs_dir)
    jobs = claim(outcome.jobs, locks, outcome, None)
    assert locks.held == set()  # nothing is locked before the executor draws a job to start it
    assert keys([next(jobs)]) == [[specs[0].key]] and locks.held == {specs[0].key}
    hold(runs_dir, specs[1].key)  # another process starts run 2 meanwhile
    assert keys([next(jobs)]) == [[specs[2].key]] and specs[1].key in outcome.held
    locks.release_all()


def test_a_run_another_process_finished_after_the_plan_is_not_trained_again(tmp_path):
    specs = make_grid(tmp_path).runs()
    runs_dir = tmp_path / "out" / "g" / "runs"
    outcome = GridOutcome(specs, specs, plan_jobs(specs, group_seeds=False))  # planned (or --force) at 12:00
    save_record(runs_dir, replace(made_up_record(specs[0]), created="2026-01-01T11:59:59+00:00"))  # before: rerun
    save_record(runs_dir, replace(made_up_record(specs[1]), created="2026-01-01T12:00:05+00:00"))  # since: done
    locks = Locks(runs_dir)
    claimed = list(claim(outcome.jobs, locks, outcome, None, since="2026-01-01T12:00:00+00:00"))
    assert keys(claimed) == [[specs[0].key], [specs[2].key], [specs[3].key]]
    assert outcome.held == {specs[1].key: "another process, which has finished it"}
    assert specs[1].key not in locks.held
    locks.release_all()


# -- what each job's outcome leaves ----------------------------------------------------------------------------


def test_each_outcome_is_saved_reported_and_its_lock_released(tmp_path):
    grid = make_grid(tmp_path)
    specs = grid.runs()
    events: list = []
    executor = Recorder(fail={specs[1].key: "RuntimeError: boom"}, diverge={specs[2].key})
    outcome = run_grid(grid, tmp_path / "out", executor=executor, on_event=events.append)
    assert outcome.failed == {specs[1].key: "RuntimeError: boom"}
    assert outcome.finished == {specs[0].key: "done", specs[2].key: "diverged", specs[3].key: "done"}
    ends = [(e.kind, e.key, e.status, e.error) for e in events]
    assert ends == [
        ("start", specs[0].key, None, None), ("finished", specs[0].key, "done", None),
        ("start", specs[1].key, None, None), ("failed", specs[1].key, None, "RuntimeError: boom"),
        ("start", specs[2].key, None, None), ("finished", specs[2].key, "diverged", None),
        ("start", specs[3].key, None, None), ("finished", specs[3].key, "done", None)]  # the executor's, passed on
    assert [e.label for e in events] == [f"{s.variant} · seed {s.seed}" for s in specs for _ in "se"]
    runs_dir = tmp_path / "out" / "g" / "runs"
    assert load_record(runs_dir / f"{specs[2].key}.json").status == "diverged"
    assert sorted(os.listdir(runs_dir)) == sorted(f"{s.key}.json" for s in specs if s != specs[1])


def test_a_failure_without_a_reason_is_still_a_failure(tmp_path):
    spec = make_grid(tmp_path).runs()[0]
    locks, outcome, events = Locks(tmp_path / "runs"), GridOutcome([spec], [spec], []), []
    assert locks.acquire(spec.key)
    Driver(tmp_path / "runs", locks, outcome, events.append).done(Job((spec,)), None, None)
    assert outcome.failed == {spec.key: "failed"} and [e.kind for e in events] == ["failed"]
    assert os.listdir(tmp_path / "runs") == []  # its lock released, no record


def test_the_manifest_is_renewed_when_runs_train_and_kept_when_none_do(tmp_path):
    grid = make_grid(tmp_path)
    path = tmp_path / "out" / "g" / "grid.json"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    run_grid(grid, tmp_path / "out", executor=Recorder())
    manifest = json.loads(path.read_text())
    created = datetime.fromisoformat(manifest["created"])
    assert created.tzinfo == timezone.utc and before <= created <= datetime.now(timezone.utc)
    assert (manifest["git_commit"], manifest["git_dirty"]) == git_state() and manifest["device"] == "cpu"
    assert manifest["gptlab_version"] == __version__
    path.write_text(json.dumps(dict(manifest, created="2000-01-01T00:00:00"), indent=1))
    run_grid(grid, tmp_path / "out", executor=Recorder())  # nothing to train: provenance kept
    assert json.loads(path.read_text())["created"] == "2000-01-01T00:00:00"
    run_grid(grid, tmp_path / "out", force=True, executor=Recorder())  # trained again: provenance renewed
    assert json.loads(path.read_text())["created"] != "2000-01-01T00:00:00"
    path.write_text(json.dumps(dict(manifest, created="2000-01-01T00:00:00"), indent=1))
    assert write_manifest(grid, path.parent, "cpu", trained=True)
    assert json.loads(path.read_text())["created"] != "2000-01-01T00:00:00"


def test_device_names_name_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "H100")
    assert device_name("cuda") == "cuda (H100)" and device_name("cuda:1") == "cuda:1 (H100)"
    assert device_name("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_name("cuda") == "cuda"


# -- what a record keeps -------------------------------------------------------------------------------------


def lecture_spec(**overrides):
    cfg = apply_overrides(preset("lecture"), {"train.max_iters": 6, "train.eval_interval": 3,
                                              "train.eval_windows": 8, "train.batch_size": 4, **overrides})
    return RunSpec("g", "v", cfg.train.seed, cfg, cfg.key())


def result_of(spec, **fields):
    cfg = apply_overrides(spec.config, {"model.vocab_size": SMALL.tokenizer.vocab_size})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    history = [{"step": 0, "train_loss": 4.1, "val_loss": 4.2, "lr": 1e-3, "elapsed": 0.5},
               {"step": 6, "train_loss": 2.4, "val_loss": float("nan"), "lr": 1e-3, "elapsed": 1.5}]
    base = dict(model=model, history=history, final_val_loss=2.5, final_train_loss=2.4, best_val_loss=2.3,
                wall_time=3.0, tokens_per_sec=1234.5, device="cpu", extra={"group": {"size": 2}})
    return TrainResult(**{**base, **fields})


def test_a_record_keeps_its_runs_numbers_provenance_and_looks(tmp_path):
    spec = lecture_spec()
    result = result_of(spec)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    record = build_record(spec, SMALL, result)
    assert (record.key, record.grid, record.variant, record.seed, record.config) == (
        spec.key, "g", "v", spec.seed, spec.config.to_dict())
    assert (record.status, record.final_val_loss, record.best_val_loss, record.final_train_loss,
            record.diverged_at) == ("done", 2.5, 2.3, 2.4, None)
    assert record.history == [result.history[0], {**result.history[1], "val_loss": None}]  # no NaN in JSON
    assert (record.params, record.tokens_per_sec, record.wall_time, record.device) == (
        result.model.num_params(), 1234.5, 3.0, "cpu")
    assert (record.torch_version, record.gptlab_version) == (torch.__version__, __version__)
    assert (record.git_commit, record.git_dirty) == git_state()
    created = datetime.fromisoformat(record.created)
    assert created.tzinfo == timezone.utc and before <= created <= datetime.now(timezone.utc)
    assert record.sample == generate_text(result.model, SMALL.tokenizer, "\n", SAMPLE_TOKENS, seed=SAMPLE_SEED)
    window = SMALL.tokenizer.decode(SMALL.val[:8].tolist())
    assert record.extra == {"sample_prompt": "\n", "group": {"size": 2}, "attention": {
        "prompt": window, "layer": 0, "head": 0,
        "weights": attention_map(result.model, SMALL.tokenizer, window, layer=0, head=0)}}
    assert load_record(save_record(tmp_path, record)) == record


def test_a_diverged_runs_record_has_no_loss_and_no_sample():
    spec = lecture_spec()
    nan = float("nan")
    record = build_record(spec, SMALL, result_of(spec, diverged_at=5, final_val_loss=nan, best_val_loss=nan,
                                                 final_train_loss=nan, extra={}))
    assert (record.status, record.diverged_at, record.final_val_loss, record.best_val_loss,
            record.final_train_loss) == ("diverged", 5, None, None, None)
    assert record.sample == "" and record.extra == {}


def test_a_failing_sample_is_noted_and_the_run_kept(monkeypatch):
    def broken(*args, **kw):
        raise ValueError("no sample\nsecond line")

    monkeypatch.setattr(gptlab.runner, "generate_text", broken)
    spec = lecture_spec()
    assert looks(spec, SMALL, result_of(spec)) == ("", {"sample_error": "ValueError: no sample"})


def test_a_bigram_record_has_a_sample_and_no_attention():
    spec = RunSpec("g", "b", 1, preset("bigram"), preset("bigram").key())
    sample, extra = looks(spec, SMALL, result_of(spec))
    assert len(sample) == SAMPLE_TOKENS + 1 and extra == {"sample_prompt": "\n"}


# -- a job, trained ----------------------------------------------------------------------------------------


def test_progress_is_throttled_but_evaluations_and_the_last_step_get_through(monkeypatch):
    clock = iter(1000 + 0.125 * i for i in range(1, 1000))
    monkeypatch.setattr(gptlab.runner, "time", type("Clock", (), {"monotonic": staticmethod(lambda: next(clock))}))
    spec = lecture_spec()
    events = []
    execute_job(Job((spec,)), events.append)
    assert [(e.kind, e.key, e.label, e.max_iters) for e in events[:1]] == [("start", spec.key, "v · seed 1337", 6)]
    progress = [(e.step, e.val_loss is not None) for e in events[1:]]
    # every evaluation (steps 0, 3, 6) and the last step; other steps when 0.25 s have passed (a tick is 0.125 s)
    assert progress == [(0, True), (2, False), (3, True), (5, False), (6, False), (6, True)]
    assert all(e.kind == "progress" and e.key == spec.key and e.max_iters == 6 for e in events[1:])
    assert all(e.label == "v · seed 1337" for e in events)
    assert all(e.train_loss is not None for e in events[1:])


def test_a_job_trains_copies_of_its_configs_on_the_text_it_is_given(tmp_path):
    spec = lecture_spec(**{"data.path": str(tmp_path / "absent.txt"), "train.max_iters": 2,
                           "data.train_fraction": 0.5})
    given = apply_overrides(spec.config, {})
    text = read_text(DATA)[:5_000]
    (record,) = execute_job(Job((spec,)), lambda e: None, text=text)
    assert record.extra["attention"]["prompt"] == text[2_500:2_508]  # the split is the config's, not 0.9
    assert spec.config == given  # the spec's config is not the trained copy (whose vocab_size is the text's)
    assert record.config == given.to_dict() and load_record(save_record(tmp_path, record)) == record
    assert record.sample.startswith("\n") and "group" not in record.extra


def test_a_group_job_reports_each_members_progress():
    specs = [lecture_spec(**{"train.seed": s, "train.max_iters": 2, "train.eval_interval": 2}) for s in (1, 2)]
    events = []
    records = execute_job(Job(tuple(specs)), events.append)
    assert [r.key for r in records] == [s.key for s in specs] and records[0].extra["group"]["size"] == 2
    for spec in specs:
        mine = [(e.kind, e.step) for e in events if e.key == spec.key]
        assert mine[0] == ("start", 0) and mine[-2:] == [("progress", 2), ("progress", 2)]


# -- locks ---------------------------------------------------------------------------------------------------


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_names_its_owner_and_is_exclusive(tmp_path):
    runs_dir = tmp_path / "a" / "runs"  # created on the first claim, parents too
    locks = Locks(runs_dir)
    assert locks.acquire("k") and locks.held == {"k"}
    path = lock_path(runs_dir, "k")
    owner = json.loads(path.read_text())
    assert (owner["host"], owner["pid"], owner["token"]) == (socket.gethostname(), os.getpid(), locks.token)
    datetime.strptime(owner["since"], "%Y-%m-%dT%H:%M:%S")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask
    assert describe(path) == f"pid {os.getpid()} on {socket.gethostname()}"
    other = Locks(runs_dir)
    assert not other.acquire("k") and other.held == set()  # this process is alive: its lock holds
    assert json.loads(path.read_text())["token"] == locks.token
    assert other.acquire("k2") and locks.acquire("k3")
    other.release("k")  # not other's: left alone
    assert path.exists()
    locks.release_all()
    assert sorted(os.listdir(runs_dir)) == ["k2.lock"] and locks.held == set()


def test_a_lock_whose_owner_is_gone_is_taken_over(tmp_path):
    here = socket.gethostname()
    cases = {
        "dead": {"host": here, "pid": dead_pid()},  # a dead pid on this host
        "half": None,  # half-written
        "list": [],  # not an owner at all
        "old": {"host": "elsewhere", "pid": os.getpid()},  # another host's, not touched for STALE_S
        "pidless": {"host": here, "pid": "1"},  # on this host but no pid to ask: its age decides
    }
    for key, owner in cases.items():
        path = lock_path(tmp_path, key)
        path.write_text("{\"host\": " if owner is None else json.dumps(owner))
        if key in ("old", "pidless"):
            os.utime(path, (time.time() - STALE_S - 5,) * 2)
        assert stale(path), key
    locks = Locks(tmp_path)
    for key in cases:
        assert locks.acquire(key), key
        assert json.loads(lock_path(tmp_path, key).read_text())["token"] == locks.token
    assert not list(tmp_path.glob("*.tmp"))
    assert stale(tmp_path / "missing.lock")


def test_a_lock_of_a_live_owner_or_a_recent_one_elsewhere_holds(tmp_path):
    cases = {
        "live": {"host": socket.gethostname(), "pid": os.getppid()},
        "recent": {"host": "elsewhere", "pid": dead_pid()},  # another host's pid means nothing here: its age does
        "recent-pidless": {"host": socket.gethostname(), "pid": None},
    }
    for key, owner in cases.items():
        path = lock_path(tmp_path, key)
        path.write_text(json.dumps(owner))
        assert not stale(path), key
        assert not Locks(tmp_path).acquire(key), key
        assert json.loads(path.read_text()) == owner
    old = lock_path(tmp_path, "live")
    os.utime(old, (time.time() - STALE_S - 5,) * 2)
    assert not stale(old)  # a live pid on this host holds however old its lock


def test_two_takeovers_race_and_the_last_rename_wins(tmp_path, monkeypatch):
    path = lock_path(tmp_path, "k")
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid()}))
    real_replace = os.replace

    def then_another(src, dst):
        real_replace(src, dst)
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "token": "theirs"}))

    monkeypatch.setattr(gptlab.locks.os, "replace", then_another)
    locks = Locks(tmp_path)
    assert not locks.acquire("k") and locks.held == set()


def test_pid_alive_counts_a_pid_it_may_not_signal_as_alive(monkeypatch):
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid())

    def forbidden(pid, signal):
        raise PermissionError

    monkeypatch.setattr(gptlab.locks.os, "kill", forbidden)
    assert pid_alive(1)


def test_describe_a_lock_it_cannot_read():
    from pathlib import Path

    assert describe(Path("/nonexistent/k.lock")) == "another process"


def test_heartbeats_touch_the_held_locks_at_most_every_heartbeat_s(tmp_path):
    locks = Locks(tmp_path)
    assert locks.acquire("a") and locks.acquire("b")
    lock_path(tmp_path, "b").unlink()  # a lock removed by hand: the heartbeat goes on
    old = time.time() - 100
    os.utime(lock_path(tmp_path, "a"), (old, old))
    locks.heartbeat()  # too soon after the claim
    assert lock_path(tmp_path, "a").stat().st_mtime == pytest.approx(old, abs=1)
    locks.last_beat -= HEARTBEAT_S + 1
    locks.heartbeat()
    assert lock_path(tmp_path, "a").stat().st_mtime == pytest.approx(time.time(), abs=5)
    assert locks.last_beat == pytest.approx(time.monotonic(), abs=5)
    os.utime(lock_path(tmp_path, "a"), (old, old))
    locks.heartbeat()  # just beaten
    assert lock_path(tmp_path, "a").stat().st_mtime == pytest.approx(old, abs=1)


def test_the_driver_beats_the_heart_on_every_event(tmp_path):
    spec = make_grid(tmp_path).runs()[0]
    locks, events = Locks(tmp_path / "runs"), []
    assert locks.acquire(spec.key)
    path = lock_path(tmp_path / "runs", spec.key)
    old = time.time() - 100
    os.utime(path, (old, old))
    locks.last_beat -= HEARTBEAT_S + 1
    driver = Driver(tmp_path / "runs", locks, GridOutcome([spec], [spec], []), events.append)
    driver.event(gptlab.runner.RunEvent("progress", spec.key, "v"))
    assert path.stat().st_mtime > old + 50 and [e.kind for e in events] == ["progress"]
    Driver(tmp_path / "runs", locks, GridOutcome([spec], [spec], []), None).event(
        gptlab.runner.RunEvent("progress", spec.key, "v"))  # no listener: fine


# -- the library call's defaults, and small helpers --------------------------------------------------------


def one_run_grid(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("name: one\npreset: bigram\nset: {train.max_iters: 10, train.device: cpu}\nseeds: [3]\n"
                    "variants: [{name: only}]\n")
    return load_grid(path)


def test_a_grid_of_one_run_plans_and_runs(tmp_path):
    grid = one_run_grid(tmp_path)
    (spec,) = grid.runs()
    assert keys(plan(grid, tmp_path / "out").jobs) == [[spec.key]]
    assert run_grid(grid, tmp_path / "out", executor=Recorder()).finished == {spec.key: "done"}
    assert json.loads((tmp_path / "out" / "one" / "grid.json").read_text())["device"] == "cpu"


def test_run_grid_defaults_to_reports_and_one_local_worker(tmp_path, monkeypatch):
    made = []

    class Local(Recorder):
        def __init__(self, jobs):
            super().__init__()
            made.append(jobs)

    monkeypatch.setattr(gptlab.runner, "LocalProcessExecutor", Local)
    monkeypatch.chdir(tmp_path)
    grid = make_grid(tmp_path)
    outcome = run_grid(grid)
    assert made == [1] and len(outcome.finished) == 4
    assert sorted(os.listdir(tmp_path / "reports" / "g" / "runs")) == sorted(f"{s.key}.json" for s in grid.runs())
    run_grid(grid, force=True, jobs=3)
    assert made == [1, 3]
    given = Recorder()
    run_grid(grid, force=True, executor=given)
    assert made == [1, 3] and len(given.jobs) == 4  # an executor given is the one used


def test_run_grid_groups_seeds_when_asked(tmp_path):
    grid = make_grid(tmp_path)
    specs = grid.runs()
    executor = Recorder()
    run_grid(grid, tmp_path / "out", group_seeds=True, executor=executor)
    assert keys(executor.jobs) == [[specs[0].key, specs[1].key], [specs[2].key, specs[3].key]]


def test_a_single_run_job_claimed_whole_keeps_its_note(tmp_path):
    specs = make_grid(tmp_path).runs()
    outcome = GridOutcome(specs, specs, plan_jobs(specs, group_seeds=False))
    locks = Locks(tmp_path / "runs")
    assert [j.note for j in claim(outcome.jobs, locks, outcome, None)] == ["alone (grouping off)"] * 4
    locks.release_all()


def test_workers_split_the_cores():
    assert LocalProcessExecutor().jobs == 1 and LocalProcessExecutor(jobs=0).jobs == 1
    assert LocalProcessExecutor(jobs=1, cores=8).threads == 8
    assert LocalProcessExecutor(jobs=3, cores=8).threads == 2  # whole threads, never more than the cores
    assert LocalProcessExecutor(jobs=4, cores=2).threads == 1
    assert LocalProcessExecutor(jobs=2).threads == max(1, available_cores() // 2)


def test_available_cores_are_this_processs_own(monkeypatch):
    assert available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert available_cores() == 1  # the cores this process may use, not the machine's
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert available_cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert available_cores() == 1


def test_drain_passes_on_every_queued_event():
    import queue

    events = queue.Queue()
    for i in range(3):
        events.put(i)
    seen = []
    drain(events, seen.append)
    assert seen == [0, 1, 2] and events.empty()


def test_releasing_a_lock_someone_removed_is_fine(tmp_path):
    locks = Locks(tmp_path)
    assert locks.acquire("k")
    lock_path(tmp_path, "k").unlink()
    locks.release("k")
    assert locks.held == set()


def test_a_record_finished_in_the_second_the_plan_was_made_counts_as_done_elsewhere(tmp_path):
    specs = make_grid(tmp_path).runs()
    runs_dir = tmp_path / "out" / "g" / "runs"
    outcome = GridOutcome(specs[:1], specs[:1], plan_jobs(specs[:1], group_seeds=False))
    save_record(runs_dir, replace(made_up_record(specs[0]), created="2026-01-01T12:00:00+00:00"))
    locks = Locks(runs_dir)
    assert list(claim(outcome.jobs, locks, outcome, None, since="2026-01-01T12:00:00+00:00")) == []
    assert outcome.held == {specs[0].key: "another process, which has finished it"}


def test_without_a_planning_time_any_record_counts_as_finished(tmp_path):
    specs = make_grid(tmp_path).runs()
    runs_dir = tmp_path / "out" / "g" / "runs"
    save_record(runs_dir, made_up_record(specs[0]))
    outcome = GridOutcome(specs[:2], specs[:2], plan_jobs(specs[:2], group_seeds=False))
    locks = Locks(runs_dir)
    assert keys(claim(outcome.jobs, locks, outcome, None)) == [[specs[1].key]]
    assert outcome.held == {specs[0].key: "another process, which has finished it"}
    locks.release_all()
