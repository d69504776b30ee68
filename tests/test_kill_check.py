"""What `gptlab check` promises, pinned where the broader tests leave room: each property's evidence (which
position moved, which token was changed, how many names are listed), its thresholds at their boundaries, its skip
reasons; how a learner's file is read, sized and built, with the error lines naming the field, the value and what
is allowed; and the check driver (time limits, exit codes, plugin rows). Tiny models, few steps: seconds in all."""

import ast
import math
import os
import re
import textwrap
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gptlab import properties as P
from tests.test_properties import T, V, Tiny, gptlab, subject

# -- properties -----------------------------------------------------------------------------------------------


class LeakAt(Tiny):
    """Causal, except that position k also reads token k + 1: a leak at one position in the middle."""

    def __init__(self, k=3, **switches):
        super().__init__(**switches)
        self.k = k

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        if idx.size(1) > self.k + 1:
            extra = torch.zeros_like(logits)
            extra[:, self.k] = self.emb(idx[:, self.k + 1]) @ self.head.weight.T
            logits = logits + extra
        return logits, loss


class Copy(nn.Module):
    """Predicts the input token itself, with logit 2 over the rest: near ln V on random targets, far below it on
    targets equal to the inputs."""

    def __init__(self, p=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))

    def forward(self, idx, targets=None):
        logits = F.one_hot(idx, V).float() * self.w
        loss = None if targets is None else F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        return logits, loss


