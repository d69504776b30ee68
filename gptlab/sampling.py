"""Looking inside a trained model: sampled text, and one head's attention pattern on a prompt."""

from __future__ import annotations

import torch

from gptlab.data import CharTokenizer
from gptlab.model import GPT, LanguageModel


def generate_text(model: LanguageModel, tokenizer: CharTokenizer, prompt: str, tokens: int, seed: int) -> str:
    """``prompt`` followed by ``tokens`` sampled characters; the same seed gives the same text."""
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    out = model.generate(idx, tokens, generator=torch.Generator().manual_seed(seed))
    return tokenizer.decode(out[0].tolist())


@torch.no_grad()
def attention_map(model: GPT, tokenizer: CharTokenizer, prompt: str, layer: int = 0, head: int = 0) -> list[list[float]]:
    """Attention probabilities (T x T, row = query) of one head on ``prompt`` (at most block_size chars)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt[: model.block_size])], dtype=torch.long, device=device)
    x = model.embed(idx)
    for block in model.blocks[:layer]:
        x = block(x)
    target = model.blocks[layer]
    weights = target.attn.attention_weights(target.norm1(x))[0, head]
    model.train(was_training)
    return weights.float().cpu().tolist()
