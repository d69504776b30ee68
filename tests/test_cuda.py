"""CUDA checks, run by `python -m pytest -m cuda` on a GPU machine (benchmarks/gpu_check.py runs them); skipped
on a CPU-only machine such as CI."""

import pytest
import torch

from gptlab import device as device_module
from gptlab.config import apply_overrides, preset
from gptlab.data import Batches
from gptlab.group import train_group
from gptlab.train import Evaluator, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
SHORT = {"train.max_iters": 60, "train.eval_interval": 30, "train.eval_windows": 64, "train.device": "cuda"}


def test_a_short_run_on_the_gpu_learns(corpus):
    result = train(apply_overrides(preset("lecture"), SHORT), corpus)
    assert result.device.startswith("cuda") and result.diverged_at is None
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"] - 0.5


def test_the_training_step_never_waits_for_the_host(corpus, monkeypatch):
    """No .item(), no pageable copy, no sync of any kind between evaluations (torch's sync debug mode)."""
    monkeypatch.setattr(Evaluator, "__call__", lambda self, members: {"train": [1.0] * members.count,
                                                                       "val": [1.0] * members.count})
    torch.cuda.set_sync_debug_mode("error")
    try:
        train(apply_overrides(preset("lecture"), {**SHORT, "train.grad_clip": 1.0}), corpus)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_batches_drawn_on_the_gpu_are_the_cpu_ones(corpus):
    cpu = Batches(corpus.train, 8, 4, 5, 3, torch.device("cpu"))
    gpu = Batches(corpus.train, 8, 4, 5, 3, torch.device("cuda"))
    for step in range(3):
        assert torch.equal(cpu.batch(step)[0], gpu.batch(step)[0].cpu())


def test_a_seed_group_on_the_gpu_follows_the_single_runs(corpus):
    cfgs = [apply_overrides(preset("lecture"), {**SHORT, "train.seed": s}) for s in (1, 2, 3)]
    group = train_group(cfgs, corpus)
    for cfg, member in zip(cfgs, group):
        single = train(cfg, corpus)
        assert member.final_val_loss == pytest.approx(single.final_val_loss, abs=0.02)  # bf16: looser than CPU


def test_cards_without_fast_bf16_train_in_fp16_with_a_grad_scaler(corpus, monkeypatch):
    monkeypatch.setattr(device_module, "amp_dtype", lambda device: torch.float16)
    monkeypatch.setattr("gptlab.train.autocast", lambda device: torch.autocast("cuda", dtype=torch.float16))
    monkeypatch.setattr("gptlab.train.grad_scaler", lambda device: torch.amp.GradScaler("cuda"))
    result = train(apply_overrides(preset("lecture"), SHORT), corpus)
    assert result.diverged_at is None and result.history[-1]["val_loss"] < result.history[0]["val_loss"] - 0.5