class FixedLoss(nn.Module):
    """Returns the loss it is given (float64, so that float(loss) is that number exactly)."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.emb = nn.Embedding(V, V)

    def forward(self, idx, targets=None):
        return self.emb(idx), torch.tensor(self.value, dtype=torch.float64)


def of(build, block_size=T, dropout=0.0):
    return P.Subject(lambda p: build(), V, block_size, dropout)


def test_outcomes_carry_their_status_and_evidence():
    assert P.passed("e") == P.Outcome("pass", "e") and P.passed("e").passed
    assert P.failed("e") == P.Outcome("fail", "e") and not P.failed("e").passed
    assert P.skipped("r") == P.Outcome("skipped", "r") and not P.skipped("r").passed


def test_a_subject_builds_under_the_seed_and_draws_reproducible_tokens():
    s = subject()
    assert torch.equal(s.fresh().emb.weight, s.fresh().emb.weight)
    torch.manual_seed(123)
    assert torch.equal(s.fresh().emb.weight, s.fresh().emb.weight)
    assert s.tokens(2).shape == (2, T) and s.tokens(2, 3).shape == (2, 3)
    assert torch.equal(s.tokens(2), s.tokens(2, seed=P.SEED)) and not torch.equal(s.tokens(2), s.tokens(2, seed=1))
    assert int(s.tokens(50).max()) == V - 1 and int(s.tokens(50).min()) == 0
    assert s.fresh().p == 0.0 and s.fresh(0.3).p == 0.3 and subject(dropout=0.1).fresh().p == 0.1


def test_forward_and_shape_helpers():
    class Triple(nn.Module):
        def forward(self, idx, targets=None):
            return torch.zeros(*idx.shape, V), None, None

    idx = torch.zeros(2, T, dtype=torch.long)
    out, loss = P.forward(Triple(), idx)
    assert isinstance(out, tuple) and len(out) == 3 and loss is None  # not (logits, loss): all of it, no loss
    logits, loss = P.forward(Tiny(), idx, idx)
    assert logits.shape == (2, T, V) and loss.dim() == 0
    assert P.shape_of(torch.zeros(2, 3)) == (2, 3) and P.shape_of(None) == "NoneType" and P.shape_of(3) == "int"
    assert P.largest_change(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 1.0])) == 3.0


def test_noticeable_at_the_tolerance():
    ones = torch.ones(3)
    assert not P.noticeable(P.TOLERANCE, ones) and P.noticeable(P.TOLERANCE * 1.01, ones)
    assert not P.noticeable(P.TOLERANCE, -torch.full((3,), 7.0))  # the largest size, not the signed max
    assert P.noticeable(P.TOLERANCE * 0.011, torch.tensor([-0.01, 0.001]))


def test_shapes_evidence_and_the_short_context():
    assert P.shapes(subject()).evidence == f"logits (3, {T}, {V}), scalar loss; T = 3 gives (3, 3, {V})"
    assert P.shapes(of(Tiny, block_size=2)).evidence == f"logits (3, 2, {V}), scalar loss; T = 1 gives (3, 1, {V})"
    assert P.shapes(of(Tiny, block_size=1)).evidence == f"logits (3, 1, {V}), scalar loss; T = 1 gives (3, 1, {V})"
    assert P.shapes(subject(flat=True)).evidence == f"logits ({3 * T}, {V}), scalar loss; T = 3 gives (3, 3, {V})"
    outcome = P.shapes(subject(scalar_loss=False))
    assert outcome.evidence == (f"the loss for given targets is ({3 * T},); expected a scalar tensor (the mean over "
                                f"B*T targets)")
    short = P.shapes(subject(short_breaks=True))
    assert short.evidence == f"a context of 3 tokens (block_size {T}) gives logits (3, 1, {V}); expected (3, 3, {V})"

    class ShortFlat(Tiny):  # (B*T, V) at full length, a wrong (B*T', V) when short
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits.reshape(-1, V)[: 2 * idx.size(1)], loss

    assert P.shapes(of(ShortFlat)).status == "fail"

    class AlwaysFlat(Tiny):  # (B*T, V) with targets or without
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return logits.reshape(-1, V), loss

    assert P.shapes(of(AlwaysFlat)).evidence == f"logits ({3 * T}, {V}), scalar loss; T = 3 gives (9, {V})"


def test_shapes_reads_the_logits_for_given_targets():
    class NoLogitsWithTargets(Tiny):
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            return (None, loss) if targets is not None else (logits, loss)

    assert P.shapes(of(NoLogitsWithTargets)).evidence.startswith("logits for a (3, 6) batch have shape NoneType")


def test_init_loss_evidence_targets_and_bounds():
    assert P.init_loss(subject()).evidence == f"loss at initialisation 2.640; ln V = ln {V} = {math.log(V):.3f}"
    assert P.init_loss(of(Copy)).passed  # targets drawn apart from the inputs: a copying model is near ln V
    low, high = math.log(V) - P.INIT_BELOW, math.log(V) + P.INIT_ABOVE
    assert P.init_loss(of(lambda: FixedLoss(low))).passed and P.init_loss(of(lambda: FixedLoss(high))).passed
    below = P.init_loss(of(lambda: FixedLoss(low - 1e-9)))
    assert below.evidence == (f"loss at initialisation {low:.3f}; ln V = ln {V} = {math.log(V):.3f}, outside "
                              f"[{low:.2f}, {high:.2f}] (a summed loss, or logits far too large?)")
    assert not P.init_loss(of(lambda: FixedLoss(high + 1e-9))).passed


def test_tried_positions_cover_every_later_token_or_a_spread_with_both_ends():
    assert P.tried_positions(1) == [] and P.tried_positions(2) == [1] and P.tried_positions(3) == [1, 2]
    assert P.tried_positions(6) == [1, 2, 3, 4, 5]
    assert P.tried_positions(13) == list(range(1, 13))
    assert P.tried_positions(14) == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13]
    assert P.tried_positions(64) == [1, 7, 12, 18, 24, 29, 35, 40, 46, 52, 57, 63]
    assert len(P.tried_positions(256)) == P.CAUSAL_POSITIONS and P.tried_positions(256)[-1] == 255


def test_causal_names_the_changed_token_and_the_position_that_moved():
    assert P.causal(of(LeakAt)).evidence == "changing token 4 moved position 3's logits by 1.59"
    assert P.causal(of(lambda: LeakAt(1))).evidence == "changing token 2 moved position 1's logits by 1.23"
    assert P.causal(subject(peek=True)).evidence == "changing token 1 moved position 0's logits by 0.888"
    cut = P.causal(subject(by_length=True))
    assert cut.evidence == "cutting the context after token 3 moved the earlier positions' logits by 2.75"
    good = P.causal(subject())
    assert re.fullmatch(r"no later token moves an earlier position \(largest change [0-9.e-]+, 5 of 5 later tokens "
                        r"tried\)", good.evidence), good.evidence
    assert P.causal(gptlab("bigram")).evidence == ("no later token moves an earlier position (largest change 0, 5 of "
                                                   "5 later tokens tried)")
    assert P.causal(of(Tiny, block_size=1)).evidence.endswith("(largest change 0, 0 of 0 later tokens tried)")


def test_causal_changes_the_last_row_too_and_compares_with_the_unchanged_logits():
    class LeakInRow1(Tiny):  # only the second sequence of a batch leaks
        def forward(self, idx, targets=None):
            logits, loss = super().forward(idx, targets)
            if idx.size(0) > 1 and idx.size(1) > 2:
                logits = logits.clone()
                logits[1, 0] = logits[1, 0] + idx[1, 2].float()
            return logits, loss

    assert P.causal(of(LeakInRow1)).evidence.startswith("changing token 2 moved position 0's logits by")


def test_batch_independence_evidence():
    outcome = P.batch_independent(subject(mix_batch=True))
    assert outcome.evidence == ("changing sequences 1 and 2 moved sequence 0's logits by 0.636 in eval mode "
                                "(statistics over the batch, as BatchNorm takes?)")
    assert P.batch_independent(subject(mix_in_train=True)).evidence.startswith(
        "changing sequences 1 and 2 moved sequence 0's logits by 0.83 in train mode")
    assert P.batch_independent(subject(dropout=0.5)).passed  # the same dropout masks for both batches
    assert P.batch_independent(subject()).evidence == ("changing other sequences never moved a sequence's logits (eval "
                                                       "and train mode)")


def test_reads_context():
    class LastReadsFirst(nn.Module):  # the last position reads the first token only
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, V)

        def forward(self, idx, targets=None):
            logits = self.emb(idx).clone()
            logits[:, -1] = logits[:, -1] + self.emb(idx[:, 0])
            return logits, None

    assert P.reads_context(of(LastReadsFirst)) and P.reads_context(subject())
    assert not P.reads_context(gptlab("bigram"))


def test_positions_evidence_and_the_skip_reason():
    assert P.positions(subject()).evidence == "on a context of one repeated token the positions' logits differ by up to 1.08"
    assert P.positions(gptlab()).evidence.endswith("differ by up to 0.217")  # four repeated tokens, not five
    assert P.positions(gptlab("bigram")) == P.skipped(
        "the model reads no context (the last position's logits depend on its own token alone, as a bigram's do)")
    assert P.positions(subject(no_positions=True)).evidence.startswith(
        "on a context of one repeated token every position gets the same logits (largest difference ")


def test_eval_determinism_evidence():
    assert P.eval_deterministic(subject()).evidence == "two eval() forwards agree at dropout 0.2; in train() they differ by 1.36"
    assert P.eval_deterministic(of(Tiny)).evidence == ("two eval() forwards agree at dropout 0.2; no randomness in "
                                                       "train() either")
    bad = P.eval_deterministic(subject(eval_dropout=True))
    assert re.fullmatch(r"two eval\(\) forwards of the same batch differ by [0-9.]+ \(dropout 0.2\): dropout still on "
                        r"in eval mode \(F.dropout without training=self.training\?\)", bad.evidence), bad.evidence


class Many(nn.Module):
    """Four linear layers beside the one that makes the logits, each broken the way `how` says."""

    def __init__(self, how):
        super().__init__()
        self.emb = nn.Embedding(V, V)
        self.a, self.b, self.c, self.d = (nn.Linear(V, V) for _ in range(4))
        self.how = how

    def forward(self, idx, targets=None):
        logits = self.emb(idx)
        for layer in (self.a, self.b, self.c, self.d):
            if self.how == "zero":
                logits = logits + layer(logits) * 0
            elif self.how == "nan":
                logits = logits + layer(logits) * float("nan")
        loss = None if targets is None else F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        if self.how == "nan":
            loss = torch.nan_to_num(loss)
        return logits, loss


def test_gradients_list_three_names_at_most():
    assert P.gradients(of(lambda: Many("unused"))).evidence == (
        "8 of 9 parameters get no gradient (not used in forward?): a.weight, a.bias, b.weight")
    assert P.gradients(of(lambda: Many("nan"))).evidence == "non-finite gradients in emb.weight, a.weight, a.bias"
    assert P.gradients(of(lambda: Many("zero"))).evidence == (
        "8 of 9 parameters get an all-zero gradient (detached, or their output multiplied away?): a.weight, a.bias, "
        "b.weight")
    assert P.gradients(of(lambda: FixedLoss(1.0))).evidence == ("the loss does not depend on any parameter (detached, "
                                                                "or computed outside the graph)")
    assert P.gradients(subject()).evidence == "all 4 parameters get finite, non-zero gradients"


def test_learns_evidence():
    assert P.learns(subject()).evidence == "on one fixed batch the loss went 2.471 -> 0.003 in 100 AdamW steps (lr 0.03)"
    assert P.learns(subject(), steps=3).evidence.startswith("on one fixed batch the loss went 2.471 -> ")
    assert P.learns(subject(dropout=0.5)).evidence.startswith("on one fixed batch the loss went 2.471 -> 0.003")  # no dropout
    assert P.learns(subject(), steps=0).evidence.startswith("on one fixed batch the loss went nan -> 2.471 in 0 AdamW")


def zeros_generate(self, idx, n):
    return torch.cat([idx, torch.zeros(1, n, dtype=torch.long)], 1)


def test_generate_evidence():
    assert P.generate(subject(generate=zeros_generate)).evidence == (
        f"a prompt of {T + 5} tokens (block_size {T}) + 10 new tokens, all in the vocabulary")
    assert P.generate(subject()) == P.skipped("the model has no generate(idx, max_new_tokens) method")
    short = P.generate(subject(generate=lambda self, idx, n: idx))
    assert short.evidence == (f"generate on a prompt of {T + 5} tokens (block_size {T}) with 10 new ones returned "
                              f"(1, {T + 5}); expected (1, {T + 15})")
    changed = P.generate(subject(generate=lambda self, idx, n: torch.zeros(1, idx.size(1) + n, dtype=torch.long)))
    assert changed.evidence == "generate changed the prompt it was given: the returned sequence must start with it"
    assert P.generate(subject(generate=lambda self, idx, n: zeros_generate(self, idx, n) + V - 1)).status == "fail"
    assert P.generate(P.Subject(lambda p: Tiny(generate=lambda self, idx, n: torch.cat(
        [idx, torch.full((1, n), V - 1)], 1)), V, T)).passed


# -- reading a learner's file ----------------------------------------------------------------------------------

from gptlab import learner as L  # noqa: E402
from gptlab.errors import GptlabError  # noqa: E402


def module_of(tmp_path: Path, source: str, sizes=None) -> types.ModuleType:
    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent(source))
    return L.ModelFile.read(path).execute(sizes or {name: f"<{name}>" for name in L.SIZE_NAMES})


DATACLASSES = """
    from dataclasses import dataclass

    @dataclass
    class Hyper:
        n_embd: int = 0

    @dataclass
    class GPTConfig:
        n_embd: int = 0
        n_head: int = 0

    @dataclass
    class ModelArgs:
        dim: int = 0

    @dataclass
    class Sizes:
        n_embd: int = 0

    class Plain:
        pass

    NOT_A_CLASS = 3
