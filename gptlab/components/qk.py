"""Queries ask ("what am I looking for?"), keys label ("what do I contain?").

With ``separate`` maps the score q_i·k_j is asymmetric; ``shared`` (q = k) forces score(i, j) = score(j, i).
Replaces ``q, k = self.query(x), self.key(x)`` in ``gptlab/gpt.py`` (``CausalSelfAttention.forward``).
"""

from __future__ import annotations

import torch
from torch import nn

from gptlab.config import ModelConfig
from gptlab.registry import ModuleBuilder, Registry

QK: Registry[ModuleBuilder] = Registry(
    "model.qk", "queries ask, keys label: separate maps let token i look for something j holds")


class SeparateQK(nn.Module):
    """Two independent linear maps: x -> (q, k)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)  # pragma: no mutate (bias=None is falsy = False)
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)  # pragma: no mutate (bias=None is falsy = False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query(x), self.key(x)


class SharedQK(nn.Module):
    """One linear map used as both query and key, so the score matrix q @ q^T is symmetric."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)  # pragma: no mutate (bias=None is falsy = False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.query(x)
        return q, q


QK.register("separate", "separate query and key maps (the lecture)")(SeparateQK)
QK.register("shared", "one map for both: scores are symmetric, i attends to j as j to i")(SharedQK)
