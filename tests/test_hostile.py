"""Hostile input and faults, each as a user would meet it: one line naming the field, the value and what is
allowed, exit 2; never a traceback, never a lost result, never a hang."""

import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from gptlab.cli import app
from gptlab.config import preset
from gptlab.data import Corpus, fixed_windows
from gptlab.files import write_atomic

runner = CliRunner()
QUICK = ["--set", "train.max_iters=4", "--set", "train.eval_interval=2", "--set", "train.eval_windows=8"]


def invoke(*args, **kw):
    return runner.invoke(app, list(args), **kw)


def one_line_error(result, message, code=2):
    text = " ".join(result.output.split())
    assert result.exit_code == code, result.output
    assert message in text and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("override, message", [
    ("train.lr=nan", "train.lr = nan is not allowed; expected a finite number"),
    ("train.lr=inf", "train.lr = inf is not allowed; expected a finite number"),
    ("train.grad_clip=nan", "train.grad_clip = nan is not allowed; expected a finite number"),
    ("train.beta2=-inf", "train.beta2 = -inf is not allowed; expected a finite number"),
    ("model.dropout=.nan", "model.dropout = nan is not allowed; expected a finite number"),
    ("train.seed=99999999999999999999999", "train.seed = 99999999999999999999999 is not allowed; expected an integer"),
    ("train.seed=-1", "train.seed = -1 is not allowed; must be >= 0"),
    ("model.n_layers=4", "unknown config key 'model.n_layers' (did you mean 'model.n_layer'?)"),
])
def test_bad_numbers_are_one_line(override, message):
    one_line_error(invoke("train", "--set", override), message)


def test_a_model_too_big_for_the_machine_is_refused_before_it_is_built():
    result = invoke("train", "--set", "model.n_embd=100000000000", "--set", "model.n_head=1")
    one_line_error(result, "this run needs about")
    assert "GiB available: make the model or the batch smaller" in " ".join(result.output.split())


def test_out_that_is_a_file_or_read_only_is_refused_before_training(tmp_path, monkeypatch):
    afile = tmp_path / "README.md"
    afile.write_text("x")
    one_line_error(invoke("train", *QUICK, "--out", str(afile)), f"--out = '{afile}': a file (or inside one)")
    one_line_error(invoke("ablate", "masking", *QUICK, "--out", str(afile)), "cannot write there")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only folder (root ignores real modes)
    one_line_error(invoke("train", *QUICK, "--out", str(tmp_path / "x")), "no permission to write in it")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refused)
    one_line_error(invoke("ablate", "masking", *QUICK, "--out", str(tmp_path / "ro")), "no permission to write in")


def test_data_that_is_a_folder_or_missing_is_named(tmp_path):
    one_line_error(invoke("train", "--data", str(tmp_path)), f"data.path = '{tmp_path}': a folder; give a text file")
    result = invoke("ablate", "masking", "--set", "data.path=missing.txt", "--out", str(tmp_path / "r"))
    one_line_error(result, "data.path = 'missing.txt': no such file")
    assert not (tmp_path / "r").exists()  # checked once, before any run is spawned or anything written


def test_negative_sample_tokens_and_huge_samples_are_refused(tmp_path):
    one_line_error(invoke("train", "--sample-tokens", "-5"), "--sample-tokens = -5 is not allowed; must be in 0..")
    assert invoke("train", *QUICK, "--out", str(tmp_path), "--sample-tokens", "0").exit_code == 0
    one_line_error(invoke("sample", str(tmp_path / "ckpt.pt"), "--tokens", "1000000000"),
                   "tokens = 1000000000 is not allowed; must be in 1..100,000")
    one_line_error(invoke("sample", str(tmp_path)), "a folder, not a file")


def test_a_diverged_run_ends_train_cleanly_without_a_sample(tmp_path):
    result = invoke("train", *QUICK, "--set", "train.lr=1e6", "--out", str(tmp_path))
    assert result.exit_code == 0 and "diverged" in result.output and "sample" not in result.output.split("wrote")[-1]
    assert json.loads((tmp_path / "result.json").read_text())["diverged_at"] is not None