"""


def test_a_config_object_prefers_the_annotated_class_then_a_config_or_args_class(tmp_path):
    module = module_of(tmp_path, DATACLASSES)
    sizes = {name: f"<{name}>" for name in L.SIZE_NAMES}
    assert L.config_object(module, module.Hyper, sizes) == module.Hyper(n_embd="<n_embd>")
    assert L.config_object(module, "Hyper", sizes) == module.Hyper(n_embd="<n_embd>")
    assert L.config_object(module, "Missing", sizes) == module.GPTConfig(n_embd="<n_embd>", n_head="<n_head>")
    assert L.config_object(module, "NOT_A_CLASS", sizes) == module.GPTConfig(n_embd="<n_embd>", n_head="<n_head>")
    assert L.config_object(module, module.Plain, sizes) == module.GPTConfig(n_embd="<n_embd>", n_head="<n_head>")
    args_only = module_of(tmp_path, DATACLASSES.replace("class GPTConfig", "class GPTSettings"))
    assert L.config_object(args_only, None, sizes) == args_only.ModelArgs(dim="<n_embd>")
    none = module_of(tmp_path, DATACLASSES.replace("class GPTConfig", "class A").replace("class ModelArgs", "class B"))
    namespace = L.config_object(none, module.Plain, sizes)  # Sizes is a dataclass, but not named as a config
    assert isinstance(namespace, types.SimpleNamespace) and namespace.n_embed == "<n_embd>" and namespace.dim == "<n_embd>"
    assert vars(namespace) == {alias: f"<{name}>" for alias, name in L.CANONICAL.items()}


def test_resolve_arch_writes_a_working_folder_path_relative_and_normalised(tmp_path, monkeypatch):
    (tmp_path / "grids").mkdir()
    (tmp_path / "m.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    assert L.resolve_arch("./m.py", tmp_path / "grids") == "m.py"
    assert L.resolve_arch("./m.py:GPT", tmp_path / "grids") == "m.py:GPT"
    assert L.resolve_arch("grids/../m.py", tmp_path / "grids") == "m.py"


def test_a_missing_arch_file_says_where_paths_are_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GptlabError) as err:
        L.file_path("x.py")
    assert str(err.value) == (f"model.arch = 'x.py': no such file (a path is relative to the grid file's folder, else "
                              f"to the working folder: {os.getcwd()})")


def test_plugin_errors_name_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "LOADED", {})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GptlabError) as err:
        L.load_plugin("none.py")
    assert str(err.value) == "--plugin 'none.py': no such file"
    (tmp_path / "notes.txt").write_text("x = 1\n")
    with pytest.raises(GptlabError) as err:
        L.load_plugin("notes.txt")
    assert str(err.value) == "--plugin 'notes.txt': not a Python file (a plugin is imported: PATH.py)"
    (tmp_path / "bad.py").write_text("raise ValueError('broken plugin')\n")
    with pytest.raises(GptlabError) as err:
        L.load_plugin("bad.py")
    assert str(err.value) == "--plugin 'bad.py': importing it fails: ValueError: broken plugin"


def test_a_plugin_is_imported_as_its_own_module_and_recorded_for_workers(tmp_path, monkeypatch):
    import hashlib
    import sys

    monkeypatch.setattr(L, "LOADED", {})
    monkeypatch.delenv(L.PLUGINS_ENV, raising=False)
    folder = tmp_path / "a folder"
    folder.mkdir()
    first, second = folder / "one.py", folder / "two.py"
    first.write_text("import sys\nSEEN = sys.modules[__name__]\n")
    second.write_text("VALUE = 2\n")
    try:
        assert L.load_plugin(first) == [] and os.environ[L.PLUGINS_ENV] == str(first)
        assert L.load_plugin(second) == [] and os.environ[L.PLUGINS_ENV] == os.pathsep.join([str(first), str(second)])
        names = [f"gptlab_plugin_{hashlib.sha256(str(p).encode()).hexdigest()[:8]}" for p in (first, second)]
        assert sys.modules[names[0]].SEEN is sys.modules[names[0]] and sys.modules[names[1]].VALUE == 2
        assert sys.modules[names[0]].__file__ == str(first)
    finally:
        for name in [n for n in sys.modules if n.startswith("gptlab_plugin_")]:
            del sys.modules[name]


def test_no_plugins_in_the_environment_loads_none(monkeypatch):
    monkeypatch.delenv(L.PLUGINS_ENV, raising=False)
    monkeypatch.setattr(L, "load_plugin", lambda path: pytest.fail(f"loaded {path}"))
    L.load_plugins_from_env()
    monkeypatch.setenv(L.PLUGINS_ENV, os.pathsep)
    L.load_plugins_from_env()


# -- the check driver: plugins --------------------------------------------------------------------------------

from gptlab import check as checking  # noqa: E402
from gptlab.config import preset  # noqa: E402
from tests.test_check import EXAMPLE, PLUGIN, registries_restored  # noqa: E402,F401

PLUGIN_SOURCE = """
import torch
from torch import nn
from gptlab.components import MASK, NORM, RESIDUAL


