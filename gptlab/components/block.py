"""A transformer block: communicate (attention), then compute (feed-forward), each on a normed input.

With ``residual`` each sublayer adds to an identity path x + f(x), so gradients reach deep layers intact.
"""

from __future__ import annotations

import torch
from torch import nn

from gptlab.components.attention import MultiHeadAttention
from gptlab.components.ffn import FeedForward
from gptlab.components.norm import NORM
from gptlab.config import ModelConfig
from gptlab.registry import Registry

RESIDUAL = Registry("model.residual", "identity paths x + f(x) keep gradients flowing through deep stacks")


@RESIDUAL.register("true", "x + f(x): the sublayer learns a change to x (the lecture)")
def with_skip(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return x + out


@RESIDUAL.register("false", "f(x) alone: every gradient must pass through every layer")
def without_skip(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return out


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.combine = RESIDUAL.get(cfg.residual).builder
        self.norm1 = NORM.build(cfg.norm, cfg.n_embd, cfg.bias)
        self.attn = MultiHeadAttention(cfg)
        self.ffn: FeedForward | None = None
        if cfg.ffn_mult:
            self.norm2 = NORM.build(cfg.norm, cfg.n_embd, cfg.bias)
            self.ffn = FeedForward(cfg.n_embd, cfg.ffn_mult, cfg.dropout, cfg.bias, cfg.projections)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.combine(x, self.attn(self.norm1(x)))
        if self.ffn is not None:
            x = self.combine(x, self.ffn(self.norm2(x)))
        return x
