"""Normalisation keeps activations well scaled so deep stacks train.

LayerNorm normalises each token over its features; BatchNorm each feature over the batch and time
(in training its statistics mix tokens, future ones included); RMSNorm rescales without centring.
Replaces ``nn.LayerNorm(n_embd)`` in ``gptlab/gpt.py`` (``Block.__init__`` and ``GPT.__init__``).
"""

from __future__ import annotations

import torch
from torch import nn

from gptlab.config import ModelConfig
from gptlab.registry import ModuleBuilder, Registry

NORM: Registry[ModuleBuilder] = Registry("model.norm", "normalise activations so that deep stacks stay well scaled")


class BatchNormOverTokens(nn.Module):
    """BatchNorm1d over (batch, time) for each feature of a (B, T, C) tensor."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: scale each token to unit root-mean-square, no centring."""

    def __init__(self, n_embd: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


@NORM.register("layernorm", "each token normalised over its features (the lecture)")
def layernorm(cfg: ModelConfig) -> nn.Module:
    return nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


@NORM.register("batchnorm", "each feature normalised over batch and time; stats mix tokens", mixes_batch=True)
def batchnorm(cfg: ModelConfig) -> nn.Module:
    return BatchNormOverTokens(cfg.n_embd)


@NORM.register("rmsnorm", "rescale each token to unit RMS without subtracting the mean")
def rmsnorm(cfg: ModelConfig) -> nn.Module:
    return RMSNorm(cfg.n_embd)


@NORM.register("none", "no normalisation")
def no_norm(cfg: ModelConfig) -> nn.Module:
    return nn.Identity()
