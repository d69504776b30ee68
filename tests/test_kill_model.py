"""Exact values of the model's wiring and sampling: embeddings add, positions follow the input's device,
the bigram samples too, and generated text starts on the model's device."""

import torch
from torch import nn

from gptlab.config import ModelConfig, preset
from gptlab.data import CharTokenizer
from gptlab.model import GPT, Bigram, LanguageModel
from gptlab.sampling import generate_text


def test_embedding_is_token_plus_position():
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=11)).eval()
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    expected = m.tok_emb.weight[idx] + m.pos_emb.weight[:5]
    assert torch.equal(m.embed(idx), expected)


def test_positions_are_made_on_the_input_device():
    m = GPT(ModelConfig(vocab_size=11)).to("meta")
    seen = []
    m.pos_emb.register_forward_pre_hook(lambda module, args: seen.append(args[0].device.type))
    m.embed(torch.zeros(1, 4, dtype=torch.long, device="meta"))
    assert seen == ["meta"]


def test_bigram_generates_from_a_context_longer_than_its_block():
    m = Bigram(preset("bigram").model)
    idx = torch.zeros(1, 20, dtype=torch.long)
    out = list(m.sample_tokens(idx, 5, generator=torch.Generator().manual_seed(0)))
    assert len(out) == 5 and all(0 <= t < 65 for t in out)


class _Recorder(LanguageModel):
    """A model stub on the meta device that records the prompt it is given and answers with zeros."""

    block_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, device="meta"))
        self.prompts: list[torch.Tensor] = []

    def sample_tokens(self, idx, count, generator=None, temperature=1.0):
        self.prompts.append(idx)
        yield from [0] * count


def test_generate_text_puts_the_prompt_on_the_model_device():
    model = _Recorder()
    text = generate_text(model, CharTokenizer("ab"), "ba", 3, seed=0)
    (prompt,) = model.prompts
    assert prompt.device.type == "meta" and prompt.dtype == torch.long and prompt.shape == (1, 2)
    assert text == "baaaa"
