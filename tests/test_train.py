import math

import pytest
import torch

from gptlab import checkpoint
from gptlab.config import apply_overrides, preset
from gptlab.train import train


def tiny(**extra):
    overrides = {"train.max_iters": 60, "train.eval_interval": 30, "train.eval_windows": 64}
    overrides.update(extra)
    return apply_overrides(preset("lecture"), overrides)


def test_short_training_run_lowers_the_loss(corpus):
    result = train(tiny(), corpus)
    first, last = result.history[0], result.history[-1]
    assert [r["step"] for r in result.history] == [0, 30, 60]
    assert first["val_loss"] == pytest.approx(math.log(65), abs=0.1)
    assert last["val_loss"] < first["val_loss"] - 0.5
    assert result.final_val_loss == last["val_loss"] and result.best_val_loss <= last["val_loss"]
    assert result.diverged_at is None and result.tokens_per_sec > 0


def test_same_seed_same_result_different_seed_differs(corpus):
    a, b = train(tiny(), corpus), train(tiny(), corpus)
    c = train(tiny(**{"train.seed": 7}), corpus)
    assert a.final_val_loss == b.final_val_loss
    assert a.final_val_loss != c.final_val_loss


def test_divergence_is_recorded_with_its_step(corpus):
    result = train(tiny(**{"train.lr": 1e6, "train.eval_interval": 1000}), corpus)
    assert result.diverged_at is not None and result.diverged_at < 60
    assert math.isnan(result.final_val_loss)


def test_checkpoint_round_trip(corpus, tmp_path):
    cfg = tiny(**{"train.max_iters": 5})
    result = train(cfg, corpus)
    checkpoint.save(tmp_path / "ckpt.pt", result.model, cfg, corpus.tokenizer)
    model, cfg2, tok = checkpoint.load(tmp_path / "ckpt.pt")
    assert cfg2 == cfg and tok.chars == corpus.tokenizer.chars
    x = torch.randint(0, 65, (2, 8))
    assert torch.equal(model.logits(x), result.model.logits(x))
