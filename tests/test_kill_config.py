"""Exact messages and boundaries of config validation, typed overrides, the run key, the lr schedule and the
registries: each case pins one rule a user relies on."""

import json

import pytest

from gptlab.components import NORM, REGISTRIES
from gptlab.config import ModelConfig, RunConfig, apply_overrides, lr_at, parse_set_args, preset, validate
from gptlab.errors import GptlabError
from gptlab.registry import Entry, Registry


def error_of(fn, *args) -> str:
    with pytest.raises(GptlabError) as exc:
        fn(*args)
    return str(exc.value)


def test_unknown_preset_lists_the_presets():
    assert error_of(preset, "huge") == "preset = 'huge' is not allowed; choose one of: bigram, lecture, cpu, full"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"model.ffn_mult": -1}, "model.ffn_mult = -1 is not allowed; must be >= 0 (0 = no feed-forward)"),
        ({"model.projections": False, "model.ffn_mult": 2},
         "model.ffn_mult = 2 is not allowed with model.projections = false; allowed: 0, 1 "
         "(without its output projection the feed-forward layer must stay n_embd wide)"),
        ({"model.dropout": 1.0}, "model.dropout = 1.0 is not allowed; must be in [0, 1)"),
        ({"train.weight_decay": 1.5}, "train.weight_decay = 1.5 is not allowed; must be in [0, 1)"),
        ({"train.warmup_iters": -1}, "train.warmup_iters = -1 is not allowed; must be >= 0"),
        ({"train.threads": -2}, "train.threads = -2 is not allowed; must be >= 0"),
        ({"train.grad_clip": -0.5}, "train.grad_clip = -0.5 is not allowed; must be >= 0"),
        ({"train.beta1": 1.0}, "train.beta1 = 1.0 is not allowed; must be in [0, 1)"),
        ({"train.beta2": 1.5}, "train.beta2 = 1.5 is not allowed; must be in [0, 1)"),
        ({"train.lr_schedule": "linear"},
         "train.lr_schedule = 'linear' is not allowed; choose one of: constant, cosine"),
        ({"data.train_fraction": 0.0}, "data.train_fraction = 0.0 is not allowed; must be in (0, 1)"),
        ({"data.train_fraction": 1.0}, "data.train_fraction = 1.0 is not allowed; must be in (0, 1)"),
        ({"data.train_fraction": 1.5}, "data.train_fraction = 1.5 is not allowed; must be in (0, 1)"),
        ({"model.arch": "gtp"}, "model.arch = 'gtp' is not allowed (did you mean 'gpt'?); choose one of: gpt, "
                                "bigram, or a file of your own model, PATH.py or PATH.py:CLASS"),
    ],
)
def test_validate_messages_are_exact(override, message):
    assert error_of(validate, apply_overrides(RunConfig(), override)) == message


def test_a_learner_file_that_is_not_there_is_named_with_where_paths_are_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert error_of(validate, apply_overrides(RunConfig(), {"model.arch": "nowhere.py:Mine"})) == (
        "model.arch = 'nowhere.py:Mine': no such file (a path is relative to the grid file's folder, else to the "
        f"working folder: {tmp_path})")


def test_validate_accepts_the_closed_ends_of_each_range():
    edges = {"model.ffn_mult": 0, "model.dropout": 0.0, "train.weight_decay": 0.0, "train.beta1": 0.0,
             "train.warmup_iters": 0, "train.threads": 0, "train.min_lr": 0.0, "data.train_fraction": 0.5}
    validate(apply_overrides(RunConfig(), edges))
    validate(apply_overrides(RunConfig(), {"model.projections": False, "model.ffn_mult": 1}))


def test_values_are_coerced_to_the_field_type():
    cfg = apply_overrides(RunConfig(), {"model.n_layer": 4.0, "model.n_head": "2.0", "data.path": 123,
                                        "model.norm": False})
    assert cfg.model.n_layer == 4 and type(cfg.model.n_layer) is int and cfg.model.n_head == 2
    assert cfg.data.path == "123" and cfg.model.norm == "false"  # YAML scalars become names
    assert error_of(apply_overrides, RunConfig(), {"model.qk": ["a"]}) == (
        "model.qk = ['a'] is not allowed; expected a name")


