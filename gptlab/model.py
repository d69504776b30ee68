"""The models: the bigram baseline and the GPT (embeddings -> blocks -> norm -> logits).

Everything a variant changes lives in ``gptlab.components``; this file only wires the pieces together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.components.block import Block
from gptlab.components.norm import NORM
from gptlab.config import ModelConfig


class LanguageModel(nn.Module):
    """Shared by both models: the loss and autoregressive sampling."""

    block_size: int

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.logits(idx)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T), reading at most ``block_size`` back."""
        for _ in range(max_new_tokens):
            logits = self.logits(idx[:, -self.block_size :])[:, -1, :] / temperature
            probs = F.softmax(logits.float(), dim=-1)
            nxt = torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(idx.device)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


class Bigram(LanguageModel):
    """The next character from the current one alone: a table of V x V logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.block_size = cfg.block_size
        self.table = nn.Embedding(cfg.vocab_size, cfg.vocab_size)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


class GPT(LanguageModel):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.block_size = cfg.block_size
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.norm_f = NORM.build(cfg.norm, cfg.n_embd, cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.bias)
        if cfg.init == "normal":
            self.apply(_init_weights)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token identity + position: without the position embedding attention is order-blind."""
        pos = torch.arange(idx.size(1), device=idx.device)
        return self.drop(self.tok_emb(idx) + self.pos_emb(pos))

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm_f(self.blocks(self.embed(idx))))


def _init_weights(module: nn.Module) -> None:
    """``init: normal``: weights N(0, 0.02), zero biases (the lecture's final gpt.py, nanoGPT): loss at init ~ ln(V).

    ``init: torch`` keeps PyTorch's defaults (embeddings N(0, 1)), as in the lecture's intermediate steps; stacks
    without residuals or norms train far better with it, since 0.02-sized activations shrink layer after layer.
    """
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)  # pragma: no mutate (mean=0.0 is the default)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build_model(cfg: ModelConfig) -> LanguageModel:
    return Bigram(cfg) if cfg.arch == "bigram" else GPT(cfg)
