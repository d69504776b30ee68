"""One property per component variant that tells it apart from the others."""

import pytest
import torch
from torch import nn

from gptlab.components import MASK, NORM, PROJECTIONS, QK, RESIDUAL, VALUES
from gptlab.components.mask import scaled_scores
from gptlab.config import ModelConfig
from gptlab.errors import GptlabError
from gptlab.model import GPT, Block, FeedForward, MultiHeadAttention


def cfg(**kw) -> ModelConfig:
    base = dict(n_embd=16, n_head=4, n_layer=2, block_size=8, vocab_size=11)
    base.update(kw)
    return ModelConfig(**base)


def model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(cfg(**kw)).eval()


@pytest.mark.parametrize("mask", ["after", "before"])
@pytest.mark.parametrize("fused", [True, False])
def test_causal_masks_never_read_the_future(mask, fused):
    m = model(mask=mask, fused=fused)
    x = torch.randint(0, 11, (3, 8))
    for t in range(7):
        x2 = x.clone()
        x2[:, t + 1 :] = (x2[:, t + 1 :] + 1) % 11
        assert torch.allclose(m.logits(x)[:, : t + 1], m.logits(x2)[:, : t + 1], atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_no_mask_leaks_the_future(fused):
    m = model(mask="none", fused=fused)
    x = torch.randint(0, 11, (3, 8))
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 11
    assert (m.logits(x)[:, 0] - m.logits(x2)[:, 0]).abs().max() > 1e-4


def test_mask_before_equals_after_with_the_same_weights():
    after = model(mask="after", fused=False)
    before = model(mask="before")
    before.load_state_dict(after.state_dict())
    x = torch.randint(0, 11, (4, 8))
    assert torch.allclose(after.logits(x), before.logits(x), atol=1e-5)
    h = after.embed(x)
    wa = after.blocks[0].attn.attention_weights(h)
    wb = before.blocks[0].attn.attention_weights(h)
    assert torch.allclose(wa, wb, atol=1e-6)


def test_mask_before_never_computes_masked_pairs():
    attend = MASK.build("before", cfg())
    q, k = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    rows = attend.rows(q, k)
    assert [r.shape[-1] for r in rows] == [1, 2, 3, 4, 5]  # 15 pairs, not 25
    assert sum(r.shape[-1] for r in rows) == 5 * 6 // 2


def test_fused_attention_equals_explicit_reference():
    explicit = model(fused=False)
    fused = model(fused=True)
    x = torch.randint(0, 11, (4, 8))
    assert torch.allclose(explicit.logits(x), fused.logits(x), atol=1e-5)


def test_attention_weights_rows_sum_to_one_and_future_is_zero():
    attn = MultiHeadAttention(cfg()).eval()
    w = attn.attention_weights(torch.randn(2, 8, 16))
    assert w.shape == (2, 4, 8, 8)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 8))
    assert (w.triu(1) == 0).all()
    assert w[..., 0, 0].eq(1).all()