@NORM.register("broken_norm", "fails to build")
def broken(cfg):
    raise ValueError("no such width")


@NORM.register("plain_norm", "no normalisation, under another name")
def plain(cfg):
    return nn.Identity()


MASK.register("peeking", "the lecture's scores, no mask", leaks_future=True)(MASK.get("none").builder)
MASK.register("honest", "registered as leaking, but masked", leaks_future=True)(MASK.get("after").builder)


class BatchMean(nn.Module):
    def forward(self, x, out):
        return x + out + out.mean(dim=0, keepdim=True)


@RESIDUAL.register("batch_mean", "a residual that adds the batch's mean")
def batch_mean(cfg):
    return BatchMean()
"""


def rows_by_variant(rows):
    out: dict = {}
    for row in rows:
        out.setdefault(row.variant, {})[row.check] = row
    return out


def test_a_plugin_file_is_checked_variant_by_variant(tmp_path, registries_restored, monkeypatch):
    monkeypatch.setattr(checking, "PLUGIN_CHECKS", ("causal", "batch-independent"))
    path = tmp_path / "plugin.py"
    path.write_text(PLUGIN_SOURCE)
    kind, rows = checking.check_file(str(path))
    assert kind == "plugin"
    by = rows_by_variant(rows)
    assert list(by) == ["model.mask=peeking", "model.mask=honest", "model.norm=broken_norm", "model.norm=plain_norm",
                        "model.residual=batch_mean"]
    (built,) = by["model.norm=broken_norm"].values()
    assert built == checking.Row("builds", "fail", 0.0, "model.norm = 'broken_norm': its builder failed: ValueError: "
                                 "no such width", "a builder takes the model's config and returns a module "
                                 "(gptlab/registry.py)", variant="model.norm=broken_norm")
    assert {c: r.status for c, r in by["model.norm=plain_norm"].items()} == {"causal": "pass",
                                                                            "batch-independent": "pass"}
    peeking, honest = by["model.mask=peeking"]["causal"], by["model.mask=honest"]["causal"]
    assert peeking.status == "pass" and peeking.evidence.startswith("registered with leaks_future, and changing token")
    assert honest.status == "fail" and honest.evidence.startswith("registered with leaks_future, and no later token")
    assert by["model.mask=peeking"]["batch-independent"].status == "pass"
    assert not by["model.mask=peeking"]["batch-independent"].evidence.startswith("registered")
    assert by["model.residual=batch_mean"]["batch-independent"].status == "fail"  # its own variant, not "false"
    assert checking.exit_code(rows) == 1


def test_a_plugin_that_registers_nothing(tmp_path, registries_restored):
    path = tmp_path / "nothing.py"
    path.write_text("from gptlab.components import NORM\nNORM.register  # named, never called\n")
    with pytest.raises(GptlabError) as err:
        checking.check_plugin_file(str(path))
    assert str(err.value) == f"{path}: registers no variant (a plugin calls REGISTRY.register(...) at import)"


def test_a_plugins_variants_are_checked_at_the_presets_sizes_and_dropout(registries_restored, monkeypatch):
    small = preset("lecture")
    small.model.block_size, small.model.dropout = 5, 0.3
    presets = {"lecture": preset("lecture"), "small": small}
    monkeypatch.setattr(checking, "preset", lambda name: presets[name])
    monkeypatch.setattr(checking, "PLUGIN_CHECKS", ("shapes", "eval-deterministic"))
    kind, rows = checking.check_file(str(PLUGIN), preset_name="small")
    assert kind == "plugin" and [r.variant for r in rows] == ["model.norm=scalenorm"] * 2
    shapes, evaluation = rows
    assert shapes.evidence.startswith("logits (3, 5, 65), scalar loss")
    assert evaluation.evidence.startswith("two eval() forwards agree at dropout 0.3; in train() they differ by")
    shapes, evaluation = checking.check_plugin_file(str(PLUGIN))
    assert shapes.evidence.startswith("logits (3, 8, 65), scalar loss")
    assert evaluation.evidence.startswith("two eval() forwards agree at dropout 0.2; in train() they differ by")


class Scripted(nn.Module):
    """Returns the losses it is given, one per forward (float64: float(loss) is the number exactly)."""

    def __init__(self, losses):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.losses = list(losses)

    def forward(self, idx, targets=None):
        return torch.zeros(*idx.shape, V), self.w * 0 + torch.tensor(self.losses.pop(0), dtype=torch.float64)


def test_learns_at_the_boundary_and_its_evidence_names_the_goal():
    assert P.learns(of(lambda: Scripted([2.0, 1.5, 1.0])), steps=2).passed  # exactly half: learnt
    assert P.learns(of(lambda: Scripted([2.0, 1.5, 1.2])), steps=2).evidence == (
        "on one fixed batch the loss went 2.000 -> 1.200 in 2 AdamW steps (lr 0.03); a model that learns gets below "
        "1.000 (its logits bounded, or a frozen part?)")


def test_learns_memorises_a_batch_of_distinct_tokens_shorter_than_the_vocabulary():
    from gptlab.config import ModelConfig
    from gptlab.model import Bigram

    cfg = ModelConfig(n_embd=16, n_head=2, n_layer=1, block_size=16, vocab_size=V, arch="bigram")
    outcome = P.learns(P.Subject(lambda p: Bigram(cfg), V, 16), steps=5)
    assert outcome.evidence == ("on one fixed batch the loss went 2.845 -> 2.581 in 5 AdamW steps (lr 0.03); a model "
                                "that learns gets below 1.423 (its logits bounded, or a frozen part?)")


# -- more of the reading -------------------------------------------------------------------------------------


def test_execute_names_its_module_by_the_files_place_and_applies_only_its_own_futures(tmp_path):
    import hashlib
    import sys

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    source = "import torch\ndef f(x: int) -> torch.Tensor:\n    return x\n"
    modules = []
    for folder in ("a", "b"):
        path = tmp_path / folder / "m.py"
        path.write_text(source)
        modules.append(L.ModelFile.read(path).execute(L.sizes_of(preset("lecture").model)))
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        assert modules[-1].__name__ == f"gptlab_learner_m_{digest}" and sys.modules[modules[-1].__name__] is modules[-1]
        assert modules[-1].f.__code__.co_filename == str(path)
    assert modules[0].f.__annotations__ == {"x": int, "return": torch.Tensor}  # not gptlab's own future import
    path = tmp_path / "futures.py"
    path.write_text("from __future__ import annotations\nfrom __future__ import generator_stop\n"
                    "def f(x: Undefined) -> int:\n    return x\n")
    assert L.ModelFile.read(path).execute(L.sizes_of(preset("lecture").model)).f.__annotations__ == {
        "x": "Undefined", "return": "int"}


def test_a_failing_import_and_an_unreadable_file_are_one_line_naming_the_place(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("x = 1\nimport not_a_module_anywhere\n")
    with pytest.raises(GptlabError) as err:
        L.ModelFile.read(path).execute(L.sizes_of(preset("lecture").model))
    assert str(err.value) == (f"{path}:2: its import fails here: ModuleNotFoundError: No module named "
                              f"'not_a_module_anywhere'")
    path.write_text("def broken(:\n    pass\n")
    with pytest.raises(GptlabError) as err:
        L.ModelFile.read(path)
    assert str(err.value) == f"{path}: cannot be read as Python: SyntaxError: invalid syntax (m.py, line 1)"


def test_sizes_of_gives_an_integer_head_size_and_the_cpu_by_default():
    sizes = L.sizes_of(preset("lecture").model)
    assert sizes["device"] == "cpu" and sizes["head_size"] == 8 and isinstance(sizes["head_size"], int)


def test_split_arch_takes_the_last_py_colon_and_registers_variants_reads_registry_calls_only(tmp_path):
    assert L.split_arch("models.py:v2/my.py:GPT") == ("models.py:v2/my.py", "GPT")
    path = tmp_path / "p.py"
    path.write_text("import atexit\nfrom gptlab.components import NORM\nalias = NORM\natexit.register(print)\n")
    assert not L.registers_variants(path)
    path.write_text("from gptlab.components import NORM\nNORM.register('x', 'y')(lambda cfg: None)\n")
    assert L.registers_variants(path)


BUILD = """
    import torch
    from torch import nn
    from dataclasses import dataclass

    @dataclass
    class GPTConfig:
        n_embd: int = 0

    @dataclass
    class Hyper:
        n_head: int = 0

    class Plain:
        pass

    class Model(nn.Module):
        def __init__(self, *layers, vocab_size, settings: GPTConfig, named: "GPTConfig", bias: bool = True,
                     hparams: Plain = None, cfg: Hyper = None, **extra):
            super().__init__()
            self.got = (vocab_size, settings, named, bias, hparams, device, cfg)

        def forward(self, idx, targets=None):
            return idx, None
