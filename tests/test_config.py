import pytest

from gptlab.config import RunConfig, apply_overrides, lr_at, parse_set_args, preset, validate
from gptlab.errors import GptlabError


def test_presets_match_the_recipes():
    lecture = preset("lecture")
    assert (lecture.model.n_embd, lecture.model.n_head, lecture.model.n_layer, lecture.model.block_size) == (32, 4, 3, 8)
    assert (lecture.train.batch_size, lecture.train.lr, lecture.train.max_iters) == (32, 1e-3, 5000)
    full = preset("full")
    assert (full.model.n_embd, full.model.n_layer, full.model.block_size, full.model.dropout) == (384, 6, 256, 0.2)
    assert preset("bigram").model.arch == "bigram"
    cpu = preset("cpu")
    assert (cpu.train.lr_schedule, cpu.train.warmup_iters, cpu.train.beta2) == ("cosine", 100, 0.99)


def test_overrides_are_typed_from_strings():
    cfg = apply_overrides(preset("lecture"), parse_set_args(["model.n_layer=6", "train.lr=3e-4", "model.residual=false"]))
    assert cfg.model.n_layer == 6 and cfg.train.lr == 3e-4 and cfg.model.residual is False
    assert preset("lecture").model.n_layer == 3  # presets are not mutated


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model.foo": 1}, "unknown config key 'model.foo'"),
        ({"model.n_layer": "x"}, "model.n_layer = 'x' .*integer"),
        ({"model.residual": "maybe"}, "model.residual = 'maybe' .*true, false"),
        ({"train.lr": "fast"}, "train.lr = 'fast' .*number"),
    ],
)
def test_bad_overrides_name_field_value_and_allowed(override, message):
    with pytest.raises(GptlabError, match=message):
        apply_overrides(RunConfig(), override)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model.n_head": 5}, "model.n_head = 5 must divide model.n_embd = 32; allowed: 1, 2, 4, 8, 16, 32"),
        ({"model.n_layer": -1}, "model.n_layer = -1 .*> 0"),
        ({"model.mask": "later"}, "model.mask = 'later' .*after, before, none"),
        ({"model.arch": "rnn"}, "model.arch = 'rnn' .*gpt, bigram"),
        ({"model.dropout": 1.5}, r"model.dropout = 1.5 .*\[0, 1\)"),
        ({"train.device": "tpu"}, "train.device = 'tpu'"),
        ({"train.batch_size": 0}, "train.batch_size = 0"),
    ],
)
def test_validate_rejects_bad_values(override, message):
    with pytest.raises(GptlabError, match=message):
        validate(apply_overrides(RunConfig(), override))


def test_parse_set_args_needs_key_value():
    with pytest.raises(GptlabError, match="KEY=VALUE"):
        parse_set_args(["model.n_layer"])


def test_key_is_stable_and_changes_with_any_field():
    base = preset("lecture")
    assert base.key() == preset("lecture").key()
    assert RunConfig.from_dict(base.to_dict()).key() == base.key()
    seen = {base.key()}
    for path, value in (("model.n_layer", 4), ("train.seed", 1), ("data.path", "x.txt"), ("model.fused", False)):
        seen.add(apply_overrides(base, {path: value}).key())
    assert len(seen) == 5


def test_cosine_schedule_with_warmup():
    t = preset("cpu").train
    assert lr_at(t, 0) == pytest.approx(t.lr / 101)
    assert lr_at(t, 99) == pytest.approx(t.lr * 100 / 101)
    assert lr_at(t, 100) == pytest.approx(t.lr)
    assert lr_at(t, 1050) == pytest.approx((t.lr + t.min_lr) / 2)
    assert lr_at(t, 2000) == pytest.approx(t.min_lr)
    assert lr_at(preset("lecture").train, 4000) == 1e-3


def test_init_choices_are_validated():
    with pytest.raises(GptlabError, match="model.init = 'xavier' .*normal, torch"):
        validate(apply_overrides(RunConfig(), {"model.init": "xavier"}))
