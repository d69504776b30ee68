"""The one-file reading of the model (gptlab/gpt.py) is the model the registries assemble at the defaults."""

import pytest
import torch

from gptlab import gpt, model
from gptlab.config import ModelConfig, apply_overrides, preset


def copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Parameter by parameter, in order: the two files declare the same weights in the same order."""
    pairs = list(zip(source.named_parameters(), target.named_parameters(), strict=True))
    with torch.no_grad():
        for (name, p), (other, q) in pairs:
            assert p.shape == q.shape, f"{name} {tuple(p.shape)} vs {other} {tuple(q.shape)}"
            q.copy_(p)


@pytest.mark.parametrize("name", ["lecture", "cpu", "full"])
def test_same_weights_same_logits_and_loss(name):
    cfg = preset(name).model
    if name == "full":
        cfg = apply_overrides(preset(name), {"model.n_layer": 2, "model.block_size": 64}).model
    torch.manual_seed(0)
    assembled = model.GPT(cfg).eval()
    reading = gpt.GPT(cfg).eval()
    copy_weights(assembled, reading)
    x, y = torch.randint(0, 65, (2, cfg.block_size)), torch.randint(0, 65, (2, cfg.block_size))
    logits, loss = reading(x, y)
    expected, expected_loss = assembled(x, y)
    assert torch.allclose(logits, expected, atol=1e-5) and torch.allclose(loss, expected_loss, atol=1e-6)


def test_same_weights_same_training_step_with_dropout_off():
    cfg = preset("lecture").model
    assembled, reading = model.GPT(cfg), gpt.GPT(cfg)
    copy_weights(assembled, reading)
    x, y = torch.randint(0, 65, (4, 8)), torch.randint(0, 65, (4, 8))
    for m in (assembled, reading):
        m(x, y)[1].backward()
    for (name, p), (_, q) in zip(assembled.named_parameters(), reading.named_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_the_reading_initialises_like_the_default_model():
    cfg = preset("lecture").model
    torch.manual_seed(3)
    a = model.GPT(cfg)
    torch.manual_seed(3)
    b = gpt.GPT(cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_the_reading_refuses_variants_it_does_not_show():
    with pytest.raises(ValueError, match="gptlab.gpt reads the default model only"):
        gpt.GPT(ModelConfig(norm="rmsnorm"))


def test_the_residual_is_written_out_where_a_learner_looks_for_it():
    source = open(gpt.__file__).read()
    assert "x = x + self.attn(self.norm1(x))" in source and "x = x + self.ffn(self.norm2(x))" in source
    assert "scores.masked_fill(future, float(\"-inf\"))" in source