"""


def build(tmp_path, source, **sizes):
    from gptlab.config import ModelConfig

    path = tmp_path / "learner.py"
    path.write_text(textwrap.dedent(source))
    cfg = ModelConfig(arch=str(path), vocab_size=65)
    for name, value in sizes.items():
        setattr(cfg, name, value)
    return path, cfg


def test_a_constructor_is_given_the_sizes_and_config_objects_it_names_and_keeps_its_defaults(tmp_path):
    path, cfg = build(tmp_path, BUILD)
    got = L.build_module(cfg).got
    assert got[0] == 65 and type(got[1]).__name__ == "GPTConfig" and got[1].n_embd == 32
    assert type(got[2]).__name__ == "GPTConfig" and got[3] is True
    assert type(got[4]).__name__ == "GPTConfig" and got[5] == "cpu"  # hparams: a config's name
    assert L.build_module(cfg, "cuda").got[5] == "cuda"
    assert type(got[6]).__name__ == "Hyper" and got[6].n_head == 4  # the annotated class first


def test_constructor_failures_name_the_class_and_the_sizes(tmp_path):
    path, cfg = build(tmp_path, BUILD.replace("super().__init__()", "super().__init__()\n            raise ValueError('boom')"))
    with pytest.raises(GptlabError) as err:
        L.build_module(cfg)
    assert str(err.value) == (f"{path}: Model(...) fails at these sizes (n_embd 32, n_head 4, n_layer 3, block_size "
                              f"8): ValueError: boom")
    path, cfg = build(tmp_path, BUILD.replace("**extra", "temperature, **extra"))
    with pytest.raises(GptlabError) as err:
        L.build_module(cfg)
    assert str(err.value) == (f"{path}: cannot size Model: its constructor needs 'temperature', which is none of the "
                              f"size names gptlab sets (vocab_size, block_size, n_embd, n_head, n_layer, dropout, "
                              f"device and their spellings, or a config object)")


TWO = """
    from torch import nn

    class Block(nn.Module):
        def forward(self, x):
            return x

    class A(nn.Module):
        def forward(self, idx, targets=None):
            return idx, None

    class B(A):
        pass

    size = 3