def test_scale_is_one_over_sqrt_head_size():
    q = torch.tensor([[[1.0, 2.0, 0.0, 0.0]]])
    k = torch.tensor([[[3.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    scores = scaled_scores(q, k)
    assert torch.allclose(scores, torch.tensor([[[5.0 / 2.0, 2.0 / 2.0]]]))


def test_shared_qk_gives_symmetric_scores_separate_does_not():
    x = torch.randn(2, 6, 16)
    for name, symmetric in (("shared", True), ("separate", False)):
        torch.manual_seed(0)
        q, k = QK.build(name, cfg())(x)
        s = q @ k.transpose(-2, -1)
        assert torch.allclose(s, s.transpose(-2, -1), atol=1e-6) is symmetric
    shared = QK.build("shared", cfg())
    assert sum(p.numel() for p in shared.parameters()) == 16 * 16
    assert sum(p.numel() for p in QK.build("separate", cfg()).parameters()) == 2 * 16 * 16


def test_identity_values_have_no_weights_and_pass_the_head_slice():
    attn = MultiHeadAttention(cfg(values="identity", mask="after")).eval()
    assert isinstance(attn.values, nn.Identity)
    assert not any("values" in n for n, _ in attn.named_parameters())
    x = torch.randn(1, 8, 16)
    _, _, v = attn.heads(x)
    assert torch.equal(v[0, 1], x[0, :, 4:8])  # head 1 owns channels 4..7
    # the first token attends only to itself, so it receives exactly its own slice
    y = attn.attend(*attn.heads(x))
    assert torch.allclose(y[0, :, 0], x[0, 0].view(4, 4), atol=1e-6)
    projected = MultiHeadAttention(cfg(values="projected"))
    assert sum(p.numel() for p in projected.values.parameters()) == 16 * 16


def test_residual_off_removes_the_identity_path():
    x = torch.randn(2, 8, 16)
    on, off = Block(cfg(residual=True)).eval(), Block(cfg(residual=False)).eval()
    off.load_state_dict(on.state_dict())
    for block in (on, off):  # zero every sublayer's output: only the identity path remains
        for p in (block.attn.proj.weight, block.attn.proj.bias, block.ffn.net[2].weight, block.ffn.net[2].bias):
            nn.init.zeros_(p)
    assert torch.equal(on(x), x)
    assert torch.equal(off(x), torch.zeros_like(x))
    assert RESIDUAL.build(True, cfg())(x, 2 * x).equal(3 * x)
    assert RESIDUAL.build(False, cfg())(x, 2 * x).equal(2 * x)


def test_attention_without_projection_outputs_the_heads_side_by_side():
    torch.manual_seed(0)
    attn = MultiHeadAttention(cfg(projections=False)).eval()
    x = torch.randn(2, 8, 16)
    heads = attn.attend(*attn.heads(x))  # (B, n_head, T, head_size)
    assert torch.allclose(attn(x), heads.transpose(1, 2).reshape(2, 8, 16), atol=1e-6)
    assert isinstance(attn.proj, nn.Identity)
    projected = MultiHeadAttention(cfg(projections=True))
    assert (projected.proj.in_features, projected.proj.out_features) == (16, 16)


def test_feedforward_without_projection_ends_in_its_relu():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 16)
    bare = FeedForward(cfg(ffn_mult=1, projections=False))
    assert torch.equal(bare(x), torch.relu(bare.net[0](x)))
    assert (FeedForward(cfg(ffn_mult=1, projections=True))(x) < 0).any()  # a projection can write negative values
    assert sum(p.numel() for p in bare.parameters()) == 16 * 16 + 16
    with pytest.raises(GptlabError, match="model.projections = 'false': its builder failed: .*keeps its width: 64 != 16"):
        FeedForward(cfg(ffn_mult=4, projections=False))
    assert PROJECTIONS.names() == ["true", "false"]


def test_projections_off_drops_two_linears_per_block():
    on, off = model(ffn_mult=1, projections=True), model(ffn_mult=1, projections=False)
    assert on.num_params() - off.num_params() == 2 * 2 * (16 * 16 + 16)
    no_bias = model(ffn_mult=1, bias=False).num_params() - model(ffn_mult=1, bias=False, projections=False).num_params()
    assert no_bias == 2 * 2 * 16 * 16


def test_layernorm_normalises_each_token_over_features():
    y = NORM.build("layernorm", cfg())(torch.randn(4, 8, 16) * 5 + 3)
    assert torch.allclose(y.mean(-1), torch.zeros(4, 8), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(4, 8), atol=1e-3)


def test_batchnorm_normalises_each_feature_over_batch_and_time():
    norm = NORM.build("batchnorm", cfg()).train()
    y = norm(torch.randn(4, 8, 16) * 5 + 3)
    assert torch.allclose(y.mean((0, 1)), torch.zeros(16), atol=1e-5)
    assert torch.allclose(y.var((0, 1), unbiased=False), torch.ones(16), atol=1e-3)
    assert not torch.allclose(y.mean(-1), torch.zeros(4, 8), atol=1e-2)  # not per token


def test_rmsnorm_scales_tokens_to_unit_rms_without_centring():
    x = torch.randn(4, 8, 16) + 3
    y = NORM.build("rmsnorm", cfg())(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(4, 8), atol=1e-3)
    assert (y.mean(-1) > 0.8).all()  # the mean of 3 survives: no centring
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)  # one scale per token
    assert torch.allclose(y, expected, atol=1e-5)


def test_no_norm_is_identity():
    x = torch.randn(2, 3, 16)
    assert torch.equal(NORM.build("none", cfg())(x), x)


def test_head_count_changes_the_result_and_keeps_params():
    x = torch.randint(0, 11, (2, 8))
    one, four = model(n_head=1), model(n_head=4)
    four.load_state_dict(one.state_dict())
    assert one.num_params() == four.num_params()
    assert not torch.allclose(one.logits(x), four.logits(x), atol=1e-4)


def test_feedforward_is_mult_times_wider():
    ffn = FeedForward(cfg(ffn_mult=4))
    assert ffn.net[0].out_features == 64 and ffn.net[2].in_features == 64
    assert Block(cfg(ffn_mult=0)).ffn is None


def test_dropout_is_off_in_eval():
    m = model(dropout=0.5)
    x = torch.randint(0, 11, (2, 8))
    assert torch.equal(m.logits(x), m.logits(x))
    m.train()
    assert not torch.equal(m.logits(x), m.logits(x))


def test_registry_typo_names_the_allowed_choices():
    with pytest.raises(GptlabError, match=r"model.norm = 'lyernorm' .*layernorm, batchnorm, rmsnorm, none"):
        NORM.get("lyernorm")
    assert VALUES.names() == ["projected", "identity"]
    assert MASK.names() == ["after", "before", "none"]
