"""`gptlab check` on a learner's file: the example passes, and each bug a learner writes, planted in it, fails the
check about its idea. Also: how the file is read (never its script), sized and built, and the command's output."""

import json
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptlab import check as checking
from gptlab.check import CHECK_NAMES, check_file, check_model_file
from gptlab.cli import app
from gptlab.config import preset
from gptlab.devtools.catalogue import CATALOGUE, PROPERTY_OF
from gptlab.errors import GptlabError
from gptlab.learner import SIZE_NAMES, ModelFile, build_module
from tests.conftest import ROOT, shakespeare

EXAMPLE = Path(ROOT) / "examples" / "my_gpt.py"
FAST = [name for name in CHECK_NAMES if name != "trains"]

# (id, the check that must fail, [(original text of examples/my_gpt.py, replacement), ...])
PLANTED = [
    ("mask-removed", "causal",
     [("        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))  # no peeking at the future\n", "")]),
    ("mask-off-by-one", "causal",
     [("torch.tril(torch.ones(block_size, block_size))", "torch.tril(torch.ones(block_size, block_size), diagonal=1)")]),
    ("softmax-over-queries", "causal", [("wei = F.softmax(wei, dim=-1)", "wei = F.softmax(wei, dim=1)")]),
    ("positions-reversed", "causal",
     [("torch.arange(T, device=device)", "torch.arange(T - 1, -1, -1, device=device)")]),
    ("no-position-embedding", "positions", [("        x = tok + pos\n", "        x = tok\n")]),
    ("dropout-on-in-eval", "eval-deterministic",
     [("wei = self.dropout(wei)", "wei = F.dropout(wei, dropout, training=True)")]),
    ("final-norm-unused", "gradients", [("        x = self.ln_f(x)\n", "")]),
    ("attention-detached", "gradients",
     [("x = x + self.sa(self.ln1(x))", "x = x + self.sa(self.ln1(x)).detach()")]),
    ("loss-summed", "init-loss",
     [("F.cross_entropy(logits, targets.view(B * T))", "F.cross_entropy(logits, targets.view(B * T), reduction='sum')")]),
    ("no-lm-head", "shapes", [("logits = self.lm_head(x)", "logits = x")]),
    ("batchnorm-over-the-batch", "batch-independent",
     [("        self.ln1 = nn.LayerNorm(width)\n",
       "        self.ln1 = nn.BatchNorm1d(width)\n"),
      ("        x = x + self.sa(self.ln1(x))\n",
       "        x = x + self.sa(self.ln1(x.transpose(1, 2)).transpose(1, 2))\n")]),
    ("generate-without-crop", "generate", [("logits, _ = self(idx[:, -block_size:])", "logits, _ = self(idx)")]),
    ("logits-squashed", "learns", [("logits = self.lm_head(x)", "logits = torch.tanh(self.lm_head(x))")]),
]


def planted(tmp_path: Path, patches: list[tuple[str, str]], name: str = "my_gpt.py") -> str:
    text = EXAMPLE.read_text()
    for original, replacement in patches:
        assert text.count(original) == 1, original
        text = text.replace(original, replacement)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def statuses(rows):
    return {row.check: row.status for row in rows}


def test_the_example_file_passes_every_check_and_its_script_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no input.txt here: the script's open('input.txt') would raise if it ran
    rows = check_model_file(str(EXAMPLE), only=FAST, corpus=shakespeare())
    assert statuses(rows) == {name: "pass" for name in FAST}, [(r.check, r.evidence) for r in rows if r.status != "pass"]
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bug, check, patches", PLANTED, ids=[p[0] for p in PLANTED])
def test_each_planted_bug_fails_its_check(bug, check, patches, tmp_path):
    path = planted(tmp_path, patches)
    (row,) = check_model_file(path, only=[check], corpus=shakespeare())
    assert row.status == "fail", f"{bug}: {check} did not fail: {row.evidence}"
    assert row.idea and row.evidence


def test_at_least_twelve_bugs_are_planted_across_at_least_eight_checks():
    assert len(PLANTED) >= 12 and len({check for _, check, _ in PLANTED}) >= 8


