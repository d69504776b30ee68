"""Every registered variant of every registry, tested the moment it is registered: nothing here names a variant.

For each (registry, choice): the model builds (on the meta device and for real), a training step gives finite
loss and gradients, shapes hold, the variant is causal unless its entry says it leaks the future (and then the
leak is seen), and `gptlab list` shows it.
"""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from gptlab.cli import app
from gptlab.components import REGISTRIES
from gptlab.config import ModelConfig
from gptlab.files import PROJECT_ROOT
from gptlab.model import GPT, check_model
from gptlab.registry import declared

V, T = 11, 8
CHOICES = [(field, entry) for field, registry in REGISTRIES.items() for entry in registry.entries()]
IDS = [f"{field}={entry.name}" for field, entry in CHOICES]


def config(field: str, name: str, **kw) -> ModelConfig:
    value: object = name if not isinstance(getattr(ModelConfig(), field), bool) else name == "true"
    base = dict(n_embd=16, n_head=4, n_layer=2, block_size=T, vocab_size=V, dropout=0.0)
    if field == "projections" and name == "false":
        base["ffn_mult"] = 1  # without projections the feed-forward layer stays n_embd wide
    return dataclasses.replace(ModelConfig(**base), **{field: value}, **kw)


@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_builds_trains_a_step_and_keeps_shapes(field, entry):
    cfg = config(field, entry.name)
    assert check_model(cfg) > 0  # on the meta device: what validation runs before a grid starts
    torch.manual_seed(0)
    model = GPT(cfg).train()
    x, y = torch.randint(0, V, (3, T)), torch.randint(0, V, (3, T))
    logits, loss = model(x, y)
    assert logits.shape == (3, T, V) and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    short = model.eval()(x[:, :3])[0]
    assert short.shape == (3, 3, V)  # a context shorter than block_size works too


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_is_causal_unless_it_says_it_leaks(field, entry, fused):
    torch.manual_seed(0)
    model = GPT(config(field, entry.name, fused=fused)).eval()
    x = torch.randint(0, V, (2, T))
    later = x.clone()
    later[:, T // 2 :] = (later[:, T // 2 :] + 1) % V
    change = (model.logits(x)[:, : T // 2] - model.logits(later)[:, : T // 2]).abs().max().item()
    if entry.leaks_future:
        assert change > 1e-4, f"{field}={entry.name} says it leaks the future, but no leak is seen"
    else:
        assert change < 1e-5, f"{field}={entry.name}: earlier positions read later tokens ({change:.2g})"


@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_is_listed(field, entry):
    out = " ".join(CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"}).output.split())
    assert f"model.{field}" in out and f" {entry.name} " in out and entry.insight in out


def test_the_listing_read_from_source_is_the_imported_registries():
    listed = {d.field: (d.insight, d.entries) for d in declared(PROJECT_ROOT / "gptlab" / "components")}
    imported = {r.field: (r.insight, [(e.name, e.insight) for e in r.entries()]) for r in REGISTRIES.values()}
    assert listed == imported and list(listed) == list(imported)
