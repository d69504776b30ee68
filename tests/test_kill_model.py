"""Exact values of the model's wiring and sampling: embeddings add, positions follow the input's device,
the bigram samples too, and generated text starts on the model's device."""

from pathlib import Path

import pytest
import torch
from torch import nn

from gptlab.config import ModelConfig, preset
from gptlab.data import CharTokenizer
from gptlab.errors import GptlabError
from gptlab.model import GPT, Bigram, LanguageModel, LearnerModel, check_learner_model
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


# -- a learner's own model (model.arch = PATH.py) as the harness trains it ---------------------------------------

EXAMPLE = Path(__file__).parent.parent / "examples" / "my_gpt.py"
TINY = """
import torch
import torch.nn as nn
from torch.nn import functional as F

vocab_size = 65


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.emb(FUTURE)
        if targets is None or NO_LOSS:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, vocab_size), targets.view(-1))
"""


def learner(arch) -> ModelConfig:
    cfg = preset("lecture").model
    cfg.arch = str(arch)
    return cfg


def tiny_file(tmp_path, future="idx", no_loss="False", forward_raises=False):
    path = tmp_path / "tiny.py"
    text = TINY.replace("FUTURE", future).replace("NO_LOSS", no_loss)
    if forward_raises:
        text = text.replace("        logits = self.emb", "        raise ValueError('boom')\n        logits = self.emb")
    path.write_text(text)
    return str(path)


def test_a_learner_model_gives_b_t_v_logits_and_its_files_device_follows_the_input():
    model = LearnerModel(learner(EXAMPLE)).eval()
    assert model.block_size == 8
    model.file_globals["device"] = "elsewhere"
    idx, targets = torch.randint(65, (8, 2)).T, torch.randint(65, (8, 2)).T  # not contiguous, as batch views are not
    logits, loss = model(idx, targets)
    assert model.file_globals["device"] == idx.device
    assert logits.shape == (2, 8, 65) and loss is not None and loss.shape == ()
    assert torch.equal(model.logits(idx), logits)


def test_a_learner_file_without_a_device_gets_none_and_a_forward_without_loss_is_named(tmp_path):
    model = LearnerModel(learner(tiny_file(tmp_path)))
    model(torch.zeros(1, 8, dtype=torch.long))
    assert "device" not in model.file_globals
    silent = LearnerModel(learner(tiny_file(tmp_path, no_loss="True")))
    idx = torch.zeros(1, 8, dtype=torch.long)
    assert silent(idx)[1] is None
    with pytest.raises(GptlabError) as exc:
        silent(idx, idx)
    assert str(exc.value) == "model.arch: Tiny.forward(idx, targets) returned no loss"


def test_a_learner_model_is_checked_for_causality_before_it_trains(tmp_path):
    assert check_learner_model(learner(EXAMPLE)) == LearnerModel(learner(EXAMPLE)).num_params() > 0
    path = tiny_file(tmp_path, future="idx.flip(1)")
    with pytest.raises(GptlabError) as exc:
        check_learner_model(learner(path))
    assert str(exc.value).startswith(f"model.arch = {path!r} reads the future (changing token ")
    assert str(exc.value).endswith(f"); run `gptlab check {path}` for what to fix")
    broken = tiny_file(tmp_path, forward_raises=True)
    with pytest.raises(GptlabError) as exc:
        check_learner_model(learner(broken))
    assert str(exc.value) == f"model.arch = {broken!r}: the forward pass fails: ValueError: boom"