def test_a_corpus_without_newlines_still_samples_and_keeps_every_record(tmp_path):
    corpus = tmp_path / "one-line.txt"
    corpus.write_text("to be or not to be that is the question " * 400)
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: g\npreset: bigram\nset: {{data.path: {corpus}, train.max_iters: 4, train.eval_interval: 2, "
                    "train.eval_windows: 8}\ngrid: {train.lr: [0.01, 0.02]}\n")
    result = invoke("ablate", str(grid), "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    records = [json.loads(p.read_text()) for p in (tmp_path / "r" / "g" / "runs").glob("*.json")]
    assert len(records) == 2 and all(r["sample"].startswith(" ") for r in records)  # prompted with its first char
    assert invoke("train", "--data", str(corpus), *QUICK, "--out", str(tmp_path / "t")).exit_code == 0


def test_failed_runs_make_ablate_exit_non_zero(tmp_path, monkeypatch):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\npreset: bigram\nset: {train.max_iters: 4, train.eval_interval: 2, train.eval_windows: 8}"
                    "\ngrid: {train.lr: [0.01]}\n")
    monkeypatch.setattr("gptlab.runner.LocalProcessExecutor.run",
                        lambda self, jobs, on_event, on_done: [on_done(job, None, "RuntimeError: boom") for job in jobs])
    result = invoke("ablate", str(grid), "--out", str(tmp_path / "r"))
    assert result.exit_code == 1
    assert "failed: lr=0.01 (seed 1337): RuntimeError: boom" in " ".join(result.output.split())


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_corpus_past_float32_precision_has_windows_inside_it():
    data = torch.zeros(2**24 + 1000, dtype=torch.long)
    x, y = fixed_windows(data, 8, 4096)
    assert len(x) == 4096 and y.shape == (4096, 8)


@pytest.mark.parametrize("payload, message", [
    ({"format": "gptlab-checkpoint-1"}, "it has no 'config' (a gptlab checkpoint holds config, vocab and model)"),
    ({"format": "gptlab-checkpoint-1", "config": {"model": 5}, "vocab": "ab", "model": {}},
     "checkpoint '{path}': config.model = 5: must be a mapping of field -> value"),
    ({"format": "gptlab-checkpoint-1", "config": {"model": {"vocab_size": 3}}, "vocab": "ab", "model": {}},
     "its vocabulary (2) does not match model.vocab_size = 3"),
    ({"format": "gptlab-checkpoint-1", "config": {"model": {"n_embd": 10**11, "n_head": 1}}, "vocab": "a" * 65,
      "model": {}}, "its vocabulary repeats characters (1 distinct of 65)"),
    ({"format": "gptlab-checkpoint-1", "config": {"model": {"n_embd": 10**11, "n_head": 1}},
      "vocab": "".join(chr(32 + i) for i in range(65)), "model": {}}, "GiB for its weights (model.n_embd = 100000000000"),
])
def test_checkpoints_of_the_wrong_shape_are_one_line(tmp_path, payload, message):
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    one_line_error(invoke("sample", str(path)), message.format(path=path))


def test_two_ablate_processes_split_a_grid_and_train_each_run_once(tmp_path):
    (tmp_path / "g.yaml").write_text("name: g\npreset: bigram\nset: {train.max_iters: 3000, train.eval_interval: 1500, "
                                     "train.eval_windows: 64}\ngrid: {train.lr: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}"
                                     "\n")
    command = [sys.executable, "-m", "gptlab.cli", "ablate", "g.yaml", "--out", "out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out_first = first.communicate(timeout=300)[0]
    assert first.returncode == 0 and second.returncode == 0, out_first + second.stdout + second.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "out" / "g" / "runs").glob("*.json")]
    assert len(records) == 6 and not list((tmp_path / "out" / "g" / "runs").glob("*.lock"))
    outputs = [" ".join(out.split()) for out in (out_first, second.stdout + second.stderr)]
    trained = [int(re.search(r"(\d+) to run", out).group(1)) - out.count("held by ") for out in outputs]
    assert sum(trained) == 6 and min(trained) >= 1, trained  # each run trained once, by one process or the other
    assert all("held by " in out for out in outputs)  # a run is claimed when it starts: the two share the grid


def test_corpus_reading_is_checked_before_the_block_size():
    corpus = Corpus.from_text("abcdefghij" * 3)
    with pytest.raises(Exception, match="block_size = 8 is too long"):
        corpus.check_block_size(8)
    assert preset("lecture").model.block_size == 8
