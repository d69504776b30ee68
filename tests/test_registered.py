"""Every registered variant of every registry, tested the moment it is registered: nothing here names a variant.

For each (registry, choice): the model builds (on the meta device and for real), a training step gives finite
loss and gradients, and it has the properties of any language model (gptlab/properties.py, the same functions
`gptlab check` runs on a learner's file): shapes, causal unless its entry says it leaks the future (and then the
leak is seen), batch-independent unless it says it mixes the batch (and then the mixing is seen),
eval-deterministic, gradients for every parameter; and `gptlab list` shows it.
"""

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from gptlab import properties
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


def subject(field: str, name: str, **kw) -> properties.Subject:
    cfg = config(field, name, **kw)
    return properties.Subject(lambda p: GPT(dataclasses.replace(cfg, dropout=p)), V, T)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_is_causal_unless_it_says_it_leaks(field, entry, fused):
    outcome = properties.causal(subject(field, entry.name, fused=fused))
    if entry.leaks_future:
        assert not outcome.passed, f"{field}={entry.name} says it leaks the future, but no leak is seen"
    else:
        assert outcome.passed, f"{field}={entry.name}: {outcome.evidence}"


@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_keeps_sequences_apart_unless_it_says_it_mixes_the_batch(field, entry):
    outcome = properties.batch_independent(subject(field, entry.name))
    if entry.mixes_batch:
        assert not outcome.passed, f"{field}={entry.name} says it mixes the batch, but no mixing is seen"
    else:
        assert outcome.passed, f"{field}={entry.name}: {outcome.evidence}"


PROPERTIES = [properties.shapes, properties.init_loss, properties.positions, properties.eval_deterministic,
              properties.gradients]


@pytest.mark.parametrize("check", PROPERTIES, ids=[p.__name__ for p in PROPERTIES])
@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_has_the_properties_of_a_language_model(field, entry, check):
    outcome = check(subject(field, entry.name))
    assert outcome.passed, f"{field}={entry.name}: {check.__name__}: {outcome.evidence}"


@pytest.mark.parametrize("field, entry", CHOICES, ids=IDS)
def test_each_variant_is_listed(field, entry):
    out = " ".join(CliRunner().invoke(app, ["list"], env={"COLUMNS": "200"}).output.split())
    assert f"model.{field}" in out and f" {entry.name} " in out and entry.insight in out


def test_the_listing_read_from_source_is_the_imported_registries():
    listed = {d.field: (d.insight, d.entries) for d in declared(PROJECT_ROOT / "gptlab" / "components")}
    imported = {r.field: (r.insight, [(e.name, e.insight) for e in r.entries()]) for r in REGISTRIES.values()}
    assert listed == imported and list(listed) == list(imported)
