import json

import pytest
from typer.testing import CliRunner

from gptlab.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_list_shows_presets_and_every_registry():
    out = invoke("list").output
    for word in ("lecture", "full", "model.values", "identity", "model.qk", "shared", "model.mask", "before",
                 "model.norm", "rmsnorm", "model.residual", "model.n_head"):
        assert word in out


def test_train_writes_checkpoint_curve_and_sample(tmp_path):
    result = invoke("train", "--preset", "lecture", "--set", "train.max_iters=20", "--set", "train.eval_interval=10",
                    "--set", "train.eval_windows=32", "--out", str(tmp_path), "--sample-tokens", "40")
    assert result.exit_code == 0, result.output
    assert "val loss" in result.output
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["config"]["train"]["max_iters"] == 20
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == "step,train_loss,val_loss,lr,elapsed"
    sampled = invoke("sample", str(tmp_path / "ckpt.pt"), "--tokens", "30", "--prompt", "ROMEO:")
    assert sampled.exit_code == 0 and sampled.output.startswith("ROMEO:")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "model.n_head=5"], "model.n_head = 5 must divide model.n_embd = 32"),
        (["train", "--set", "model.norm=lyernorm"], "choose one of: layernorm, batchnorm, rmsnorm, none"),
        (["train", "--set", "model.bogus=1"], "unknown config key 'model.bogus'"),
        (["train", "--set", "model.n_embd=-4"], "model.n_embd = -4"),
        (["train", "--preset", "huge"], "preset = 'huge' is not allowed; choose one of: bigram, lecture, cpu, full"),
        (["train", "--device", "tpu"], "train.device = 'tpu'"),
        (["train", "--data", "/nonexistent.txt"], "no such file"),
        (["sample", "/nonexistent.pt"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_data_errors_exit_2(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij")
    result = invoke("train", "--data", str(short))
    assert result.exit_code == 2 and "too long" in result.output
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in invoke("train", "--data", str(binary)).output


def test_corrupt_and_foreign_checkpoints_get_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    result = invoke("sample", str(corrupt))
    assert result.exit_code == 2 and "not a readable gptlab checkpoint" in result.output
    import torch

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    result = invoke("sample", str(foreign))
    assert result.exit_code == 2 and "not a gptlab checkpoint" in result.output


def test_a_slow_cpu_run_is_warned_about_evaluation_included():
    from gptlab.cli import slow_run_warning
    from gptlab.config import apply_overrides, preset
    from gptlab.model import build_model

    one_step = apply_overrides(preset("full"), {"train.max_iters": 1})
    params = build_model(one_step.model).num_params()
    warning = slow_run_warning(one_step, params, peak_flops=375e9)  # the 2-core machine's fp32 peak
    assert warning is not None and "evaluating 512 windows of each split 2 times" in warning
    assert "--set train.eval_windows=16" in warning
    assert slow_run_warning(preset("lecture"), 42_369, peak_flops=375e9) is None


def test_version_and_help_read_like_a_users():
    version = invoke("--version")
    assert version.exit_code == 0 and version.output.startswith("gptlab 0.")
    top = invoke("--help").output
    assert "gptlab ablate residuals" in top and max(len(line) for line in top.splitlines()) <= 80
    assert "a newline" in invoke("sample", "--help").output


def test_list_and_readme_agree_on_each_presets_loss():
    import re

    from gptlab.config import PRESET_INFO
    from gptlab.files import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    for name in ("bigram", "lecture", "cpu"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}` |"))
        measured = re.search(r"\| (\d\.\d\d) in ", row).group(1)
        assert f"(val {measured})" in PRESET_INFO[name], (name, measured, PRESET_INFO[name])
    assert "lecture: ~1.48" in PRESET_INFO["full"] and "reports ~1.48" in readme