def test_a_dropped_residual_fails_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(checking, "TRAINS_STEPS", 150)  # a short run: without residuals it is already far behind
    monkeypatch.setattr(checking, "TRAINS_WINDOWS", 256)
    monkeypatch.setattr(checking, "TRAINS_SEEDS", (1337, 1338))
    residual = [("x = x + self.sa(self.ln1(x))", "x = self.sa(self.ln1(x))"),
                ("x = x + self.mlp(self.ln2(x))", "x = self.mlp(self.ln2(x))")]
    path = planted(tmp_path, residual)
    (broken,) = check_model_file(path, only=["trains"], corpus=shakespeare())
    assert broken.status == "fail", broken.evidence
    assert "vs gptlab's gpt (init torch)" in broken.evidence
    assert [b["id"] for b in broken.bugs] == ["residual-dropped", "ffn-without-nonlinearity"]


@pytest.mark.slow
def test_the_example_trains_as_well_as_gptlabs_gpt():
    (row,) = check_model_file(str(EXAMPLE), only=["trains"], corpus=shakespeare())
    assert row.status == "pass", row.evidence


def test_a_failure_names_the_catalogued_bugs_with_the_same_symptom(tmp_path):
    path = planted(tmp_path, PLANTED[0][2])
    (row,) = check_model_file(path, only=["causal"], corpus=shakespeare())
    assert "changing token" in row.evidence and "moved position" in row.evidence
    ids = [b["id"] for b in row.bugs]
    assert "mask-removed" in ids and "mask-off-by-one" in ids
    assert all(b["docs"] == f"docs/mutations.md#{b['id']}" and b["val_loss"] for b in row.bugs)


def test_the_property_map_names_catalogue_entries_and_checks():
    ids = {bug.id for bug in CATALOGUE}
    assert set(PROPERTY_OF) <= ids
    assert {check for check, _ in PROPERTY_OF.values()} <= set(CHECK_NAMES)


# -- reading and sizing a learner's file ---------------------------------------------------------------------

HOSTILE_SCRIPT = """
import torch
import torch.nn as nn
from torch.nn import functional as F
import subprocess
n_embd = 999
num_heads = 3
n_layers = 7
context_size = 1000
subprocess.check_output(["false"])  # a download at the top
exit()
raise SystemExit(3)
if __name__ == "__main__":
    raise SystemExit(4)
"""

KWARGS_MODEL = """
class CharModel(nn.Module):
    def __init__(self, vocab_size, context_size, n_embed, num_heads, n_layers, dropout=0.5):
        super().__init__()
        self.sizes = (vocab_size, context_size, n_embed, num_heads, n_layers, dropout)
        self.emb = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets):
        logits = self.emb(idx)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
"""

CONFIG_MODEL = """
from dataclasses import dataclass

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    bias: bool = True

class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx, targets=None):
        return self.emb(idx), None
"""


def source_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "learner.py"
    path.write_text(HOSTILE_SCRIPT + textwrap.dedent(body))
    return str(path)


def lecture_size(arch: str):
    cfg = preset("lecture").model
    cfg.arch = arch
    return cfg


def test_keyword_constructors_are_sized_by_their_spellings_and_the_script_never_runs(tmp_path):
    module = build_module(lecture_size(source_file(tmp_path, KWARGS_MODEL)))
    assert module.sizes == (65, 8, 32, 4, 3, 0.0)


def test_a_config_class_of_the_file_is_filled_with_the_sizes_it_names(tmp_path):
    module = build_module(lecture_size(source_file(tmp_path, CONFIG_MODEL)))
    c = module.config
    assert type(c).__name__ == "GPTConfig"
    assert (c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd, c.bias) == (8, 65, 3, 4, 32, True)


def test_module_constants_in_any_spelling_are_set_from_the_preset(tmp_path):
    path = source_file(tmp_path, "")
    module = ModelFile.read(Path(path)).execute({name: f"<{name}>" for name in SIZE_NAMES})
    assert (module.n_embd, module.num_heads, module.n_layers, module.context_size) == \
        ("<n_embd>", "<n_head>", "<n_layer>", "<block_size>")
    assert module.torch is torch and not hasattr(module, "text")


