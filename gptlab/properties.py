"""What every character-level language model must do, one function per property, for any model.

A model here is any ``nn.Module`` called the lecture's way, ``model(idx, targets) -> (logits, loss)``, with logits
``(B, T, V)`` or ``(B*T, V)``: gptlab's own models, and a learner's ``gpt.py`` (``gptlab check``). The test suite
checks every registered variant with these functions (``tests/test_registered.py``) and ``gptlab check`` runs the
same ones on a learner's file, so a property tightened here is tightened for both; the catalogue of learners'
bugs (``gptlab/devtools/catalogue.py``) names the property that catches each model bug.

Each check takes a ``Subject`` (how to build a fresh model, and its sizes), builds what it needs under a fixed
seed, and returns an ``Outcome``: passed, failed or skipped, with one line of evidence. None trains for long
except ``trains``, which runs gptlab's training loop on the learner's model and on gptlab's reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

TOLERANCE = 1e-4  # logits that move by less than this did not move (float32 noise is ~1e-6 at these sizes)
SEED = 0  # every check builds its model and draws its tokens under this seed, so a check gives the same answer twice


@dataclass(frozen=True)
class Outcome:
    status: str  # "pass", "fail" or "skipped"
    evidence: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def passed(evidence: str) -> Outcome:
    return Outcome("pass", evidence)


def failed(evidence: str) -> Outcome:
    return Outcome("fail", evidence)


def skipped(reason: str) -> Outcome:
    return Outcome("skipped", reason)


@dataclass(frozen=True)
class Subject:
    """A model to check: ``build(dropout)`` makes a fresh one (seeded by the caller), with these sizes."""

    build: Callable[[float], nn.Module]
    vocab_size: int
    block_size: int
    dropout: float = 0.0

    def fresh(self, dropout: float | None = None) -> nn.Module:
        torch.manual_seed(SEED)
        return self.build(self.dropout if dropout is None else dropout)

    def tokens(self, batch: int, length: int | None = None, seed: int = SEED) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(self.vocab_size, (batch, length or self.block_size), generator=generator)

    def other_tokens(self, batch: int) -> torch.Tensor:
        """A second draw, independent of ``tokens``: targets, or the other contexts a check compares with."""
        return self.tokens(batch, seed=SEED + 1)


def forward(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[Any, Any]:
    """``model(idx, targets)`` as the lecture calls it; ``(logits, loss)`` whatever the model returns."""
    out = model(idx, targets)
    if isinstance(out, tuple) and len(out) == 2:
        return out[0], out[1]
    return out, None


def logits_of(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The logits as (B, T, V), from a model that returns (B, T, V) or (B*T, V)."""
    logits, _ = forward(model, idx)
    return logits.reshape(idx.size(0), idx.size(1), -1)


