import math

import torch

from gptlab.config import apply_overrides, preset
from gptlab.model import Bigram, build_model


def lecture_param_count(C: int, L: int, V: int, T: int, mult: int = 4) -> int:
    """Hand count: embeddings, per block (2 LN, q/k/v, proj, ffn), final LN, lm_head."""
    block = 2 * 2 * C + 3 * C * C + (C * C + C) + (C * mult * C + mult * C) + (mult * C * C + C)
    return V * C + T * C + L * block + 2 * C + (C * V + V)


def test_parameter_counts_of_known_configs():
    assert build_model(preset("bigram").model).num_params() == 65 * 65
    assert build_model(preset("lecture").model).num_params() == lecture_param_count(32, 3, 65, 8) == 42_369
    assert build_model(preset("full").model).num_params() == 10_788_929  # the lecture prints 10.788929 M


def test_loss_at_init_is_about_ln_vocab():
    torch.manual_seed(0)
    m = build_model(preset("lecture").model)
    x = torch.randint(0, 65, (16, 8))
    _, loss = m(x, torch.randint(0, 65, (16, 8)))
    assert abs(loss.item() - math.log(65)) < 0.05


def test_forward_shapes_and_no_loss_without_targets():
    m = build_model(preset("lecture").model)
    logits, loss = m(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 65) and loss is None


def test_bigram_logits_depend_only_on_current_char():
    m = Bigram(preset("bigram").model)
    x = torch.tensor([[1, 2, 3]])
    assert torch.equal(m.logits(x)[0, 2], m.table.weight[3])


def test_sampling_reads_only_the_last_block_size_tokens():
    torch.manual_seed(0)
    m = build_model(apply_overrides(preset("lecture"), {"model.block_size": 4}).model).eval()
    seen = []
    m.tok_emb.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    idx = torch.arange(10).view(1, 10)
    out = list(m.sample_tokens(idx, 3, generator=torch.Generator().manual_seed(0)))
    assert len(out) == 3 and [s.shape for s in seen] == [(1, 4)] * 3
    assert seen[0].tolist() == [[6, 7, 8, 9]]  # the last block_size tokens, not the first
    assert seen[1].tolist() == [[7, 8, 9, out[0]]] and seen[2].tolist() == [[8, 9, out[0], out[1]]]
    again = list(m.sample_tokens(idx, 3, generator=torch.Generator().manual_seed(0)))
    assert out == again


def test_attention_map_is_causal_and_normalised():
    from gptlab.data import CharTokenizer
    from gptlab.sampling import attention_map, generate_text

    tok = CharTokenizer("abcdefgh ")
    cfg = preset("lecture").model
    cfg.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    m = build_model(cfg)
    w = torch.tensor(attention_map(m, tok, "abc defgh and more", layer=1, head=2))
    assert w.shape == (8, 8)
    assert torch.allclose(w.sum(-1), torch.ones(8)) and (w.triu(1) == 0).all()
    text = generate_text(m, tok, "ab", 5, seed=3)
    assert text.startswith("ab") and len(text) == 7 and text == generate_text(m, tok, "ab", 5, seed=3)


def test_init_normal_uses_small_weights_torch_keeps_defaults():
    small = build_model(preset("lecture").model)
    default = build_model(apply_overrides(preset("lecture"), {"model.init": "torch"}).model)
    assert abs(small.tok_emb.weight.std().item() - 0.02) < 0.002
    assert abs(default.tok_emb.weight.std().item() - 1.0) < 0.05  # nn.Embedding's N(0, 1)
    assert small.lm_head.bias.abs().max() == 0 and default.lm_head.bias.abs().max() > 0