@pytest.mark.parametrize("body, message", [
    ("", "no language model"),
    (KWARGS_MODEL + KWARGS_MODEL.replace("CharModel", "Other"), "several language models (CharModel, Other)"),
    (KWARGS_MODEL.replace("dropout=0.5", "dropout=0.5, *, temperature"), "needs 'temperature'"),
    ("def broken(:\n    pass\n", "cannot be read as Python"),
    ("import not_a_module_anywhere\n", "its import fails here"),
])
def test_a_file_that_cannot_be_used_is_one_line_naming_why(tmp_path, body, message):
    with pytest.raises(GptlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_module(lecture_size(source_file(tmp_path, body)))


def test_model_picks_one_class_of_several_and_refuses_one_that_does_not_fit(tmp_path):
    path = source_file(tmp_path, KWARGS_MODEL + KWARGS_MODEL.replace("CharModel", "Other"))
    assert type(build_module(lecture_size(f"{path}:Other"))).__name__ == "Other"
    with pytest.raises(GptlabError, match="--model 'F'.*no such class"):
        build_module(lecture_size(f"{path}:F"))


# -- the command ---------------------------------------------------------------------------------------------


def test_check_prints_a_row_per_check_and_exits_1_on_a_failure(tmp_path):
    path = planted(tmp_path, PLANTED[0][2])
    runner = CliRunner()
    result = runner.invoke(app, ["check", path, "--only", "causal", "--only", "shapes"], env={"COLUMNS": "120"})
    assert result.exit_code == 1, result.output
    assert "causal" in result.output and "FAIL" not in result.output and " fail " in result.output
    assert "mask-removed (val 0.313)" in " ".join(result.output.split())
    good = runner.invoke(app, ["check", str(EXAMPLE), "--only", "shapes", "--format", "json"])
    assert good.exit_code == 0, good.output
    report = json.loads(good.output)
    assert report["passed"] and report["checks"][0]["check"] == "shapes" and report["kind"] == "model"


@pytest.mark.parametrize("args, message", [
    (["check", "no_such.py"], "FILE = 'no_such.py': no such file"),
    (["check", str(EXAMPLE), "--only", "causality"], "--only 'causality' is not a check"),
    (["check", str(EXAMPLE), "--format", "xml"], "--format = 'xml' is not allowed"),
    (["check", str(EXAMPLE), "--model", "Block"], "its forward does not take (idx, targets)"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


# -- a learner's model and plugins in `train` and grids ---------------------------------------------------------


@pytest.fixture
def registries_restored(monkeypatch):
    """A plugin registers variants for the whole process: put every registry back afterwards."""
    import sys

    from gptlab.components import REGISTRIES
    from gptlab.learner import LOADED, PLUGINS_ENV

    saved = {field: dict(r._entries) for field, r in REGISTRIES.items()}
    monkeypatch.setattr("gptlab.learner.LOADED", dict(LOADED))
    modules = set(sys.modules)
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    yield
    for field, registry in REGISTRIES.items():
        registry._entries = saved[field]
    for name in set(sys.modules) - modules:
        if name.startswith("gptlab_plugin_"):
            del sys.modules[name]


PLUGIN = Path(ROOT) / "examples" / "scalenorm_plugin.py"


def test_the_key_of_a_learner_file_follows_its_content_and_class_not_its_place(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (first / "m.py").write_text(EXAMPLE.read_text())
    (second / "m.py").write_text(EXAMPLE.read_text())
    run = preset("lecture")
    keys = []
    for arch in (first / "m.py", second / "m.py", f"{first / 'm.py'}:TinyGPT"):
        run.model.arch = str(arch)
        keys.append(run.key())
    assert keys[0] == keys[1] != keys[2]  # moved: the same run; a class named: another
    (first / "m.py").write_text(EXAMPLE.read_text() + "\n# an edit\n")
    run.model.arch = str(first / "m.py")
    assert run.key() != keys[0]


def test_the_runs_size_fields_set_the_files_constants(tmp_path):
    from gptlab.model import LearnerModel

    cfg = lecture_size(str(EXAMPLE))
    cfg.n_embd, cfg.n_head, cfg.n_layer = 64, 2, 1
    model = LearnerModel(cfg)
    assert model.net.tok_emb.weight.shape == (65, 64) and len(model.net.blocks) == 1
    assert len(model.net.blocks[0].sa.heads) == 2
    logits, loss = model(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
    assert logits.shape == (2, 8, 65) and loss.dim() == 0


def test_train_refuses_a_file_that_reads_the_future_pointing_to_check(tmp_path):
    path = planted(tmp_path, PLANTED[0][2])
    result = CliRunner().invoke(app, ["train", "--set", f"model.arch={path}", "--out", str(tmp_path / "out")],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "reads the future (changing token" in text and f"run `gptlab check {path}`" in text
    assert not (tmp_path / "out" / "ckpt.pt").exists()


def test_a_grid_ablates_a_learner_file_against_gptlabs_gpt(tmp_path, monkeypatch):
    from gptlab.grid import load_grid
    from gptlab.results import load
    from gptlab.runner import run_grid

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.py").write_text(EXAMPLE.read_text())
    grid_file = tmp_path / "grids" / "mine.yaml"
    grid_file.parent.mkdir()
    grid_file.write_text(textwrap.dedent("""
        name: mine
        preset: lecture
        set: {train.max_iters: 4, train.eval_interval: 2, train.eval_windows: 16, model.n_layer: 1}
        grid:
          model.arch: [gpt, ../models/mine.py]
        seeds: [1, 2]
    """))
    monkeypatch.chdir(tmp_path)
    grid = load_grid(grid_file)
    assert [v.overrides["model.arch"] for v in grid.variants] == ["gpt", "models/mine.py"]  # found beside the grid
    outcome = run_grid(grid, tmp_path / "reports", jobs=1)
    assert len(outcome.finished) == 4 and not outcome.failed
    runs = load(tmp_path / "reports" / "mine")
    assert sorted(runs["model.arch"]) == ["gpt", "gpt", "models/mine.py", "models/mine.py"]
    assert run_grid(load_grid(grid_file), tmp_path / "reports", jobs=1).todo == []  # unchanged: resumed


def test_a_plugin_registers_variants_for_list_check_train_and_grids(tmp_path, registries_restored, monkeypatch):
    from gptlab.grid import check_grid, load_grid

    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--plugin", str(PLUGIN)], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "scalenorm (plugin)" in listed.output
    checked = runner.invoke(app, ["check", str(PLUGIN)], env={"COLUMNS": "200"})
    assert "model.norm=scalenorm" in checked.output and "6 passed, 0 failed" in checked.output, checked.output
    grid_file = tmp_path / "g.yaml"
    (tmp_path / "plugin.py").write_text(PLUGIN.read_text().replace('"scalenorm"', '"scalenorm2"'))
    grid_file.write_text("name: g\nplugins: [plugin.py]\ngrid:\n  model.norm: [layernorm, scalenorm2]\n")
    grid = load_grid(grid_file)
    check_grid(grid)
    assert [v.name for v in grid.variants] == ["norm=layernorm", "norm=scalenorm2"]
    assert grid.manifest()["plugins"] == [str(tmp_path / "plugin.py")]
    bad = runner.invoke(app, ["list", "--plugin", str(tmp_path / "none.py")])
    assert bad.exit_code == 2 and "--plugin" in bad.output and "no such file" in bad.output


def test_a_forward_that_never_returns_is_stopped_by_the_time_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(checking, "BUILD_SECONDS", 1)
    path = source_file(tmp_path, KWARGS_MODEL.replace("        logits = self.emb(idx)\n",
                                                      "        while True:\n            pass\n"))
    with pytest.raises(GptlabError, match="ran past 1 s"):
        check_model_file(path, corpus=shakespeare())
