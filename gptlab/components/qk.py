"""Queries ask ("what am I looking for?"), keys label ("what do I contain?").

With ``separate`` maps the score q_i·k_j is asymmetric; ``shared`` (q = k) forces score(i, j) = score(j, i).
"""

import torch
from torch import nn

from gptlab.registry import Registry

QK = Registry("model.qk", "queries ask, keys label: separate maps let token i look for something j holds")


class SeparateQK(nn.Module):
    """Two independent linear maps, computed as one matmul: x -> (q, k)."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_embd, 2 * n_embd, bias=False)  # pragma: no mutate (bias=None is falsy = False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k = self.proj(x).chunk(2, dim=-1)
        return q, k


class SharedQK(nn.Module):
    """One linear map used as both query and key, so the score matrix q @ q^T is symmetric."""

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_embd, n_embd, bias=False)  # pragma: no mutate (bias=None is falsy = False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.proj(x)
        return q, q


QK.register("separate", "separate query and key maps (the lecture)")(SeparateQK)
QK.register("shared", "one map for both: scores are symmetric, i attends to j as j to i")(SharedQK)
