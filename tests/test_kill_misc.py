"""Exact messages and boundaries of the smaller pieces under a run: a config section that is no mapping, the
largest integer a field takes, unknown keys and what they suggest, a record's file layout and its history rows,
each way a checkpoint can be wrong, and a model whose forward pass fails."""

import dataclasses
import json

import pytest
import torch

import gptlab.checkpoint
import gptlab.model
from gptlab import checkpoint
from gptlab.config import ModelConfig, RunConfig, apply_overrides, preset
from gptlab.errors import GptlabError
from gptlab.flops import param_estimate
from gptlab.model import check_model
from gptlab.record import RecordError, RunRecord, load_record, save_record


def error_of(fn, *args):
    with pytest.raises(GptlabError) as exc:
        fn(*args)
    return str(exc.value)


# -- config ----------------------------------------------------------------------------------------------------


def test_a_config_section_that_is_no_mapping_is_named():
    assert error_of(RunConfig.from_dict, {"model": 3}) == "config.model = 3: must be a mapping of field -> value"


def test_integers_up_to_2_63_minus_1():
    assert apply_overrides(preset("lecture"), {"train.seed": 2**63 - 1}).train.seed == 2**63 - 1
    for seed in (2**63, -(2**63)):
        assert error_of(apply_overrides, preset("lecture"), {"train.seed": seed}) == (
            f"train.seed = {seed} is not allowed; expected an integer (at most 2**63 - 1)")


@pytest.mark.parametrize("key, hint", [
    ("model.0123456789012345678", "; model keys: model.arch, model.block_size, model.n_layer, model.n_head, "
     "model.n_embd, model.ffn_mult, model.dropout, model.bias, model.values, model.qk, model.mask, model.norm, "
     "model.residual, model.projections, model.fused, model.init, model.vocab_size"),
    ("data.0123456789012345678", "; data keys: data.path, data.train_fraction"),
    ("nodot", "; keys start with model., train. or data."),
    ("zzzz.0123456789012345678", "; keys start with model., train. or data."),
])
def test_an_unknown_key_lists_its_sections_keys(key, hint):
    assert error_of(apply_overrides, preset("lecture"), {key: 1}) == f"unknown config key {key!r}{hint}"


# -- records -------------------------------------------------------------------------------------------------


def record(**changes):
    cfg = RunConfig()
    fields = dict(key=cfg.key(), grid="g", variant="v", seed=1, config=cfg.to_dict(), status="done",
                  final_val_loss=2.0, best_val_loss=1.9, final_train_loss=1.8, diverged_at=None,
                  history=[{"step": 0, "val_loss": 4.2}], params=10, tokens_per_sec=5.0, wall_time=1.0,
                  device="cpu", torch_version="2", gptlab_version="0", git_commit="x", sample="",
                  created="2024-01-01T00:00:00")
    return RunRecord(**{**fields, **changes})


def test_a_record_file_has_one_field_a_line_indented_by_one(tmp_path):
    lines = save_record(tmp_path, record()).read_text().splitlines()
    assert lines[0] == "{" and lines[1] == f' "key": "{RunConfig().key()}",'  # the committed records' layout


@pytest.mark.parametrize("history, ok", [
    ([{"step": 0, "val_loss": 4.2, "lr": None}], True),
    ([[0, 4.2]], False),  # a row that is no mapping
    ([{"step": 0, "val_loss": "4.2"}], False),  # a value that is no number
    ([{"step": 0.5, "val_loss": 4.2}], False),  # a step that is no integer
    ([{"val_loss": 4.2}], False),  # no step
])
def test_each_history_row_is_a_step_and_numbers(tmp_path, history, ok):
    path = save_record(tmp_path, record(history=history))
    if ok:
        assert load_record(path).history == history
    else:
        with pytest.raises(RecordError) as exc:
            load_record(path)
        assert str(exc.value).startswith("a history row ") and str(exc.value).endswith(
            " is not a mapping of step and losses to numbers")


def test_a_broken_or_rekeyed_record_says_what_to_do(tmp_path):
    path = tmp_path / f"{RunConfig().key()}.json"
    path.write_text('{"schema": 1, "key"')
    with pytest.raises(RecordError) as exc:
        load_record(path)
    assert str(exc.value) == "not valid JSON (half-written or corrupt)"
    raw = dataclasses.asdict(record(key="0123456789ab"))
    (tmp_path / "0123456789ab.json").write_text(json.dumps(raw))
    with pytest.raises(RecordError) as exc:
        load_record(tmp_path / "0123456789ab.json")
    assert str(exc.value) == (f"its key '0123456789ab' is not its config's {RunConfig().key()!r} (a record of "
                              "gptlab 0.1? `python -m gptlab.devtools.rekey FOLDER` renames those)")


# -- checkpoints -------------------------------------------------------------------------------------------


VOCAB = "".join(chr(32 + i) for i in range(65))


