"""Each property of gptlab/properties.py against small models built to break exactly it (and gptlab's own GPT,
which has them all): a check that passes a broken model, or fails a good one, fails here."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptlab import properties as P
from gptlab.config import ModelConfig
from gptlab.model import GPT, Bigram

V, T = 11, 6


class Tiny(nn.Module):
    """A one-layer causal model (token + position embeddings, causal mean of the past, a head), with switches
    that each break one property."""

    def __init__(self, dropout=0.0, peek=False, by_length=False, no_positions=False, mix_batch=False,
                 mix_in_train=False, eval_dropout=False, unused=False, zero_grad=False, squash=False,
                 sum_loss=False, flat=False, scalar_loss=True, short_breaks=False, generate=None, scale=1.0):
        super().__init__()
        self.emb, self.pos, self.head = nn.Embedding(V, 16), nn.Embedding(T, 16), nn.Linear(16, V)
        self.bn = nn.BatchNorm1d(16) if mix_in_train else None
        self.extra = nn.Linear(3, 3) if unused else None
        self.p, self.opts, self.scale = dropout, locals(), scale
        if generate is not None:
            self.generate = generate.__get__(self)

    def forward(self, idx, targets=None):
        o = self.opts
        B, L = idx.shape
        if o["short_breaks"] and L < T:
            idx = idx[:, :1]
        x = self.emb(idx) * self.scale
        if not o["no_positions"]:
            x = x + self.pos(torch.arange(L - 1, -1, -1) if o["by_length"] else torch.arange(x.size(1)))
        weights = torch.tril(torch.ones(x.size(1), x.size(1)), diagonal=1 if o["peek"] else 0)
        x = (weights / weights.sum(-1, keepdim=True)) @ x
        if o["mix_batch"]:
            x = x - x.mean(dim=0, keepdim=True)
        if o["mix_in_train"]:
            x = self.bn(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(x, self.p, training=True if o["eval_dropout"] else self.training)
        logits = self.head(x) * (0 if o["zero_grad"] else 1)
        if o["zero_grad"]:
            logits = logits + self.emb(idx)[..., :1] * 0 + torch.zeros(V)
        if o["squash"]:
            logits = torch.tanh(logits) * 0.5
        if targets is None:
            return logits, None
        flat = logits.reshape(-1, V)
        loss = F.cross_entropy(flat, targets.reshape(-1), reduction="sum" if o["sum_loss"] else "mean")
        if not o["scalar_loss"]:
            loss = F.cross_entropy(flat, targets.reshape(-1), reduction="none")
        return (flat if o["flat"] else logits), loss


def subject(dropout=0.0, **switches) -> P.Subject:
    return P.Subject(lambda p: Tiny(dropout=p, **switches), V, T, dropout)


def gptlab(arch="gpt", **kw) -> P.Subject:
    cfg = ModelConfig(n_embd=16, n_head=2, n_layer=2, block_size=T, vocab_size=V, arch=arch, **kw)
    return P.Subject(lambda p: (Bigram if arch == "bigram" else GPT)(ModelConfig(**{**cfg.__dict__, "dropout": p})),
                     V, T)


CHECKS = [P.shapes, P.init_loss, P.causal, P.batch_independent, P.positions, P.eval_deterministic, P.gradients,
          P.learns]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_good_models_pass_every_property(check):
    assert check(subject()).status == "pass"
    assert check(gptlab()).status == "pass"


@pytest.mark.parametrize("switches, check, evidence", [
    ({"peek": True}, P.causal, "changing token 1 moved position 0's logits by"),
    ({"by_length": True}, P.causal, "cutting the context after token"),
    ({"mix_batch": True}, P.batch_independent, "changing sequences 1 and 2 moved sequence 0's logits by"),
    ({"mix_in_train": True}, P.batch_independent, "in train mode"),
    ({"no_positions": True}, P.positions, "every position gets the same logits"),
    ({"eval_dropout": True}, P.eval_deterministic, "differ by"),
    ({"unused": True}, P.gradients, "2 of 6 parameters get no gradient (not used in forward?): extra.weight, extra.bias"),
    ({"zero_grad": True}, P.gradients, "get an all-zero gradient"),
    ({"squash": True}, P.learns, "a model that learns gets below"),
    ({"sum_loss": True}, P.init_loss, "outside [1.90, 3.40]"),
    ({"scale": 30.0}, P.init_loss, "outside"),
    ({"scalar_loss": False}, P.shapes, "expected a scalar tensor"),
    ({"short_breaks": True}, P.shapes, "a context of 3 tokens (block_size 6) gives logits (3, 1, 11)"),
])
def test_each_broken_model_fails_its_property_with_evidence(switches, check, evidence):
    outcome = check(subject(**switches))
    assert outcome.status == "fail" and evidence in outcome.evidence, outcome.evidence


def test_train_only_mixing_passes_in_eval_and_the_check_says_which_mode():
    outcome = P.batch_independent(subject(mix_in_train=True))
    assert outcome.evidence.endswith("in train mode (statistics over the batch, as BatchNorm takes?)")
    assert "in eval mode" in P.batch_independent(subject(mix_batch=True)).evidence


def test_logits_of_either_shape_are_accepted_and_read_as_b_t_v():
    assert P.shapes(subject(flat=True)).evidence.startswith(f"logits ({3 * T}, {V}), scalar loss")
    idx = torch.zeros(2, T, dtype=torch.long)
    model = Tiny(flat=True)
    assert P.logits_of(model, idx).shape == (2, T, V)

    class Bare(nn.Module):  # returns the logits alone
        def forward(self, idx, targets=None):
            return torch.zeros(*idx.shape, V)

    logits, loss = P.forward(Bare(), idx)
    assert logits.shape == (2, T, V) and loss is None


def test_a_wrong_logits_shape_names_both_shapes():
    class Wide(Tiny):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits[..., :5], loss

    outcome = P.shapes(P.Subject(lambda p: Wide(), V, T))
    assert outcome.evidence == f"logits for a (3, {T}) batch have shape (3, {T}, 5); expected (3, {T}, {V}) or ({3 * T}, {V})"


def test_a_bigram_reads_no_context_and_positions_is_skipped():
    bigram = gptlab("bigram")
    assert not P.reads_context(bigram) and P.reads_context(gptlab()) and P.reads_context(subject())
    assert P.positions(bigram).status == "skipped"
    assert P.causal(bigram).passed and P.batch_independent(bigram).passed


def test_init_loss_is_near_ln_v():
    outcome = P.init_loss(subject())
    value = float(outcome.evidence.split()[3].rstrip(";"))
    assert abs(value - math.log(V)) < 0.5 and f"ln V = ln {V} = {math.log(V):.3f}" in outcome.evidence


def test_eval_determinism_raises_a_zero_dropout_and_keeps_a_set_one():
    assert "at dropout 0.2; in train() they differ by" in P.eval_deterministic(subject()).evidence
    assert "at dropout 0.5;" in P.eval_deterministic(subject(dropout=0.5)).evidence
    assert "no randomness in train() either" in P.eval_deterministic(P.Subject(lambda p: Tiny(), V, T)).evidence


def test_gradients_name_non_finite_and_detached_losses():
    class Nan(Tiny):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits, loss + self.head.bias.sum() * float("nan")

    class Detached(Tiny):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits, loss.detach()

    assert "non-finite gradients in" in P.gradients(P.Subject(lambda p: Nan(), V, T)).evidence
    assert "does not depend on any parameter" in P.gradients(P.Subject(lambda p: Detached(), V, T)).evidence


def test_learns_halves_the_loss_on_one_batch():
    outcome = P.learns(subject())
    first, last = (float(x) for x in outcome.evidence.split("went ")[1].split(" in ")[0].split(" -> "))
    assert outcome.passed and last <= 0.5 * first
    assert "in 100 AdamW steps (lr 0.03)" in outcome.evidence


def generate_ok(self, idx, n):
    for _ in range(n):
        idx = torch.cat([idx, self(idx[:, -T:])[0][:, -1:].argmax(-1)], dim=1)
    return idx


@pytest.mark.parametrize("method, status, evidence", [
    (None, "skipped", "no generate(idx, max_new_tokens) method"),
    (generate_ok, "pass", f"a prompt of {T + 5} tokens (block_size {T}) + 10 new tokens"),
    (lambda self, idx, n: idx, "fail", f"returned (1, {T + 5}); expected (1, {T + 15})"),
    (lambda self, idx, n: torch.zeros(1, idx.size(1) + n, dtype=torch.long), "fail", "changed the prompt"),
    (lambda self, idx, n: torch.cat([idx, torch.full((1, n), V)], 1), "fail", "outside the vocabulary [0, 11)"),
    (lambda self, idx, n: torch.cat([idx, torch.full((1, n), -1)], 1), "fail", "outside the vocabulary"),
])
def test_generate(method, status, evidence):
    outcome = P.generate(subject(generate=method))
    assert outcome.status == status and evidence in outcome.evidence, outcome.evidence


def test_noticeable_is_relative_for_small_logits():
    small = torch.full((2,), 1e-3)
    assert P.noticeable(2e-7, small) and not P.noticeable(5e-8, small)
    big = torch.full((2,), 50.0)
    assert P.noticeable(2e-4, big) and not P.noticeable(5e-5, big)
    assert P.largest_change(torch.zeros(0), torch.zeros(0)) == 0.0