def shape_of(value: Any) -> tuple[int, ...] | str:
    """A tensor's shape, or the name of what came instead of a tensor."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def largest_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def noticeable(change: float, logits: torch.Tensor) -> bool:
    """A change beyond float noise: TOLERANCE for logits of size 1 or more, relatively less for smaller ones
    (an untrained model without norms has logits of size 1e-3)."""
    return change > TOLERANCE * min(1.0, float(logits.abs().max()))


# -- the properties -------------------------------------------------------------------------------------------


def shapes(subject: Subject) -> Outcome:
    """Logits (B, T, V) or (B*T, V) and a scalar loss; a T shorter than block_size works."""
    model = subject.fresh().eval()
    B, T, V = 3, subject.block_size, subject.vocab_size
    idx = subject.tokens(B)
    with torch.no_grad():
        logits, loss = forward(model, idx, subject.other_tokens(B))
        if shape_of(logits) not in ((B, T, V), (B * T, V)):
            return failed(f"logits for a ({B}, {T}) batch have shape {shape_of(logits)}; expected ({B}, {T}, {V}) "
                          f"or ({B * T}, {V})")
        if shape_of(loss) != ():
            return failed(f"the loss for given targets is {shape_of(loss)}; expected a scalar tensor (the mean over "
                          f"B*T targets)")
        short = max(1, T // 2)
        short_logits, _ = forward(model, idx[:, :short])
    if shape_of(short_logits) not in ((B, short, V), (B * short, V)):
        return failed(f"a context of {short} tokens (block_size {T}) gives logits {shape_of(short_logits)}; "
                      f"expected ({B}, {short}, {V})")
    return passed(f"logits {tuple(logits.shape)}, scalar loss; T = {short} gives {tuple(short_logits.shape)}")


INIT_BELOW, INIT_ABOVE = 0.5, 1.0  # near ln V: an untrained model's logits of std s cost about ln V + s**2 / 2


def init_loss(subject: Subject) -> Outcome:
    """At initialisation the model knows nothing: its loss on random tokens is near ln V."""
    model = subject.fresh().eval()
    with torch.no_grad():
        _, loss = forward(model, subject.tokens(8), subject.other_tokens(8))
    expected = math.log(subject.vocab_size)
    value = float(loss)
    low, high = expected - INIT_BELOW, expected + INIT_ABOVE
    where = f"loss at initialisation {value:.3f}; ln V = ln {subject.vocab_size} = {expected:.3f}"
    if not low <= value <= high:
        return failed(f"{where}, outside [{low:.2f}, {high:.2f}] (a summed loss, or logits far too large?)")
    return passed(where)


CAUSAL_POSITIONS = 12  # a long context is probed at this many later tokens, spread over it, the first and last too


def tried_positions(block_size: int) -> list[int]:
    """The later tokens the causality check changes (and cuts after): every one up to CAUSAL_POSITIONS, else
    that many spread from the first to the last."""
    count = min(block_size - 1, CAUSAL_POSITIONS)
    return [round(x) for x in torch.linspace(1, block_size - 1, count).tolist()]  # distinct: steps of 1 or more


def causal(subject: Subject) -> Outcome:
    """A position's logits read only that position and earlier ones: changing a later token, or cutting the
    context short after it, never moves them (in eval mode)."""
    model = subject.fresh().eval()
    T, V = subject.block_size, subject.vocab_size
    idx = subject.tokens(2)
    # (largest change, evidence) of each way of looking, from nothing moved (block_size 1 has no later token)
    changes, cuts = [(0.0, "")], [(0.0, "")]  # pragma: no mutate (the start's evidence is never shown: a failure moved more than 0.0)
    with torch.no_grad():
        full = logits_of(model, idx)
        for later in tried_positions(T):
            changed = idx.clone()
            changed[:, later] = (changed[:, later] + 1) % V
            change = (logits_of(model, changed)[:, :later] - full[:, :later]).abs().amax(dim=(0, 2))  # per position
            changes.append((float(change.max()), f"changing token {later} moved position {int(change.argmax())}'s "
                                                 f"logits by {float(change.max()):.3g}"))
            cut = largest_change(logits_of(model, idx[:, :later]), full[:, :later])
            cuts.append((cut, f"cutting the context after token {later - 1} moved the earlier positions' logits by "
                              f"{cut:.3g}"))
    for moved, evidence in (max(changes), max(cuts)):
        if noticeable(moved, full):
            return failed(evidence)
    largest = max(max(changes)[0], max(cuts)[0])
    return passed(f"no later token moves an earlier position (largest change {largest:.1g}, "
                  f"{len(tried_positions(T))} of {T - 1} later tokens tried)")


def batch_independent(subject: Subject) -> Outcome:
    """One sequence of a batch never changes another's logits, in eval and in train mode (same dropout masks)."""
    model = subject.fresh()
    idx = subject.tokens(3)
    other = idx.clone()
    other[1:] = subject.other_tokens(2)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        outputs = []
        for batch in (idx, other):
            with torch.no_grad(), torch.random.fork_rng():
                torch.manual_seed(SEED)  # the same dropout masks for both batches
                outputs.append(logits_of(model, batch)[0])
        moved = largest_change(outputs[0], outputs[1])
        if noticeable(moved, outputs[0]):  # pragma: no mutate (outputs[1]: the two scales differ by at most the change itself)
            return failed(f"changing sequences 1 and 2 moved sequence 0's logits by {moved:.3g} in {mode} mode "
                          f"(statistics over the batch, as BatchNorm takes?)")
    return passed("changing other sequences never moved a sequence's logits (eval and train mode)")


def reads_context(subject: Subject) -> bool:
    """Whether the last position's logits depend on any earlier token (a bigram's do not)."""
    model = subject.fresh().eval()
    idx = subject.tokens(4)
    other = subject.other_tokens(4)
    other[:, -1] = idx[:, -1]
    with torch.no_grad():
        last = logits_of(model, idx)[:, -1]
        return noticeable(largest_change(last, logits_of(model, other)[:, -1]), last)


def positions(subject: Subject) -> Outcome:
    """Positions are told apart: on a context of one repeated token, the positions' logits differ. Without a
    position embedding every position of such a context sees the same tokens, and attention (an average) gives
    each the same output, layer after layer."""
    if not reads_context(subject):
        return skipped("the model reads no context (the last position's logits depend on its own token alone, "
                       "as a bigram's do)")
    model = subject.fresh().eval()
    repeated = subject.tokens(4)[:, :1].expand(-1, subject.block_size).contiguous()  # "aaaaaaaa" per row
    with torch.no_grad():
        logits = logits_of(model, repeated)
    moved = largest_change(logits[:, 1:], logits[:, :1].expand_as(logits[:, 1:]))
    if not noticeable(moved, logits):
        return failed(f"on a context of one repeated token every position gets the same logits (largest "
                      f"difference {moved:.1g}): attention cannot tell positions apart (no position embedding?)")
    return passed(f"on a context of one repeated token the positions' logits differ by up to {moved:.3g}")


