"""Properties of the components that mutation testing showed were unchecked: wiring of bias, dropout and the
fused kernel, exact block composition, any leading dims, and tensors made on the input's device."""

import pytest
import torch
from torch import nn

from gptlab.components import MASK, NORM
from gptlab.components import mask as mask_module
from gptlab.config import ModelConfig
from gptlab.model import GPT, Block, FeedForward, MultiHeadAttention

C, V, L = 16, 11, 2


def cfg(**kw) -> ModelConfig:
    base = dict(n_embd=C, n_head=4, n_layer=L, block_size=8, vocab_size=V)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture
def fused_calls(monkeypatch):
    """Count calls of the fused attention kernel."""
    calls = []
    kernel = mask_module.F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(mask_module.F, "scaled_dot_product_attention", counting)
    return calls


def test_bias_false_removes_exactly_the_biases():
    with_bias, without = GPT(cfg(bias=True)), GPT(cfg(bias=False))
    assert not [n for n, _ in without.named_parameters() if n.endswith(".bias")]
    # per block: 2 LayerNorms (C each), attention proj (C), ffn (4C + C); then the final LayerNorm and lm_head (V)
    assert with_bias.num_params() - without.num_params() == L * (C + C + C + 4 * C + C) + C + V


@pytest.mark.parametrize("mask", ["after", "before", "none"])
@pytest.mark.parametrize("fused", [True, False])
def test_dropout_zero_makes_training_mode_deterministic(mask, fused):
    torch.manual_seed(0)
    m = GPT(cfg(mask=mask, fused=fused, dropout=0.0))
    x = torch.randint(0, V, (2, 8))
    train_logits = m.train().logits(x)
    assert torch.equal(train_logits, m.logits(x))
    assert torch.allclose(train_logits, m.eval().logits(x), atol=1e-6)


def test_the_fused_flag_picks_the_kernel(fused_calls):
    x = torch.randn(2, 8, C)
    MultiHeadAttention(cfg(fused=False))(x)
    assert fused_calls == []
    MultiHeadAttention(cfg(fused=True))(x)
    MASK.build("none", cfg())(x.view(2, 1, 8, C), x.view(2, 1, 8, C), x.view(2, 1, 8, C))  # fused by default
    assert [c["is_causal"] for c in fused_calls] == [True, False]
    assert all(c["dropout_p"] == 0.0 for c in fused_calls)


@pytest.mark.parametrize("name, fused", [("after", True), ("after", False), ("before", True), ("none", True)])
def test_attention_dropout_acts_in_training_only(name, fused):
    attend = MASK.build(name, cfg(dropout=0.5, fused=fused))
    q, k, v = torch.randn(3, 2, 2, 6, 4).unbind(0)
    attend.train()
    assert not torch.equal(attend(q, k, v), attend(q, k, v))
    attend.eval()
    assert torch.equal(attend(q, k, v), attend(q, k, v))
    assert torch.allclose(attend(q, k, v), attend.weights(q, k) @ v, atol=1e-6)


@pytest.mark.parametrize("name", ["after", "before", "none"])
def test_attention_defaults_have_no_dropout(name):
    attend = MASK.build(name, cfg()).train()
    q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)
    assert torch.allclose(attend(q, k, v), attend.weights(q, k) @ v, atol=1e-6)


def test_feedforward_defaults_dropout_and_bias():
    ffn = FeedForward(cfg(ffn_mult=4)).train()
    x = torch.randn(2, 5, C)
    assert torch.equal(ffn(x), ffn.eval()(x))  # no dropout by default
    assert sum(p.numel() for p in ffn.parameters()) == (C * 4 * C + 4 * C) + (4 * C * C + C)
    assert sum(p.numel() for p in FeedForward(cfg(ffn_mult=4, bias=False)).parameters()) == 2 * 4 * C * C
    dropping = FeedForward(cfg(ffn_mult=4, dropout=0.5)).train()
    assert not torch.equal(dropping(x), dropping(x))
    assert torch.equal(dropping.eval()(x), dropping(x))


def test_block_passes_dropout_to_its_feedforward():
    block = Block(cfg(dropout=0.3))
    assert block.ffn.net[-1].p == 0.3 and block.attn.attend.dropout.p == 0.3 and block.attn.dropout.p == 0.3


@pytest.mark.parametrize("ffn_mult", [4, 0])
def test_block_is_attention_then_feedforward_on_normed_inputs(ffn_mult):
    torch.manual_seed(0)
    block = Block(cfg(ffn_mult=ffn_mult)).eval()
    for p in block.parameters():  # move norms off their identity init so that a swapped norm shows
        nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 8, C)
    expected = x + block.attn(block.norm1(x))
    if ffn_mult:
        expected = expected + block.ffn(block.norm2(expected))
    assert torch.allclose(block(x), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["after", "before"])
@pytest.mark.parametrize("fused", [True, False])
def test_attention_works_on_any_leading_dims(name, fused):
    """(..., T, head_size) with T != head_size: a mask that reads the wrong axis breaks here."""
    attend = MASK.build(name, cfg(fused=fused)).eval()
    q, k, v = torch.randn(3, 2, 5, 3).unbind(0)
    w = attend.weights(q, k)
    assert w.shape == (2, 5, 5)
    assert (w.triu(1) == 0).all() and torch.allclose(w.sum(-1), torch.ones(2, 5))
    out = attend(q, k, v)
    assert out.shape == (2, 5, 3)
    assert torch.allclose(out, MASK.build("after", cfg(fused=False)).weights(q, k) @ v, atol=1e-6)


@pytest.mark.parametrize("name", ["after", "before", "none"])
@pytest.mark.parametrize("fused", [True, False])
def test_attention_makes_its_tensors_on_the_input_device(name, fused):
    """On the meta device (no data), a mask or position built on the CPU fails: the CUDA bug, caught on a CPU."""
    m = GPT(cfg(mask=name, fused=fused)).to("meta")
    x = torch.zeros(2, 8, dtype=torch.long, device="meta")
    assert m.logits(x).device.type == "meta"
    assert m.blocks[0].attn.attention_weights(m.embed(x)).device.type == "meta"


def test_rmsnorm_applies_its_gain_per_channel_and_stays_finite_at_zero():
    norm = NORM.build("rmsnorm", cfg(n_embd=4, n_head=1))
    x = torch.tensor([[[1.0, -1.0, 1.0, -1.0]]])
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.allclose(norm(x), torch.tensor([[[1.0, -2.0, 3.0, -4.0]]]) / (1 + 1e-5) ** 0.5)
    assert torch.equal(norm(torch.zeros(1, 1, 4)), torch.zeros(1, 1, 4))  # eps keeps 0 / 0 away
