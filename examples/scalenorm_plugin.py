"""A plugin: README's `scalenorm` example, written outside the package. It registers one more norm variant;
`gptlab check examples/scalenorm_plugin.py` runs the registry's contract on it, and
`gptlab train --plugin examples/scalenorm_plugin.py --set model.norm=scalenorm` trains it."""

import torch
from torch import nn

from gptlab.components import NORM
from gptlab.config import ModelConfig


class ScaleNorm(nn.Module):
    """One learned scale for the whole token vector: g * x / ||x|| (Nguyen & Salazar, 2019)."""

    def __init__(self, n_embd: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(n_embd) ** 0.5))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x / x.norm(dim=-1, keepdim=True).clamp(min=self.eps)


@NORM.register("scalenorm", "one learned scale for the whole token vector")
def scalenorm(cfg: ModelConfig) -> nn.Module:
    return ScaleNorm(cfg.n_embd)