"""


def test_choosing_the_model_class(tmp_path):
    path, cfg = build(tmp_path, textwrap.dedent(TWO) + "model = B()\nm = model.to('cpu')\n")
    assert type(L.build_module(cfg)).__name__ == "B"  # the one the script builds
    path, cfg = build(tmp_path, textwrap.dedent(TWO) + "model = B()\nother = A()\n")
    with pytest.raises(GptlabError) as err:
        L.build_module(cfg)
    assert str(err.value) == f"{path}: several language models (A, B); pick one with --model NAME (or PATH.py:NAME)"
    for requested, why in (("Block", "its forward does not take (idx, targets)"), ("size", "no such class"),
                           ("Missing", "no such class")):
        cfg.arch = f"{path}:{requested}"
        with pytest.raises(GptlabError) as err:
            L.build_module(cfg)
        assert str(err.value) == (f"--model {requested!r} in {path}: {why}; language models (an nn.Module with "
                                  f"forward(idx, targets)) found: A, B")
    cfg.arch = f"{path}:A"
    assert type(L.build_module(cfg)).__name__ == "A"
    path, cfg = build(tmp_path, "from torch import nn\nclass Block(nn.Module):\n    def forward(self, x):\n"
                                "        return x\n")
    with pytest.raises(GptlabError) as err:
        L.build_module(cfg)
    assert str(err.value) == (f"{path}: no language model: gptlab looks for an nn.Module class whose forward takes "
                              f"(idx, targets) and returns (logits, loss); found none")
    cfg.arch = f"{path}:Block"
    with pytest.raises(GptlabError, match=r"found none$"):
        L.build_module(cfg)


# -- the check driver -----------------------------------------------------------------------------------------

from gptlab.data import Corpus  # noqa: E402
from tests.conftest import shakespeare  # noqa: E402


def test_initialisation_follows_the_largest_embedding_std():
    class Embedded(nn.Module):
        def __init__(self, std):
            super().__init__()
            self.emb = nn.Embedding(2, 1, dtype=torch.float64)
            with torch.no_grad():
                self.emb.weight.copy_(torch.tensor([[std], [-std]], dtype=torch.float64) / 2 ** 0.5)

    assert checking.initialisation(Embedded(0.02)) == "normal" and checking.initialisation(Embedded(0.5)) == "torch"
    assert float(Embedded(0.1).emb.weight.detach().std()) == 0.1 and checking.initialisation(Embedded(0.1)) == "torch"
    assert checking.initialisation(nn.Linear(2, 2)) == "torch"  # no embeddings: PyTorch's defaults


def test_same_symptom_lists_the_catalogued_bugs_of_a_check():
    from gptlab.devtools.catalogue import CATALOGUE, PROPERTY_OF

    rows = checking.same_symptom("causal")
    assert [r["id"] for r in rows] == [b.id for b in CATALOGUE if PROPERTY_OF.get(b.id, ("",))[0] == "causal"]
    bug = next(b for b in CATALOGUE if b.id == "mask-removed")
    assert rows[0] == {"id": "mask-removed", "bug": bug.bug, "val_loss": "0.313", "docs": "docs/mutations.md#mask-removed"}
    assert checking.same_symptom("no-such-check") == []


def test_select_keeps_the_order_of_checks_and_names_the_first_unknown():
    assert checking.select(None) == list(checking.CHECKS) == checking.select([])
    assert [c.name for c in checking.select(["causal", "shapes"])] == ["shapes", "causal"]
    with pytest.raises(GptlabError) as err:
        checking.select(["shapes", "causality", "trained"])
    assert str(err.value) == ("--only 'causality' is not a check; choose from: shapes, init-loss, causal, "
                              "batch-independent, positions, eval-deterministic, gradients, learns, trains, generate")


def test_run_check_rows(monkeypatch):
    import time

    target = checking.Target(subject(), preset("lecture"), None)

    def check(run, seconds=5.0, name="causal"):
        return checking.Check(name, "an idea", run, seconds)

    threads = []
    row = checking.run_check(check(lambda t: threads.append(torch.get_num_threads()) or P.passed("fine")), target)
    assert threads == [1] and row.status == "pass" and row.bugs == [] and row.variant == ""
    assert (row.check, row.evidence, row.idea) == ("causal", "fine", "an idea") and 0 <= row.seconds < 5
    failed = checking.run_check(check(lambda t: P.failed("moved"), name="causal"), target, "model.norm=x")
    assert failed.variant == "model.norm=x" and failed.bugs == checking.same_symptom("causal") and failed.bugs
    raised = checking.run_check(check(lambda t: int("x")), target)
    assert raised.status == "fail" and raised.evidence == ("raised ValueError: invalid literal for int() with base 10: "
                                                           "'x'")

    def error(t):
        raise GptlabError("a one-line error")

    assert checking.run_check(check(error), target).evidence == "a one-line error"

    def forever(t):
        while True:
            time.sleep(0.01)

    slow = checking.run_check(check(forever, seconds=0.2), target)
    assert slow.status == "fail" and slow.evidence == ("ran past its time limit of 0.2 s (an endless loop, or a model "
                                                       "far bigger than the preset?)")
    assert row.to_dict() == {"check": "causal", "status": "pass", "seconds": row.seconds, "evidence": "fine",
                             "idea": "an idea", "bugs": [], "variant": ""}


def test_exit_code():
    rows = [checking.Row("a", "pass", 0.0, ""), checking.Row("b", "skipped", 0.0, "")]
    assert checking.exit_code([]) == 0 and checking.exit_code(rows) == 0
    assert checking.exit_code(rows + [checking.Row("c", "fail", 0.0, "")]) == 1


def test_sized_config():
    corpus = Corpus.from_text("abcabcabca" * 20)
    cfg = checking.sized_config("m.py", "lecture", corpus)
    assert (cfg.model.arch, cfg.model.vocab_size, cfg.train.device) == ("m.py", 3, "cpu")
    assert cfg.model.n_embd == preset("lecture").model.n_embd


class FakeTrain:
    """gptlab.train.train, answering from a table of val losses by (arch, seed)."""

    def __init__(self, corpus, table):
        self.corpus, self.table, self.calls = corpus, table, []

    def __call__(self, cfg, corpus):
        assert corpus is self.corpus
        self.calls.append((cfg.model.arch, cfg.train.seed, cfg.train.max_iters, cfg.train.eval_interval,
                           cfg.train.eval_windows, cfg.train.lr, cfg.model.init))
        return types.SimpleNamespace(final_val_loss=self.table[("ours" if cfg.model.arch in ("gpt", "bigram") else
                                                               "theirs", cfg.train.seed)])


def trains_target(reads_context=True, build=Tiny):
    cfg = preset("lecture")
    cfg.model.arch = "learner.py"
    return checking.Target(P.Subject(lambda p: build(), V, T), cfg, shakespeare(), reads_context)


def fake(monkeypatch, theirs, ours):
    table = {(kind, seed): loss for kind, losses in (("theirs", theirs), ("ours", ours))
             for seed, loss in zip(checking.TRAINS_SEEDS, losses)}
    runs = FakeTrain(shakespeare(), table)
    monkeypatch.setattr("gptlab.train.train", runs)
    return runs


def test_trains_adds_seed_pairs_until_the_interval_is_narrow(monkeypatch):
    runs = fake(monkeypatch, [2.0, 2.01, 2.3, 2.3], [2.0, 2.0, 2.0, 2.0])
    outcome = checking.trains(trains_target())
    lr, init = preset("lecture").train.lr, preset("lecture").model.init  # the learner's init is their own code's
    assert runs.calls == [("learner.py", 1337, 500, 500, 1024, lr, init), ("gpt", 1337, 500, 500, 1024, lr, "torch"),
                          ("learner.py", 1338, 500, 500, 1024, lr, init), ("gpt", 1338, 500, 500, 1024, lr, "torch")]
    assert outcome == P.passed("val loss 2.005 vs gptlab's gpt (init torch) 2.000 after 500 steps (2 seeds each, same "
                               "batches): difference +0.005 ± 0.010")
    runs = fake(monkeypatch, [2.0, 2.06, 2.03, 9.0], [2.0, 2.0, 2.0, 2.0])
    outcome = checking.trains(trains_target())
    assert len(runs.calls) == 6 and outcome == P.passed(
        "val loss 2.030 vs gptlab's gpt (init torch) 2.000 after 500 steps (3 seeds each, same batches): difference "
        "+0.030 ± 0.034")
    runs = fake(monkeypatch, [2.0, 2.2, 2.1, 2.1], [2.0, 2.0, 2.0, 2.0])
    outcome = checking.trains(trains_target())
    assert len(runs.calls) == 8 and outcome == P.failed(
        "val loss 2.100 vs gptlab's gpt (init torch) 2.000 after 500 steps (4 seeds each, same batches): difference "
        "+0.100 ± 0.080; allowed: at most +0.05")


def test_trains_stops_only_when_the_interval_is_narrower_than_the_tolerance(monkeypatch):
    import statistics

    runs = fake(monkeypatch, [2.0, 2.01, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0])
    differences = [2.0 - 2.0, 2.01 - 2.0]
    monkeypatch.setattr(checking, "TRAINS_TOLERANCE", 1.96 * statistics.stdev(differences) / math.sqrt(2))
    checking.trains(trains_target())
    assert len(runs.calls) == 6  # a half width equal to the tolerance is not narrower: a third pair


def test_trains_allows_a_gap_of_the_tolerance_and_fails_a_non_finite_loss(monkeypatch):
    fake(monkeypatch, [2.25] * 4, [2.0] * 4)
    monkeypatch.setattr(checking, "TRAINS_TOLERANCE", 0.25)
    assert checking.trains(trains_target()).passed
    runs = fake(monkeypatch, [float("nan")] * 4, [2.0] * 4)
    outcome = checking.trains(trains_target())
    assert outcome.status == "fail" and len(runs.calls) == 2  # diverged: no interval to narrow, no more seeds
    assert outcome.evidence.startswith("val loss nan vs gptlab's gpt (init torch) 2.000 after 500 steps (1 seeds each")


def test_trains_against_the_bigram_at_its_learning_rate_for_a_model_that_reads_no_context(monkeypatch):
    class Small(Tiny):
        def __init__(self):
            super().__init__()
            nn.init.normal_(self.emb.weight, std=0.02)
            nn.init.normal_(self.pos.weight, std=0.02)

    runs = fake(monkeypatch, [2.5] * 4, [2.5] * 4)
    outcome = checking.trains(trains_target(reads_context=False, build=Small))
    assert outcome.evidence.startswith("val loss 2.500 vs gptlab's bigram (init normal) 2.500 after 500 steps")
    bigram_lr = preset("bigram").train.lr
    assert bigram_lr != preset("lecture").train.lr
    assert runs.calls[:2] == [("learner.py", 1337, 500, 500, 1024, bigram_lr, preset("lecture").model.init),
                              ("bigram", 1337, 500, 500, 1024, bigram_lr, "normal")]


def test_check_model_file_sizes_by_the_corpus_and_preset_and_passes_the_target(tmp_path, monkeypatch):
    small = Corpus.from_text("abcdefghij" * 30)
    seen = []
    monkeypatch.setattr(checking, "run_check", lambda check, target: seen.append((check.name, target)) or
                        checking.Row(check.name, "pass", 0.0, ""))
    rows = checking.check_model_file(str(EXAMPLE), model="TinyGPT", only=["shapes", "trains"], corpus=small)
    assert [r.check for r in rows] == ["shapes", "trains"] and [name for name, _ in seen] == ["shapes", "trains"]
    target = seen[0][1]
    assert target.corpus is small and target.reads_context is True and target.cfg.model.vocab_size == 10
    assert target.cfg.model.arch == f"{EXAMPLE}:TinyGPT" and target.subject.vocab_size == 10
    assert target.subject.block_size == 8 and target.subject.dropout == 0.0
    raising = tmp_path / "raising.py"
    raising.write_text(EXAMPLE.read_text().replace("        B, T = idx.shape\n", "        raise ValueError('no')\n", 1))
    assert raising.read_text() != EXAMPLE.read_text()
    seen.clear()
    checking.check_model_file(str(raising), only=["shapes"], corpus=small)
    assert seen[0][1].reads_context is True  # its forward raises: each check reports it
    bigram = tmp_path / "bigram.py"
    bigram.write_text("from torch import nn\nclass Bigram(nn.Module):\n    def __init__(self, vocab_size):\n"
                      "        super().__init__()\n        self.emb = nn.Embedding(vocab_size, vocab_size)\n"
                      "    def forward(self, idx, targets=None):\n        return self.emb(idx), None\n")
    seen.clear()
    checking.check_model_file(str(bigram), only=["shapes"], corpus=small)
    assert seen[0][1].reads_context is False
    with pytest.raises(GptlabError) as err:
        checking.check_model_file(str(tmp_path / "none.py"), corpus=small)
    assert str(err.value) == f"FILE = {str(tmp_path / 'none.py')!r}: no such file"
    seen.clear()
    dropping = preset("lecture")
    dropping.model.dropout = 0.3
    monkeypatch.setattr(checking, "preset", lambda name: dropping if name == "lecture" else pytest.fail(name))
    checking.check_model_file(str(EXAMPLE), only=["shapes"], corpus=small)
    assert seen[0][1].subject.dropout == 0.3


def test_the_learners_model_is_checked_at_the_raised_dropout():
    (row,) = checking.check_model_file(str(EXAMPLE), only=["eval-deterministic"], corpus=shakespeare())
    assert row.evidence.startswith("two eval() forwards agree at dropout 0.2; in train() they differ by")


def test_an_endless_build_is_stopped_at_the_build_limit(tmp_path, monkeypatch):
    import dataclasses as dc

    from tests.test_check import KWARGS_MODEL, source_file

    monkeypatch.setattr(checking, "BUILD_SECONDS", 0.5)
    monkeypatch.setattr(checking, "CHECKS", tuple(dc.replace(c, seconds=0.5) for c in checking.CHECKS))
    path = source_file(tmp_path, KWARGS_MODEL.replace("        logits = self.emb(idx)\n",
                                                      "        while True:\n            pass\n"))
    with pytest.raises(GptlabError) as err:
        checking.check_model_file(path, only=["shapes"], corpus=shakespeare())
    assert str(err.value) == f"{path}: building the model and two forward passes ran past 0.5 s (an endless loop?)"
    no_model = tmp_path / "none.py"
    no_model.write_text("x = 1\n")
    with pytest.raises(GptlabError, match="no language model"):
        checking.check_model_file(str(no_model), only=["shapes"], corpus=shakespeare())
    assert checking.check_file(str(EXAMPLE), only=["shapes"])[0] == "model"
