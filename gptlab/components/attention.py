"""Multi-head self-attention: tokens exchange information, weighted by query-key affinity.

``n_head`` heads of size n_embd / n_head run side by side (one batched matmul); their outputs are concatenated
(and, with ``projections``, mixed by one Linear).
"""

from __future__ import annotations

import torch
from torch import nn

from gptlab.components.mask import MASK
from gptlab.components.projection import PROJECTIONS
from gptlab.components.qk import QK
from gptlab.components.values import VALUES
from gptlab.config import ModelConfig


class MultiHeadAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qk = QK.build(cfg.qk, cfg.n_embd)
        self.values = VALUES.build(cfg.values, cfg.n_embd)
        self.attend = MASK.build(cfg.mask, cfg.dropout, cfg.fused)
        self.proj = PROJECTIONS.build(cfg.projections, cfg.n_embd, cfg.n_embd, cfg.bias)
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
        y = self.attend(*self.heads(x))
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.dropout(self.proj(y))
