"""Properties that catch the bugs a learner writes (gptlab/devtools/catalogue.py names the test for each).

Each test pins one idea directly, so that a bug in it fails here with an assertion, not with a crash somewhere
else: the splits are the text's head and tail; evaluation is an eval-mode forward; each seed its own initial
weights; the explicit attention path and the fused one each against a hand computation; head h owns channels
[h*hs, (h+1)*hs) and the heads are joined back in place; generation reads the last block_size tokens and samples
from the last position; the loss is the targets' mean negative log-likelihood; the optimizer steps with the
scheduled lr; clipping, weight-decay groups, divergence; Holm-adjusted verdicts.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gptlab.group
import gptlab.train
from gptlab.components import MASK
from gptlab.config import ModelConfig, apply_overrides, lr_at, preset
from gptlab.data import Corpus, fixed_windows, read_text
from gptlab.group import StackedModels, train_group
from gptlab.model import GPT, FeedForward, LanguageModel, MultiHeadAttention, build_model
from gptlab.stats import ALPHA, compare_to_baseline, holm, welch
from gptlab.train import Evaluator, OneModel, fit, train
from tests.conftest import DATA

C, H, T, V = 16, 4, 8, 11
HS = C // H
CPU = torch.device("cpu")
SMALL = Corpus.from_text(read_text(DATA)[:20_000])  # enough text for tiny runs, fast to tokenize


def cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(n_embd=C, n_head=H, n_layer=2, block_size=T, vocab_size=V), **kw})


def tiny(**overrides):
    """A lecture run cut down to a few steps on SMALL."""
    run = apply_overrides(preset("lecture"), {"model.n_layer": 1, "train.max_iters": 2, "train.eval_interval": 1,
                                              "train.eval_windows": 8, **overrides})
    run.model.vocab_size = SMALL.tokenizer.vocab_size
    return run


# -- data ----------------------------------------------------------------------------------------------------


def test_splits_are_contiguous_disjoint_and_in_order(corpus):
    text = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(1000))  # no stretch of it repeats
    ids = torch.tensor(Corpus.from_text(text).tokenizer.encode(text))
    for fraction in (0.9, 0.5, 0.37):
        split = Corpus.from_text(text, fraction)
        n = int(fraction * len(text))
        assert torch.equal(split.train, ids[:n])  # the head of the text ...
        assert torch.equal(split.val, ids[n:])  # ... then the tail, right after it: no overlap, no gap
        assert torch.equal(torch.cat([split.train, split.val]), ids)
    shipped = read_text(DATA)
    tail = len(corpus.val)
    assert corpus.tokenizer.decode(corpus.val.tolist()) == shipped[-tail:]  # val is the last 10% of the play
    assert corpus.tokenizer.decode(corpus.train[-20:].tolist()) == shipped[-tail - 20 : -tail]


# -- training ------------------------------------------------------------------------------------------------


def test_evaluation_is_deterministic_and_equals_an_eval_mode_forward():
    run = tiny(**{"model.dropout": 0.5, "train.eval_windows": 32})
    torch.manual_seed(0)
    model = build_model(run.model)
    members = OneModel(model, compile_model=False)
    evaluate = Evaluator(SMALL, run, CPU, members=1)
    members.train(True)  # as the training loop leaves it
    first, second = evaluate(members), evaluate(members)
    assert first == second  # dropout is off while scoring
    assert model.training  # and back on afterwards
    model.eval()
    with torch.no_grad():
        for split in ("train", "val"):
            x, y = fixed_windows(getattr(SMALL, split), T, 32)
            logits = model.logits(x)
            expected = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
            assert first[split][0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("how", ["single", "group"])
def test_seeds_give_different_initial_weights_and_the_same_seed_the_same(how, monkeypatch):
    module = gptlab.train if how == "single" else gptlab.group
    real = module.build_model
    built = []

    def spy(model_cfg):
        model = real(model_cfg)
        if not any(p.is_meta for p in model.parameters()):  # not the group's template on the meta device
            built.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(module, "build_model", spy)
    runs = [tiny(**{"train.seed": seed, "train.max_iters": 1}) for seed in (1, 1, 2)]
    if how == "single":
        for run in runs:
            train(run, SMALL)
    else:
        train_group(runs, SMALL)
    first, same, other = built
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not torch.equal(first["tok_emb.weight"], other["tok_emb.weight"])
    assert not torch.equal(first["lm_head.weight"], other["lm_head.weight"])


def test_the_optimizer_steps_with_the_scheduled_lr(monkeypatch):
    seen = []

    class Recording(torch.optim.AdamW):
        def step(self, closure=None):
            seen.append([group["lr"] for group in self.param_groups])
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    run = tiny(**{"train.lr_schedule": "cosine", "train.warmup_iters": 3, "train.max_iters": 8,
                  "train.eval_interval": 8})
    train(run, SMALL)
    assert len(seen) == 8
    for step, lrs in enumerate(seen):
        assert lrs == pytest.approx([lr_at(run.train, step)] * 2)
    assert len({round(lrs[0], 12) for lrs in seen}) == 8  # warmup then decay: a new lr every step


def stacked_and_single(how):
    """(members, {name: parameter}) of a one-layer GPT, alone or as a group of two."""
    torch.manual_seed(0)
    models = [GPT(cfg(n_layer=1)) for _ in range(2)]
    if how == "single":
        return OneModel(models[0], compile_model=False), dict(models[0].named_parameters())
    stacked = StackedModels(models, cfg(n_layer=1))
    return stacked, stacked.params


@pytest.mark.parametrize("how", ["single", "group"])
def test_clipping_scales_each_members_gradient_to_max_norm(how):
    members, params = stacked_and_single(how)
    count = 1 if how == "single" else 2
    norms = [10.0, 0.5][:count]  # member 0 above max_norm, member 1 below it
    torch.manual_seed(1)
    grads = {name: torch.randn_like(p) for name, p in params.items()}

    def member_norm(tensors, i):
        return math.sqrt(sum(float(t[i].pow(2).sum()) if count > 1 else float(t.pow(2).sum()) for t in tensors))

    for i, norm in enumerate(norms):
        scale = norm / member_norm(grads.values(), i)
        for g in grads.values():
            if count > 1:
                g[i] *= scale
            else:
                g *= scale
    for name, p in params.items():
        p.grad = grads[name].clone()
    members.clip(1.0)
    for i, norm in enumerate(norms):
        expected = min(1.0, 1.0 / norm)  # scaled as a whole to max_norm, or left alone
        assert member_norm([p.grad for p in params.values()], i) == pytest.approx(norm * expected, rel=1e-4)
        for name, p in params.items():
            got, before = (p.grad[i], grads[name][i]) if count > 1 else (p.grad, grads[name])
            assert torch.allclose(got, before * expected, rtol=1e-4, atol=1e-9)  # the direction is kept


@pytest.mark.parametrize("how", ["single", "group"])
def test_weight_decay_only_on_matrices(how):
    members, params = stacked_and_single(how)
    torch.manual_seed(0)
    template = GPT(cfg(n_layer=1))
    matrices = {f"{name}.weight" for name, module in template.named_modules()
                if isinstance(module, (nn.Linear, nn.Embedding))}
    names = {id(p): name for name, p in params.items()}
    decayed, kept = members.param_groups(0.1)
    assert (decayed["weight_decay"], kept["weight_decay"]) == (0.1, 0.0)
    assert {names[id(p)] for p in decayed["params"]} == matrices  # Linear and Embedding weights
    assert {names[id(p)] for p in kept["params"]} == set(params) - matrices  # biases, LayerNorm gains
    assert len(decayed["params"]) + len(kept["params"]) == len(params)


def test_an_infinite_training_loss_is_divergence_at_its_step():
    run = tiny(**{"train.max_iters": 6, "train.eval_interval": 1})
    torch.manual_seed(run.train.seed)
    model = build_model(run.model)
    members = OneModel(model, compile_model=False)
    real = members.losses
    steps = [0]

    def losses(x, y):
        loss = real(x, y)
        if not model.training:
            return loss
        steps[0] += 1
        return loss * float("inf") if steps[0] == 3 else loss  # the third training step: step 2

    members.losses = losses
    (result,) = fit(members, run, [run.train.seed], SMALL, CPU, None)
    assert result.diverged_at == 2


# -- attention: the explicit path and the fused one, each on its own ---------------------------------------


def test_explicit_attention_matches_a_hand_computation():
    attend = MASK.build("after", cfg(fused=False)).eval()  # the explicit code (model.fused=false)
    q = torch.tensor([[[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]])  # one head, T = 2, head size 4
    k = torch.tensor([[[3.0, 1.0, 0.0, 0.0], [1.0, 0.0, 4.0, 0.0]]])
    v = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]])
    # row 0 reads key 0 alone; row 1 scores q1.k0 / sqrt(4) = 0 and q1.k1 / sqrt(4) = 8 / 2 = 4
    w = 1 / (1 + math.exp(4))
    weights = torch.tensor([[[1.0, 0.0], [w, 1 - w]]])
    assert torch.allclose(attend.weights(q, k), weights, atol=1e-6)
    assert torch.allclose(attend(q, k, v), torch.tensor([[[1.0, 0.0, 0.0, 0.0], [w, 1 - w, 0.0, 0.0]]]), atol=1e-6)


def reference_attention(q, k, v, causal=True):
    """softmax(q k^T / sqrt(hs)) v, future pairs masked, written out independently of gptlab."""
    scores = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.size(-1))
    steps = q.size(-2)
    allowed = torch.tensor([[j <= i or not causal for j in range(steps)] for i in range(steps)])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


@pytest.mark.parametrize("name, causal", [("after", True), ("none", False)])
def test_fused_attention_equals_a_hand_reference(name, causal):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 5, 4).unbind(0)  # batch 2, 3 heads, T = 5, head size 4
    fused = MASK.build(name, cfg(fused=True)).eval()  # the default path: scaled_dot_product_attention
    assert torch.allclose(fused(q, k, v), reference_attention(q, k, v, causal), atol=1e-5)


def test_head_h_owns_channels_h_hs_to_h_plus_1_hs():
    attn = MultiHeadAttention(cfg())
    x = torch.randn(2, T, C)
    heads = attn.split_heads(x)
    assert heads.shape == (2, H, T, HS)
    for h in range(H):
        assert torch.equal(heads[:, h], x[:, :, h * HS : (h + 1) * HS])  # every position, its own slice


class PassValues(nn.Module):
    """An attention that hands each position its own value: what goes in per head comes out."""

    def forward(self, q, k, v):
        return v


def test_concat_is_the_inverse_of_the_split():
    attn = MultiHeadAttention(cfg(values="identity", projections=False)).eval()
    attn.attend = PassValues()
    x = torch.randn(2, T, C)
    assert torch.equal(attn(x), x)  # the heads go back side by side, each to the channels it came from


def test_attention_averages_the_value_maps_output():
    torch.manual_seed(0)
    attn = MultiHeadAttention(cfg()).eval()
    x = torch.randn(2, T, C)
    _, _, v = attn.heads(x)
    assert torch.equal(v, attn.split_heads(attn.values(x)))
    with torch.no_grad():
        attn.values.weight.zero_()  # no value, nothing to average: only the projection's bias is left
    y = attn(x)
    assert torch.allclose(y, attn.proj.bias.expand_as(y), atol=1e-7)


def test_attention_output_goes_through_its_projection():
    attn = MultiHeadAttention(cfg()).eval()
    with torch.no_grad():
        attn.proj.weight.zero_()
        attn.proj.bias.fill_(0.5)
    assert torch.equal(attn(torch.randn(2, T, C)), torch.full((2, T, C), 0.5))


def test_feedforward_is_linear_relu_linear():
    torch.manual_seed(0)
    ffn = FeedForward(cfg()).eval()
    first, last = ffn.net[0], ffn.net[2]
    x = torch.randn(2, T, C)
    hidden = torch.relu(x @ first.weight.T + first.bias)  # 4 * C wide, negative values cut to 0
    assert hidden.shape == (2, T, 4 * C)
    assert torch.allclose(ffn(x), hidden @ last.weight.T + last.bias, atol=1e-6)


def test_logits_read_the_residual_stream_through_the_final_norm():
    torch.manual_seed(0)
    model = GPT(cfg(init="torch")).eval()  # embeddings N(0, 1): a stream far above LayerNorm's eps
    x = torch.randint(0, V, (2, T))
    logits = model.logits(x)
    handle = model.blocks.register_forward_hook(lambda module, args, out: 10 * out)
    try:
        louder = model.logits(x)
    finally:
        handle.remove()
    assert torch.allclose(louder, logits, atol=1e-4)  # the final norm takes the stream's scale out


# -- the model: generation and loss ------------------------------------------------------------------------


class Successor(LanguageModel):
    """At each position all probability on (that position's token + 1) mod V; records what it is fed."""

    def __init__(self, block_size: int = 4) -> None:
        super().__init__()
        self.block_size = block_size
        self.fed: list[list[int]] = []

    def logits(self, idx):
        self.fed.append(idx[0].tolist())
        out = torch.full((*idx.shape, V), float("-inf"))
        return out.scatter(-1, ((idx + 1) % V).unsqueeze(-1), 0.0)


def test_generation_feeds_the_last_block_size_tokens():
    model = Successor(block_size=4)
    out = list(model.sample_tokens(torch.arange(10).view(1, 10), 3))
    assert out == [10, 0, 1]
    assert model.fed == [[6, 7, 8, 9], [7, 8, 9, 10], [8, 9, 10, 0]]  # the context's last 4 tokens, each step


def test_next_token_is_drawn_from_the_last_positions_distribution():
    model = Successor(block_size=8)
    assert list(model.sample_tokens(torch.tensor([[3, 5, 2]]), 2)) == [3, 4]  # after 2 comes 3, then 4


def test_loss_is_the_mean_negative_log_likelihood_of_the_targets():
    torch.manual_seed(0)
    model = GPT(cfg(init="torch")).eval()
    x, y = torch.randint(0, V, (3, T)), torch.randint(0, V, (3, T))
    logits, loss = model(x, y)
    log_p = torch.log_softmax(logits, dim=-1)
    nll = -sum(log_p[b, t, y[b, t]] for b in range(3) for t in range(T)) / (3 * T)
    assert loss.item() == pytest.approx(nll.item(), abs=1e-5)


# -- statistics ----------------------------------------------------------------------------------------------


def test_verdicts_use_holm_adjusted_p_values():
    base = [2.00, 2.02, 2.04]
    losses = {"base": base, "a": [2.05, 2.07, 2.09], "b": [2.00, 2.05, 2.01], "c": [1.99, 2.06, 2.02]}
    out = compare_to_baseline(losses, "base")
    names = ["a", "b", "c"]
    raw = [welch(losses[n], base).p_two_sided() for n in names]
    assert [out[n].p_value for n in names] == pytest.approx(holm(raw))
    assert raw[0] < ALPHA <= out["a"].p_value  # significant alone, not once three variants are tested
    assert not out["a"].significant and out["a"].verdict.startswith("n.s.")