EVAL_DROPOUT = 0.2  # raised to this for the check when the model's own dropout is 0


def eval_deterministic(subject: Subject) -> Outcome:
    """In eval() two forwards agree (dropout off), with dropout raised above 0 for the check."""
    p = subject.dropout if subject.dropout > 0 else EVAL_DROPOUT
    model = subject.fresh(dropout=p)
    idx = subject.tokens(4)
    with torch.no_grad():
        model.eval()
        first, second = logits_of(model, idx), logits_of(model, idx)
        model.train()
        in_train = largest_change(logits_of(model, idx), logits_of(model, idx))
    moved = largest_change(first, second)
    if moved > 0:
        return failed(f"two eval() forwards of the same batch differ by {moved:.3g} (dropout {p}): dropout still "
                      f"on in eval mode (F.dropout without training=self.training?)")
    note = f"in train() they differ by {in_train:.3g}" if in_train else "no randomness in train() either"
    return passed(f"two eval() forwards agree at dropout {p}; {note}")


def gradients(subject: Subject) -> Outcome:
    """Every parameter takes part in the loss: each gets a finite, non-zero gradient."""
    model = subject.fresh().train()
    _, loss = forward(model, subject.tokens(4), subject.other_tokens(4))
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return failed("the loss does not depend on any parameter (detached, or computed outside the graph)")
    loss.backward()
    named = list(model.named_parameters())
    missing = [name for name, p in named if p.grad is None]
    if missing:
        return failed(f"{len(missing)} of {len(named)} parameters get no gradient (not used in forward?): "
                      f"{', '.join(missing[:3])}")
    broken = [name for name, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
    if broken:
        return failed(f"non-finite gradients in {', '.join(broken[:3])}")
    zero = [name for name, p in named if p.grad is not None and not p.grad.abs().sum() > 0]
    if zero:
        return failed(f"{len(zero)} of {len(named)} parameters get an all-zero gradient (detached, or their output "
                      f"multiplied away?): {', '.join(zero[:3])}")
    return passed(f"all {len(named)} parameters get finite, non-zero gradients")


LEARN_STEPS, LEARN_LR, LEARN_TARGET = 100, 3e-2, 0.5  # on one fixed batch, AdamW must halve the loss or better


def learns(subject: Subject, steps: int = LEARN_STEPS) -> Outcome:
    """A model that can learn can memorise one fixed batch: AdamW on it alone drives the loss down."""
    model = subject.fresh(dropout=0.0).train()
    T = subject.block_size
    generator = torch.Generator().manual_seed(SEED)
    idx = torch.randperm(subject.vocab_size, generator=generator)[: min(T, subject.vocab_size - 1)].unsqueeze(0)
    # every input token distinct: even a bigram can memorise it
    targets = torch.roll(idx, -1, dims=1)  # pragma: no mutate (dims=None: idx is one row, and rolling it flat is rolling the row)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARN_LR, weight_decay=0.0)
    first = last = math.nan
    for step in range(steps):
        _, loss = forward(model, idx, targets)
        if step == 0:
            first = float(loss.detach())
        optimizer.zero_grad()  # the default: set_to_none=True
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = float(forward(model, idx, targets)[1])
    goal = LEARN_TARGET * first
    where = f"on one fixed batch the loss went {first:.3f} -> {last:.3f} in {steps} AdamW steps (lr {LEARN_LR})"
    if not last <= goal:
        return failed(f"{where}; a model that learns gets below {goal:.3f} (its logits bounded, or a frozen part?)")
    return passed(where)


def generate(subject: Subject, new_tokens: int = 10) -> Outcome:
    """``generate(idx, n)`` takes a prompt longer than block_size and returns it with n new tokens in the vocabulary."""
    model = subject.fresh().eval()
    method = getattr(model, "generate", None)
    if not callable(method):
        return skipped("the model has no generate(idx, max_new_tokens) method")
    prompt = subject.tokens(1, subject.block_size + 5)
    with torch.no_grad():
        out = method(prompt.clone(), new_tokens)
    if shape_of(out) != (1, prompt.size(1) + new_tokens):
        return failed(f"generate on a prompt of {prompt.size(1)} tokens (block_size {subject.block_size}) with "
                      f"{new_tokens} new ones returned {shape_of(out)}; expected (1, {prompt.size(1) + new_tokens})")
    if not torch.equal(out[:, : prompt.size(1)], prompt):
        return failed("generate changed the prompt it was given: the returned sequence must start with it")
    new = out[:, prompt.size(1):]
    if not bool(((new >= 0) & (new < subject.vocab_size)).all()):
        return failed(f"generate returned tokens outside the vocabulary [0, {subject.vocab_size})")
    return passed(f"a prompt of {prompt.size(1)} tokens (block_size {subject.block_size}) + {new_tokens} new tokens, "
                  f"all in the vocabulary")
