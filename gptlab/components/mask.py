"""The causal mask: token t may only read tokens <= t, or training teaches it to copy the future.

``after`` scores every pair then fills the future with -inf (the lecture; the fused kernel on the fast path);
``before`` computes only the causal pairs, row by row (same numbers, less parallel); ``none`` leaks the future.
Replaces the ``masked_fill`` line in ``gptlab/gpt.py`` (``CausalSelfAttention.forward``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.config import ModelConfig
from gptlab.registry import ModuleBuilder, Registry

MASK: Registry[ModuleBuilder] = Registry(
    "model.mask", "a decoder must not see the future: mask the scores of later tokens")


def scaled_scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Affinities q·k / sqrt(head_size): the scale keeps softmax from saturating at init."""
    return q @ k.transpose(-2, -1) * q.size(-1) ** -0.5


class ScoreAllPairs(nn.Module):
    """Score all T x T pairs, optionally mask the future, softmax, aggregate the values.

    ``fused`` takes ``scaled_dot_product_attention`` (one kernel, same numbers); otherwise the explicit code runs.
    """

    causal = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)
        self.fused = cfg.fused

    def weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The explicit reference: attention probabilities of shape (..., T, T)."""
        scores = scaled_scores(q, k)
        if self.causal:
            T = q.size(-2)
            future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))  # pragma: no mutate (float("-INF") is -inf too)
        return F.softmax(scores, dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.fused:
            p = self.dropout.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        return self.dropout(self.weights(q, k)) @ v


class NoMask(ScoreAllPairs):
    causal = False


class CausalRows(nn.Module):
    """Only the causal pairs: row t scores keys 0..t, so the future is never computed at all."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(cfg.dropout)

    def rows(self, q: torch.Tensor, k: torch.Tensor) -> list[torch.Tensor]:
        """Row t: softmax over the t + 1 scores of query t against keys 0..t."""
        return [F.softmax(scaled_scores(q[..., t : t + 1, :], k[..., : t + 1, :]), dim=-1) for t in range(q.size(-2))]

    def weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        T = q.size(-2)
        return torch.cat([F.pad(row, (0, T - row.size(-1))) for row in self.rows(q, k)], dim=-2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs = [self.dropout(row) @ v[..., : row.size(-1), :] for row in self.rows(q, k)]
        return torch.cat(outs, dim=-2)


MASK.register("after", "score every pair, then set future scores to -inf (the lecture; fused kernel)")(ScoreAllPairs)
MASK.register("before", "compute only the causal pairs, row by row: same result, less parallel")(CausalRows)
MASK.register("none", "no mask: every token sees the future, so the loss is a lie", leaks_future=True)(NoMask)
