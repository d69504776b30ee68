"""Looking inside a trained model: sampled text (streamed as it is generated), and one head's attention pattern."""

from __future__ import annotations

from typing import Iterator

import torch

from gptlab.data import CharTokenizer
from gptlab.errors import GptlabError
from gptlab.record import SAMPLE_PROMPT
from gptlab.model import GPT, Block, LanguageModel

MAX_SAMPLE_TOKENS = 100_000


def sample_prompt(tokenizer: CharTokenizer) -> str:
    """The prompt of a run's sample: a newline, or the corpus's first character where it has no newline."""
    return SAMPLE_PROMPT if SAMPLE_PROMPT in tokenizer.stoi else tokenizer.chars[0]


def stream_text(model: LanguageModel, tokenizer: CharTokenizer, prompt: str, tokens: int, seed: int) -> Iterator[str]:
    """``prompt``, then ``tokens`` sampled characters one at a time; the same seed gives the same text."""
    if not 1 <= tokens <= MAX_SAMPLE_TOKENS:
        raise GptlabError(f"tokens = {tokens} is not allowed; must be in 1..{MAX_SAMPLE_TOKENS:,}")
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)  # pragma: no mutate (ints are int64 already)
    yield prompt
    for token in model.sample_tokens(idx, tokens, generator=torch.Generator().manual_seed(seed)):
        yield tokenizer.decode([int(token)])


def generate_text(model: LanguageModel, tokenizer: CharTokenizer, prompt: str, tokens: int, seed: int) -> str:
    """``prompt`` followed by ``tokens`` sampled characters; the same seed gives the same text."""
    return "".join(stream_text(model, tokenizer, prompt, tokens, seed))


@torch.no_grad()
def attention_map(model: GPT, tokenizer: CharTokenizer, prompt: str, layer: int = 0, head: int = 0) -> list[list[float]]:
    """Attention probabilities (T x T, row = query) of one head on ``prompt`` (at most block_size chars)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt[: model.block_size])], dtype=torch.long, device=device)
    x = model.embed(idx)
    blocks: list[Block] = list(model.blocks)  # type: ignore[arg-type]
    for block in blocks[:layer]:
        x = block(x)
    target = blocks[layer]
    weights = target.attn.attention_weights(target.norm1(x))[0, head]
    model.train(was_training)
    return weights.float().cpu().tolist()
