"""Run records and checkpoints on disk: atomic writes that leave no temp file, hidden ``.tmp`` names, exact
errors for files that are not what they claim, and no pickled code run on load."""

import dataclasses
import json
import os

import pytest
import torch

from gptlab import __version__, checkpoint
from gptlab.config import RunConfig, preset
from gptlab.data import CharTokenizer
from gptlab.errors import GptlabError
from gptlab.files import write_atomic
from gptlab.model import build_model
from gptlab.record import SCHEMA, RecordError, RunRecord, load_record, save_record

KEY = RunConfig().key()


def record(**kw) -> RunRecord:
    fields = dict(key=KEY, grid="g", variant="v", seed=1, config=RunConfig().to_dict(), status="done",
                  final_val_loss=2.0, best_val_loss=1.9, final_train_loss=1.8, diverged_at=None,
                  history=[{"step": 0, "val_loss": 4.2}], params=10, tokens_per_sec=5.0, wall_time=1.0,
                  device="cpu", torch_version="2", gptlab_version="0", git_commit="x", sample="hi",
                  created="2024-01-01T00:00:00", extra={"attention": [[1.0]]})
    fields.update(kw)
    return RunRecord(**fields)


def test_record_round_trip_in_a_new_folder(tmp_path):
    folder = tmp_path / "grid" / "runs"
    path = save_record(folder, record())
    assert path == folder / f"{KEY}.json"
    assert load_record(path) == record()
    assert os.listdir(folder) == [f"{KEY}.json"]  # no temp file left behind
    text = path.read_text()
    assert json.loads(text)["schema"] == SCHEMA and text.count("\n") > 20  # one field per line, for diffs
    save_record(folder, record(seed=2))  # overwrite in place
    assert load_record(path).seed == 2


def test_write_atomic_uses_a_hidden_tmp_file_beside_the_target(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((src, dst, open(src).read()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(target, "text")
    ((src, dst, content),) = seen
    name = os.path.basename(src)
    assert os.path.dirname(src) == str(tmp_path) and name.startswith(".r.json.") and name.endswith(".tmp")
    assert dst == target and content == "text" and target.read_text() == "text"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new")
    assert os.listdir(tmp_path) == ["r.json"] and target.read_text() == "old"


def test_an_interrupt_just_after_the_rename_propagates_as_itself(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        raise KeyboardInterrupt  # e.g. Ctrl-C between the rename and the end of the try block

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):  # cleaning up the already-renamed temp file must not fail
        write_atomic(tmp_path / "r.json", "new")
    assert (tmp_path / "r.json").read_text() == "new"


def test_load_record_rejects_other_files_with_their_reason(tmp_path):
    path = tmp_path / f"{KEY}.json"
    for raw, schema in (([1, 2], None), ({"schema": SCHEMA + 1}, SCHEMA + 1)):
        path.write_text(json.dumps(raw))
        with pytest.raises(RecordError) as exc:
            load_record(path)
        assert str(exc.value) == f"not a gptlab run record of schema {SCHEMA} (schema {schema})"
    raw = dataclasses.asdict(record())
    del raw["seed"], raw["grid"], raw["extra"]
    path.write_text(json.dumps(raw))
    with pytest.raises(RecordError) as exc:
        load_record(path)
    assert str(exc.value) == "lacks grid, seed"


@pytest.mark.parametrize("change, message", [
    ({"final_val_loss": "abc"}, "field final_val_loss = 'abc' is not a int/float"),
    ({"history": 5}, "field history = 5 is not a list"),
    ({"history": [{"step": "x"}]}, "a history row {'step': 'x'} is not a mapping of step and losses to numbers"),
    ({"seed": True}, "field seed = True is not a int"),
    ({"status": "maybe"}, "field status = 'maybe' is not one of done, diverged"),
    ({"final_val_loss": None}, "a finished run without a finite final_val_loss"),
    ({"config": {"model": 5}}, "its config cannot be read"),
    ({"config": {"model": {"n_layer": 9}}}, "its key '" + KEY + "' is not its config's"),
])
def test_load_record_checks_every_fields_type_and_its_key(tmp_path, change, message):
    path = tmp_path / f"{KEY}.json"
    path.write_text(json.dumps({**dataclasses.asdict(record()), **change}))
    with pytest.raises(RecordError) as exc:
        load_record(path)
    assert str(exc.value).startswith(message)


def test_a_record_under_another_name_is_refused(tmp_path):
    save_record(tmp_path, record())
    (tmp_path / f"{KEY}.json").rename(tmp_path / "0123456789ab.json")
    with pytest.raises(RecordError, match=f"holds the run '{KEY}' under another name"):
        load_record(tmp_path / "0123456789ab.json")


def test_load_record_ignores_unknown_fields_and_defaults_extra(tmp_path):
    raw = dataclasses.asdict(record())
    del raw["extra"]
    raw["written_by_a_newer_version"] = 1
    path = tmp_path / f"{KEY}.json"
    path.write_text(json.dumps(raw))
    assert load_record(path) == record(extra={})


class _Pickled:
    """Any class: loading it would run pickled code, which ``weights_only`` refuses."""


def checkpoint_error(path) -> str:
    with pytest.raises(GptlabError) as exc:
        checkpoint.load(path)
    return str(exc.value)


def test_checkpoint_errors_name_the_file_and_the_reason(tmp_path):
    missing = tmp_path / "missing.pt"
    assert checkpoint_error(missing) == f"checkpoint '{missing}': no such file"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert checkpoint_error(garbage) == f"checkpoint '{garbage}': not a readable gptlab checkpoint (UnpicklingError)"
    code = tmp_path / "code.pt"
    torch.save({"format": checkpoint.FORMAT, "x": _Pickled()}, code)
    assert checkpoint_error(code) == f"checkpoint '{code}': not a readable gptlab checkpoint (UnpicklingError)"
    for name, payload in (("list.pt", [1, 2]), ("foreign.pt", {"format": "other"})):
        torch.save(payload, tmp_path / name)
        assert checkpoint_error(tmp_path / name) == (
            f"checkpoint '{tmp_path / name}': not a gptlab checkpoint (expected format {checkpoint.FORMAT})")


def test_checkpoint_saves_version_and_rejects_mismatched_weights(tmp_path):
    cfg = preset("bigram")
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, build_model(cfg.model), cfg, CharTokenizer("".join(chr(33 + i) for i in range(65))))
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    payload = torch.load(path, weights_only=True)
    assert payload["gptlab_version"] == __version__ and payload["format"] == checkpoint.FORMAT
    payload["config"]["model"]["vocab_size"] = 64
    torch.save(payload, path)
    assert checkpoint_error(path) == (
        f"checkpoint '{path}': its vocabulary (65) does not match model.vocab_size = 64")
    payload["config"]["model"]["vocab_size"] = 65
    payload["config"]["model"]["arch"] = "gpt"
    torch.save(payload, path)
    assert checkpoint_error(path) == f"checkpoint '{path}': its config, vocabulary or weights do not fit together"
    payload["config"] = {"model": 5}
    torch.save(payload, path)
    assert checkpoint_error(path).startswith(f"checkpoint '{path}': ")
