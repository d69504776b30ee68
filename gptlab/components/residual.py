"""Residual connections: each sublayer adds to an identity path, x + f(x), so gradients reach deep layers intact.

Without it every gradient must pass through every layer's weights on its way down.
Replaces ``x = x + ...`` in ``gptlab/gpt.py`` (``Block.forward``).
"""

from __future__ import annotations

import torch
from torch import nn

from gptlab.config import ModelConfig
from gptlab.registry import ModuleBuilder, Registry

RESIDUAL: Registry[ModuleBuilder] = Registry(
    "model.residual", "identity paths x + f(x) keep gradients flowing through deep stacks")


class Skip(nn.Module):
    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return x + out


class NoSkip(nn.Module):
    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out


@RESIDUAL.register("true", "x + f(x): the sublayer learns a change to x (the lecture)")
def with_skip(cfg: ModelConfig) -> nn.Module:
    return Skip()


@RESIDUAL.register("false", "f(x) alone: every gradient must pass through every layer")
def without_skip(cfg: ModelConfig) -> nn.Module:
    return NoSkip()
