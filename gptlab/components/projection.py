"""Output projections: each sublayer ends in a linear map back into the residual stream.

The lecture adds them together with the residuals: one Linear mixes the concatenated heads, and the
feed-forward layer's wide hidden layer is projected back to n_embd. Without them a sublayer's output is
its last activation: the heads side by side, or the ReLU (so the feed-forward layer must stay n_embd wide).
Replaces ``self.proj`` in ``gptlab/gpt.py`` (``CausalSelfAttention`` and ``FeedForward``).
"""

from __future__ import annotations

from torch import nn

from gptlab.config import ModelConfig
from gptlab.registry import ProjectionBuilder, Registry

PROJECTIONS: Registry[ProjectionBuilder] = Registry(
    "model.projections", "a linear map ends each sublayer, writing back into the residual stream")


@PROJECTIONS.register("true", "Linear(n_in, n_embd) after the heads and after the feed-forward hidden layer (the lecture)")
def linear_projection(cfg: ModelConfig, n_in: int) -> nn.Module:
    return nn.Linear(n_in, cfg.n_embd, bias=cfg.bias)


@PROJECTIONS.register("false", "the sublayer's last activation is its output (the lecture's steps before residuals)")
def no_projection(cfg: ModelConfig, n_in: int) -> nn.Module:
    if n_in != cfg.n_embd:
        raise ValueError(f"without a projection the output keeps its width: {n_in} != {cfg.n_embd}")
    return nn.Identity()
