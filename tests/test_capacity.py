"""--jobs auto and the time estimate: how many runs at once the cores, the threads a run uses and the memory
allow, and a grid's time from a measured probe of each config, dealt to the workers."""

import copy

import pytest
from typer.testing import CliRunner

import gptlab.capacity as capacity
from gptlab.capacity import RunTime, auto_jobs, choose_jobs, estimate_line, grid_seconds, parse_jobs, probe, run_threads
from gptlab.cli import app
from gptlab.config import apply_overrides, preset
from gptlab.errors import GptlabError
from gptlab.grid import load_grid
from gptlab.runner import Job, cached_corpus, plan_jobs

GIB = 2**30


def test_jobs_is_auto_or_a_whole_number():
    assert parse_jobs("auto") is None and parse_jobs("3") == 3
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(GptlabError, match=f"--jobs = {bad!r} is not allowed; give auto or a whole number >= 1"):
            parse_jobs(bad)


def test_a_run_uses_one_thread_when_too_small_to_split_and_every_core_otherwise():
    assert run_threads(preset("lecture"), 8) == 1
    assert run_threads(preset("cpu"), 8) == 8
    assert run_threads(apply_overrides(preset("cpu"), {"train.threads": 3}), 8) == 3
    assert run_threads(apply_overrides(preset("lecture"), {"train.threads": 16}), 8) == 8


def test_auto_jobs_fill_the_cores_at_the_threads_a_run_uses_bounded_by_memory_and_the_jobs(monkeypatch):
    monkeypatch.setattr(capacity, "available_bytes", lambda device: 64 * GIB)
    small, big = preset("lecture"), preset("cpu")
    choice = auto_jobs([small], planned=40, cores=8)
    assert (choice.jobs, choice.threads) == (8, 1) and choice.why == "--jobs auto: 8 at once (8 cores at 1 thread a run)"
    assert auto_jobs([small, big], planned=40, cores=8).jobs == 1  # the largest decides: cpu uses every core
    assert auto_jobs([small], planned=3, cores=8).why == "--jobs auto: 3 at once (the jobs to run)"
    assert auto_jobs([small], planned=0, cores=8).jobs == 1
    full = preset("full")
    monkeypatch.setattr(capacity, "available_bytes", lambda device: 3 * capacity.training_bytes(full) + 1)
    tight = auto_jobs([apply_overrides(full, {"train.threads": 1})], planned=40, cores=8)
    assert tight.jobs == 3 and tight.why == "--jobs auto: 3 at once (the memory)" and tight.threads == 2


def test_auto_jobs_on_cuda_take_one_job_per_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(capacity, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert auto_jobs([preset("lecture")], planned=40, cores=16).why == "--jobs auto: 4 at once (one job per GPU, 4 here)"
    assert auto_jobs([preset("lecture")], planned=2, cores=16).jobs == 2


def test_jobs_given_win_and_a_grid_growing_by_rounds_counts_its_variants(monkeypatch, tmp_path):
    monkeypatch.setattr(capacity, "available_bytes", lambda device: 64 * GIB)
    monkeypatch.setattr("gptlab.runner.available_cores", lambda: 8)
    grid = load_grid("heads")
    assert choose_jobs(grid, 20, 3).why == "--jobs 3" and choose_jobs(grid, 20, 3).threads == 2
    assert choose_jobs(grid, 0, None).jobs == 1
    assert choose_jobs(grid, 0, None, growing=True).jobs == 4  # its 4 variants may each get seeds


def test_a_runs_time_is_its_steps_and_evaluations_at_the_probes_rates():
    cfg = apply_overrides(preset("lecture"), {"train.max_iters": 1000, "train.eval_interval": 300})
    assert RunTime(step=0.01, evaluation=0.5).of(cfg) == pytest.approx(1000 * 0.01 + 5 * 0.5)  # 0, 300, 600, 900, 1000


def test_the_probe_measures_a_short_run_of_the_config_and_leaves_it_unchanged():
    cfg = apply_overrides(preset("bigram"), {"train.eval_windows": 64})
    before = copy.deepcopy(cfg)
    measured = probe(cfg, cached_corpus(cfg.data.path, cfg.data.train_fraction), threads=1)
    assert 0 < measured.step < 0.1 and 0 < measured.evaluation < 1
    assert cfg == before


def test_grid_seconds_probe_each_config_once_and_deal_the_jobs_longest_first(monkeypatch):
    grid = load_grid("heads", cli_set={"train.max_iters": 100, "train.eval_interval": 100})
    probed = []

    def fake_probe(cfg, corpus, threads):
        probed.append((cfg.model.n_head, cfg.train.seed, threads))
        return RunTime(step=cfg.model.n_head / 100, evaluation=0.0)  # n_head seconds a run

    monkeypatch.setattr(capacity, "probe", fake_probe)
    jobs = plan_jobs(grid.runs(), group_seeds=False)  # 4 variants x 5 seeds: runs of 1, 2, 4, 8 s
    assert grid_seconds(jobs, workers=1, threads=1) == pytest.approx(5 * 15)
    assert sorted(probed) == [(1, 0, 1), (2, 0, 1), (4, 0, 1), (8, 0, 1)]  # one probe per config, unseeded
    assert grid_seconds(jobs, workers=2, threads=1) == pytest.approx(38)  # longest first: 38 of the 75 s on one
    assert grid_seconds(jobs[:2], workers=4, threads=2) == pytest.approx(1)
    assert grid_seconds([Job(tuple(grid.runs()[:3]))], workers=2, threads=1) == pytest.approx(3)  # a group: its runs


def test_the_estimate_line_says_the_time_the_jobs_and_the_probe():
    assert estimate_line(540, 2, 0.0).startswith("estimate: about 9 min with 2 jobs here (measured on a 20-step probe")
    assert estimate_line(45, 1, 0.0).startswith("estimate: about 45 s with 1 job here")
    assert estimate_line(3 * 3600, 8, 0.0).startswith("estimate: about 3.0 h with 8 jobs")


def test_ablate_dry_run_prints_the_jobs_it_chose_and_its_estimate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text("name: g\npreset: bigram\nset: {train.max_iters: 50, train.eval_interval: 50, "
                                     "train.eval_windows: 32}\ngrid: {train.lr: [0.01, 0.02, 0.03]}\nseeds: [1, 2]\n")
    monkeypatch.setattr("gptlab.runner.available_cores", lambda: 2)
    result = CliRunner().invoke(app, ["ablate", "g.yaml", "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "6 to run as 6 jobs, --jobs auto: 2 at once (2 cores at 1 thread a run)" in result.output
    assert "estimate: about " in result.output and "s with 2 jobs here (measured on a 20-step probe" in result.output
    assert not (tmp_path / "reports").exists()
    given = CliRunner().invoke(app, ["ablate", "g.yaml", "--dry-run", "--jobs", "3"], env={"COLUMNS": "200"})
    assert "as 6 jobs, --jobs 3" in given.output and "with 3 jobs here" in given.output
    bad = CliRunner().invoke(app, ["ablate", "g.yaml", "--jobs", "0"])
    assert bad.exit_code == 2 and "--jobs = '0' is not allowed; give auto or a whole number >= 1" in bad.output
