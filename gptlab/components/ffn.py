"""The feed-forward layer: after tokens talk (attention), each token thinks on its own.

A per-token MLP, ``ffn_mult`` times wider inside (4 in the paper and the lecture); 0 removes it.
"""

import torch
from torch import nn

from gptlab.components.projection import PROJECTIONS


class FeedForward(nn.Module):
    def __init__(
        self, n_embd: int, mult: int, dropout: float = 0.0, bias: bool = True, projection: bool = True
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, mult * n_embd, bias=bias),
            nn.ReLU(),
            PROJECTIONS.build(projection, mult * n_embd, n_embd, bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
