"""The models as the harness builds them: the bigram baseline, and the GPT assembled from the registries.

Read ``gptlab/gpt.py`` first: the same GPT at its default settings, top to bottom in one file. Here every
line that an insight changes is a module picked by name from its registry (``gptlab/components/``).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.components import MASK, NORM, PROJECTIONS, QK, REGISTRIES, RESIDUAL, VALUES
from gptlab.config import ModelConfig
from gptlab.errors import GptlabError, one_line
from gptlab import properties
from gptlab.gpt import init_weights
from gptlab.learner import build_module, is_model_file, split_arch


class LanguageModel(nn.Module):
    """Shared by both models: the loss and autoregressive sampling."""

    block_size: int

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.logits(idx)  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def sample_tokens(
        self, idx: torch.Tensor, count: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Iterator[int]:
        """Sample ``count`` tokens after ``idx`` (1, T), one at a time, reading at most ``block_size`` back."""
        for _ in range(count):
            logits = self.logits(idx[:, -self.block_size :])[:, -1, :] / temperature
            probs = F.softmax(logits.float(), dim=-1)
            if not torch.isfinite(probs).all():
                raise GptlabError("cannot sample: the model's logits are not finite (did the run diverge?)")
            nxt = torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(idx.device)
            idx = torch.cat((idx, nxt), dim=1)
            yield int(nxt)


class Bigram(LanguageModel):
    """The next character from the current one alone: a table of V x V logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.block_size = cfg.block_size
        self.table = nn.Embedding(cfg.vocab_size, cfg.vocab_size)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


class MultiHeadAttention(nn.Module):
    """``n_head`` heads of size n_embd / n_head side by side (one batched matmul), concatenated, projected."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qk = QK.build(cfg.qk, cfg)
        self.values = VALUES.build(cfg.values, cfg)
        self.attend = MASK.build(cfg.mask, cfg)
        self.proj = PROJECTIONS.build(cfg.projections, cfg, n_in=cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, n_head, T, C / n_head): head h owns channels [h*hs, (h+1)*hs)."""
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k = self.qk(x)
        return self.split_heads(q), self.split_heads(k), self.split_heads(self.values(x))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (B, n_head, T, T), computed explicitly, for plots and tests."""
        q, k, _ = self.heads(x)
        return self.attend.weights(q, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        y = self.attend(*self.heads(x))  # (B, n_head, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side again
        return self.dropout(self.proj(y))


class FeedForward(nn.Module):
    """After tokens talk (attention), each token thinks on its own: a per-token MLP, ``ffn_mult`` times wider."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.n_embd
        self.net = nn.Sequential(
            nn.Linear(cfg.n_embd, hidden, bias=cfg.bias),
            nn.ReLU(),
            PROJECTIONS.build(cfg.projections, cfg, n_in=hidden),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Communicate (attention), then compute (feed-forward), each on a normed input, each joined to x by
    the residual variant (``x + f(x)`` in the lecture). ``ffn_mult`` 0 leaves the feed-forward layer out."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.residual = RESIDUAL.build(cfg.residual, cfg)  # pragma: no mutate (cfg=None: the residual variants read nothing of it)
        self.norm1 = NORM.build(cfg.norm, cfg)
        self.attn = MultiHeadAttention(cfg)
        self.ffn: FeedForward | None = None
        if cfg.ffn_mult:
            self.norm2 = NORM.build(cfg.norm, cfg)
            self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.residual(x, self.attn(self.norm1(x)))
        if self.ffn is not None:
            x = self.residual(x, self.ffn(self.norm2(x)))
        return x


class GPT(LanguageModel):
    """Embeddings -> blocks -> final norm -> logits over the vocabulary."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.block_size = cfg.block_size
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = NORM.build(cfg.norm, cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.bias)
        if cfg.init == "normal":
            self.apply(init_weights)  # N(0, 0.02); "torch" keeps PyTorch's defaults (embeddings N(0, 1))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token identity + position: without the position embedding attention is order-blind."""
        pos = torch.arange(idx.size(1), device=idx.device)
        return self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm_f(self.blocks(self.embed(idx))))


class LearnerModel(LanguageModel):
    """A learner's own model (``model.arch = PATH.py``, read by ``gptlab.learner``) as the harness trains it:
    their forward and their loss, the logits seen as (B, T, V). Their file's ``device`` follows the input's."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.block_size = cfg.block_size
        self.net = build_module(cfg)
        self.file_globals = type(self.net).forward.__globals__  # the learner's module: `device` lives there

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if "device" in self.file_globals:
            self.file_globals["device"] = idx.device  # their torch.arange(T, device=device) follows the input
        # gptlab's batches are views of the text; a learner's .view(B*T) wants them contiguous, as get_batch makes them
        logits, loss = properties.forward(self.net, idx.contiguous(),
                                          None if targets is None else targets.contiguous())
        if targets is not None and not isinstance(loss, torch.Tensor):
            raise GptlabError(f"model.arch: {type(self.net).__name__}.forward(idx, targets) returned no loss")
        return logits.reshape(idx.size(0), idx.size(1), -1), loss

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self(idx)[0]


def build_model(cfg: ModelConfig) -> LanguageModel:
    if is_model_file(cfg.arch):
        return LearnerModel(cfg)
    return Bigram(cfg) if cfg.arch == "bigram" else GPT(cfg)


def check_model(cfg: ModelConfig) -> int:
    """Build the model on the meta device (no memory, no time) and run a forward and backward pass of one
    full-length window through it: a variant that breaks the builder contract or fails in ``forward`` is a
    one-line error before anything trains. Returns the parameter count."""
    if is_model_file(cfg.arch):
        return check_learner_model(cfg)
    with torch.device("meta"):
        model = build_model(cfg)  # a registry's failing builder raises its own one-line GptlabError
        idx = torch.zeros(1, cfg.block_size, dtype=torch.long)  # pragma: no mutate (any batch size checks the same)
        try:
            _, loss = model(idx, idx)
            assert loss is not None
            loss.backward()
        except Exception as err:  # any failure of a variant's forward: name it in one line
            raise GptlabError(f"model ({describe(cfg)}): the forward pass fails: {one_line(err)}") from err
    return model.num_params()


def check_learner_model(cfg: ModelConfig) -> int:
    """A learner's model is built for real (its code may not run on the meta device) and must be causal: one
    that reads the future is refused before it trains, pointing to ``gptlab check``."""
    subject = properties.Subject(lambda _: build_model(cfg), cfg.vocab_size, cfg.block_size)  # causal: in eval mode
    model = subject.fresh()
    try:
        outcome = properties.causal(subject)
    except Exception as err:  # the learner's forward fails: name it in one line
        raise GptlabError(f"model.arch = {cfg.arch!r}: the forward pass fails: {one_line(err)}") from err
    if not outcome.passed:
        raise GptlabError(f"model.arch = {cfg.arch!r} reads the future ({outcome.evidence}); "
                          f"run `gptlab check {split_arch(cfg.arch)[0]}` for what to fix")
    return sum(p.numel() for p in model.parameters())


def describe(cfg: ModelConfig) -> str:
    """The chosen variants, e.g. ``values=projected, qk=separate, ...``."""
    return ", ".join(f"{name}={str(getattr(cfg, name)).lower()}" for name in REGISTRIES)