@pytest.mark.parametrize("path, hint", [
    ("optimizer.lr", "keys start with model., train. or data."), ("key.x", "keys start with model., train. or data."),
    ("to_dict.x", "keys start with model., train. or data."), ("model", "model keys: model.arch, model.block_size, "),
    ("model.n_layers", "(did you mean 'model.n_layer'?)"), ("train.lr_scedule", "(did you mean 'train.lr_schedule'?)"),
])
def test_unknown_sections_and_keys_are_user_errors(path, hint):
    message = error_of(apply_overrides, RunConfig(), {path: 1})
    assert message.startswith(f"unknown config key {path!r}") and hint in message


def test_overrides_never_touch_the_config_they_copy():
    base = RunConfig()
    apply_overrides(base, {"model.n_layer": 6, "train.lr": 0.5})
    assert base.model.n_layer == 3 and base.train.lr == 1e-3


def test_set_value_may_contain_an_equals_sign():
    assert parse_set_args(["data.path = a=b.txt"]) == {"data.path": "a=b.txt"}


def test_key_is_twelve_hex_digits_independent_of_field_order(monkeypatch):
    cfg = preset("cpu")
    key = cfg.key()
    assert len(key) == 12 and int(key, 16) >= 0
    changed = cfg.changed()
    reversed_order = dict(reversed(list(changed.items())))
    assert json.dumps(reversed_order) != json.dumps(changed)
    monkeypatch.setattr(RunConfig, "changed", lambda self: reversed_order)
    assert cfg.key() == key  # a hash of the content, not of the order the fields are declared in


def test_cosine_schedule_ends_at_min_lr_and_stays_there():
    t = apply_overrides(preset("cpu"), {"train.warmup_iters": 0, "train.max_iters": 1}).train
    assert lr_at(t, 0) == t.lr and lr_at(t, 1) == pytest.approx(t.min_lr)  # one decay step: straight to min_lr
    t = preset("cpu").train
    assert lr_at(t, 2 * t.max_iters) == pytest.approx(t.min_lr)  # past the end: no cosine rebound
    t = apply_overrides(preset("cpu"), {"train.max_iters": 100}).train  # all warmup, nothing to decay
    assert lr_at(t, 100) == pytest.approx(t.lr)


def test_registry_records_entries_and_refuses_duplicates():
    registry = Registry("model.colour", "colours matter")

    def red() -> str:
        return "red"

    assert registry.register("red", "warm")(red) is red
    assert (registry.field, registry.insight) == ("model.colour", "colours matter")
    assert registry.entries() == [Entry("red", red, "warm")] and registry.get("red").builder is red
    with pytest.raises(ValueError, match=r"^model.colour: 'red' is registered twice$"):
        registry.register("red", "again")(red)
    assert registry.entries() == [Entry("red", red, "warm")]
    assert all(e.insight for r in REGISTRIES.values() for e in r.entries())
    registry.register("blue", "cold", leaks_future=True, mixes_batch=True)(red)
    assert registry.get("blue") == Entry("blue", red, "cold", leaks_future=True, mixes_batch=True)


def test_registry_build_passes_keyword_arguments():
    assert NORM.build("layernorm", ModelConfig(n_embd=16, bias=False)).bias is None
    assert NORM.build("layernorm", ModelConfig(n_embd=16)).bias is not None


def test_a_builder_that_breaks_the_contract_is_one_line_naming_the_variant():
    registry = Registry("model.norm", "norms")

    @registry.register("positional", "takes n_embd, not cfg")
    def positional(n_embd: int, bias: bool = True) -> str:
        return "never"

    @registry.register("broken", "raises inside")
    def broken(cfg: ModelConfig) -> str:
        raise ValueError("no width\nsecond line")

    with pytest.raises(GptlabError) as exc:
        registry.build("positional", ModelConfig())
    assert str(exc.value).startswith("model.norm = 'positional': its builder failed: TypeError: ")
    assert str(exc.value).endswith("positional() got an unexpected keyword argument 'cfg' (a builder takes cfg: "
                                   "see gptlab/registry.py)")
    with pytest.raises(GptlabError, match=r"^model.norm = 'broken': its builder failed: ValueError: no width$"):
        registry.build("broken", ModelConfig())
