"""Start here: the GPT of Karpathy's "Let's build GPT" lecture, top to bottom in one file.

This is the model every preset trains when each component keeps its default (``gptlab.model.GPT`` builds
the same network from the registries and gives the same logits with the same weights:
``tests/test_gpt_reading.py``). Each line that an ablation swaps is marked ``# <- model.FIELD``; its
variants stand side by side in ``gptlab/components/FIELD.py``, whose docstring states the insight.

Shapes: B batch, T time (<= block_size), C channels (n_embd), nh heads, hs head size (C // nh), V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.config import ModelConfig

DEFAULTS = {"values": "projected", "qk": "separate", "mask": "after", "norm": "layernorm", "residual": True,
            "projections": True, "arch": "gpt", "init": "normal"}


class CausalSelfAttention(nn.Module):
    """Tokens exchange information: each head scores every earlier token and averages their values."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        C = cfg.n_embd
        self.n_head = cfg.n_head
        self.query = nn.Linear(C, C, bias=False)  # <- model.qk: what each token looks for ...
        self.key = nn.Linear(C, C, bias=False)  #    ... and what it contains
        self.value = nn.Linear(C, C, bias=False)  # <- model.values: what it hands out when attended to
        self.proj = nn.Linear(C, C, bias=cfg.bias)  # <- model.projections: mixes the heads' outputs
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k = self.query(x), self.key(x)  # (B, T, C) each                      <- model.qk
        v = self.value(x)  # (B, T, C)                                          <- model.values
        # split the channels into heads: (B, T, C) -> (B, T, nh, hs) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5  # (B, nh, T, T): affinities, scaled by 1/sqrt(hs)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True above the diagonal
        scores = scores.masked_fill(future, float("-inf"))  # <- model.mask: no token reads a later one
        weights = self.attn_dropout(F.softmax(scores, dim=-1))  # (B, nh, T, T): each row sums to 1
        y = weights @ v  # (B, nh, T, hs): a weighted average of the values
        y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side again: (B, T, C)
        return self.dropout(self.proj(y))  # <- model.projections


class FeedForward(nn.Module):
    """Then each token thinks on its own: a per-token MLP, 4 times wider inside (``ffn_mult``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.n_embd
        self.fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)  # <- model.projections: back to C
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.relu(self.fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Communicate, then compute; each on a normalised input, each added to the residual stream."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)  # <- model.norm
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)  # <- model.norm
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # <- model.residual: x + f(x), the identity path carries x on
        x = x + self.ffn(self.norm2(x))  # <- model.residual
        return x  # (B, T, C)


class GPT(nn.Module):
    """Token and position embeddings -> n_layer blocks -> final norm -> logits over the vocabulary."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chosen = {name: getattr(cfg, name) for name in DEFAULTS}
        if chosen != DEFAULTS or cfg.ffn_mult < 1:
            raise ValueError(f"gptlab.gpt reads the default model only ({DEFAULTS}, ffn_mult >= 1); "
                             "gptlab.model.build_model builds every variant")
        self.block_size = cfg.block_size
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)  # <- model.norm
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.bias)
        self.apply(init_weights)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C): what each token is + where it is
        x = self.blocks(x)  # (B, T, C)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V): a score for every possible next character
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))


def init_weights(module: nn.Module) -> None:
    """Weights N(0, 0.02), zero biases (the lecture's final gpt.py, nanoGPT): the loss at init is ~ ln(V).

    (``model.init: torch`` keeps PyTorch's defaults instead, as in the lecture's intermediate steps.)
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)  # pragma: no mutate (mean=0.0 is the default)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