@pytest.mark.parametrize("payload, message", [
    ({"format": checkpoint.FORMAT}, "it has no 'config' (a gptlab checkpoint holds config, vocab and model)"),
    ({"format": checkpoint.FORMAT, "config": {}},
     "it has no 'vocab' (a gptlab checkpoint holds config, vocab and model)"),
    ({"format": checkpoint.FORMAT, "config": {}, "vocab": VOCAB},
     "it has no 'model' (a gptlab checkpoint holds config, vocab and model)"),
    ({"format": checkpoint.FORMAT, "config": {"model": 5}, "vocab": "ab", "model": {}},
     "config.model = 5: must be a mapping of field -> value"),
    ({"format": checkpoint.FORMAT, "config": {"model": {"vocab_size": 3}}, "vocab": "ab", "model": {}},
     "its vocabulary (2) does not match model.vocab_size = 3"),
    ({"format": checkpoint.FORMAT, "config": {}, "vocab": ["a"], "model": {}},
     "its vocabulary (list) does not match model.vocab_size = 65"),
    ({"format": checkpoint.FORMAT, "config": {}, "vocab": "a" * 65, "model": {}},
     "its vocabulary repeats characters (1 distinct of 65)"),
])
def test_each_wrong_checkpoint_has_its_exact_message(tmp_path, payload, message):
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    assert error_of(checkpoint.load, path) == f"checkpoint '{path}': {message}"


def test_a_checkpoint_folder_is_not_a_file(tmp_path):
    assert error_of(checkpoint.load, tmp_path) == f"checkpoint '{tmp_path}': a folder, not a file"


def test_a_checkpoint_too_big_for_the_machine_is_refused_before_it_is_built(tmp_path, monkeypatch):
    cfg = preset("bigram")
    path = tmp_path / "ckpt.pt"
    from gptlab.data import CharTokenizer
    from gptlab.model import build_model

    checkpoint.save(path, build_model(cfg.model), cfg, CharTokenizer(VOCAB))
    weights = 4 * param_estimate(cfg.model)
    monkeypatch.setattr(gptlab.checkpoint, "available_bytes", lambda device: weights)
    assert checkpoint.load(path)[1] == cfg  # exactly enough memory is enough
    monkeypatch.setattr(gptlab.checkpoint, "available_bytes", lambda device: weights - 1)
    big = apply_overrides(cfg, {})
    monkeypatch.setattr(gptlab.checkpoint, "param_estimate", lambda model_cfg: 2**40)
    assert error_of(checkpoint.load, path) == (
        f"checkpoint '{path}': its model needs about 4,096 GiB for its weights (model.n_embd = {big.model.n_embd}, "
        f"model.n_layer = {big.model.n_layer}); this machine has 0 GiB available")
    monkeypatch.setattr(gptlab.checkpoint, "available_bytes", lambda device: 3 * 2**40)
    assert error_of(checkpoint.load, path).endswith("this machine has 3,072 GiB available")


# -- a model whose forward pass fails ---------------------------------------------------------------------------


def test_a_failing_forward_pass_is_one_line_naming_the_components(monkeypatch):
    def broken(self, idx):
        raise RuntimeError("shapes do not match\\nsecond line")

    monkeypatch.setattr(gptlab.model.GPT, "logits", broken)
    cfg = ModelConfig(mask="before", norm="rmsnorm")
    assert error_of(check_model, cfg) == (
        "model (values=projected, qk=separate, mask=before, norm=rmsnorm, residual=true, projections=true): the "
        "forward pass fails: RuntimeError: shapes do not match\\nsecond line")


# -- registries ----------------------------------------------------------------------------------------------


def test_a_registry_keeps_whether_an_entry_leaks_and_names_the_contract_it_breaks():
    from gptlab.registry import Registry

    registry = Registry("model.proj", "projections")

    @registry.register("peek", "reads ahead", leaks_future=True)
    def peek(cfg):
        return "p"

    @registry.register("positional", "takes n_embd")
    def positional(n_embd):
        return "never"

    assert registry.get("peek").leaks_future and not registry.get("positional").leaks_future
    with pytest.raises(GptlabError) as exc:
        registry.build("positional", ModelConfig(), n_in=3)
    assert str(exc.value).endswith("(a builder takes cfg, n_in: see gptlab/registry.py)")


def test_declarations_read_from_source_are_in_the_order_they_are_written():
    import ast

    from gptlab.registry import Declared, _declared_in

    source = ('R = Registry("model.x", "x matters", EXTRA)\n'  # a name among the literals: not one of them
              'x = R.register("a", "first")(A)\n'  # a call three levels down, at column 4
              '@R.register("b", "second")\n'  # a decorator: two levels down, at column 1
              'class B: ...\n'
              'OTHER.register("z", "no registry of this file")(Z)\n'
              'a.b.register("y", "nor this")(Y)\n')
    assert _declared_in(ast.parse(source)) == {"R": Declared("model.x", "x matters", [("a", "first"), ("b", "second")])}
