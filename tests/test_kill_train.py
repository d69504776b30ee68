"""The training loop's maths, each rule pinned on a run of a few steps (or on no run at all): every member trains
on its own seed's batches, with AdamW set as configured; evaluation scores every window once, in batches that a
stack of members shares; the model returned is the one last evaluated; a diverged member stops and the others
go on; the reported speed counts training time only; progress reports each step and each evaluation."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import gptlab.group
import gptlab.train
from gptlab.config import apply_overrides, lr_at, preset
from gptlab.data import Batches, Corpus, fixed_windows, read_text
from gptlab.errors import GptlabError
from gptlab.flops import flops_per_token
from gptlab.group import StackedModels, train_group
from gptlab.model import build_model
from gptlab.train import EVAL_CHUNK_TOKENS, Evaluator, OneModel, Progress, fit, train
from tests.conftest import DATA

CPU = torch.device("cpu")
SMALL = Corpus.from_text(read_text(DATA)[:20_000])


def tiny(**overrides):
    """A one-layer lecture run of a few steps on SMALL."""
    run = apply_overrides(preset("lecture"), {"model.n_layer": 1, "train.max_iters": 4, "train.eval_interval": 2,
                                              "train.eval_windows": 8, "train.batch_size": 4, **overrides})
    run.model.vocab_size = SMALL.tokenizer.vocab_size
    return run


def one_model(run):
    torch.manual_seed(run.train.seed)
    return OneModel(build_model(run.model), compile_model=False)


def stacked(runs):
    models = []
    for run in runs:
        torch.manual_seed(run.train.seed)
        models.append(build_model(run.model))
    return StackedModels(models, runs[0].model)


def spy_losses(members, seen):
    """Record the (x, y) of every training step (3-D inputs: one batch per member) that ``members`` is given."""
    real = members.losses

    def losses(x, y):
        out = real(x, y)
        if x.dim() == 3:
            seen.append((x.clone(), y.clone(), out.detach().clone()))
        return out

    members.losses = losses


# -- batches and the optimizer -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["single", "group"])
def test_each_member_trains_on_its_own_seeds_batches(how):
    runs = [tiny(**{"train.seed": seed}) for seed in ((5,) if how == "single" else (5, 9))]
    members = one_model(runs[0]) if how == "single" else stacked(runs)
    seen = []
    spy_losses(members, seen)
    fit(members, runs[0], [r.train.seed for r in runs], SMALL, CPU, None)
    assert len(seen) == 4  # one training step per iteration
    T, B = runs[0].model.block_size, runs[0].train.batch_size
    streams = [Batches(SMALL.train, T, B, r.train.seed, 4, CPU) for r in runs]
    for step, (x, y, _) in enumerate(seen):
        assert x.shape == y.shape == (len(runs), B, T)
        for member, stream in enumerate(streams):
            want_x, want_y = stream.batch(step)
            assert torch.equal(x[member], want_x) and torch.equal(y[member], want_y)  # inputs, and targets


def test_adamw_gets_the_configured_betas_and_decay_groups(monkeypatch):
    built = []

    class Recording(torch.optim.AdamW):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            built.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    run = tiny(**{"train.beta1": 0.8, "train.beta2": 0.95, "train.weight_decay": 0.25, "train.max_iters": 1})
    model = train(run, SMALL).model
    (optimizer,) = built
    assert optimizer.defaults["betas"] == (0.8, 0.95)
    decayed, kept = optimizer.param_groups
    assert (decayed["weight_decay"], kept["weight_decay"]) == (0.25, 0.0)
    for group, matrix in ((decayed, True), (kept, False)):  # each group one flat tensor: its parameters' storage
        (flat,) = group["params"]
        params = [p for p in model.parameters() if (p.dim() >= 2) == matrix]
        assert flat.numel() == sum(p.numel() for p in params)
        assert {p.untyped_storage().data_ptr() for p in params} == {flat.untyped_storage().data_ptr()}
        assert {p.grad.untyped_storage().data_ptr() for p in params} == {flat.grad.untyped_storage().data_ptr()}


def reference_history(run, corpus, members):
    """The loop as it was (fused AdamW over the parameters one by one, gradients set to None each step),
    evaluated as fit evaluates: the per-step losses fit's flat buffers must reproduce."""
    t = run.train
    batches = Batches(corpus.train, run.model.block_size, t.batch_size, t.seed, t.max_iters, CPU)
    optimizer = torch.optim.AdamW(members.param_groups(t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), fused=True)
    evaluate, losses = Evaluator(corpus, run, CPU, 1), []
    for step in range(t.max_iters):
        x, y = batches.batch(step)
        loss = members.losses(x, y).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            members.clip(t.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses, evaluate(members)["val"][0]


@pytest.mark.parametrize("overrides", [{}, {"train.grad_clip": 0.5, "train.weight_decay": 0.1}])
def test_flat_buffers_train_exactly_as_parameter_by_parameter(overrides, monkeypatch):
    run = tiny(**{"train.max_iters": 12, "train.eval_interval": 12, **overrides})
    want, want_val = reference_history(run, SMALL, one_model(run))
    seen = []
    original = OneModel.losses
    monkeypatch.setattr(OneModel, "losses", lambda self, x, y: seen.append(original(self, x, y)) or seen[-1])
    members = one_model(run)
    (result,) = fit(members, run, [run.train.seed], SMALL, CPU, None)
    got = [loss.item() for loss in seen if loss.requires_grad]
    assert got == want and result.final_val_loss == want_val  # exactly: the same update, element by element


def test_flattened_leaves_mixed_dtypes_alone_and_keeps_values_and_shapes():
    a, b = torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))
    values = [a.detach().clone(), b.detach().clone()]
    group = gptlab.train.flattened({"params": [a, b], "weight_decay": 0.5})
    (flat,) = group["params"]
    assert group["weight_decay"] == 0.5 and flat.shape == (10,) and torch.equal(flat.grad, torch.zeros(10))
    assert a.shape == (3, 2) and torch.equal(a, values[0]) and torch.equal(b, values[1])
    assert torch.equal(flat.detach(), torch.cat([values[0].reshape(-1), values[1]]))
    a.grad[1, 0] = 7.0
    assert flat.grad[2] == 7.0  # a's gradient is a view of the flat one
    mixed = {"params": [torch.nn.Parameter(torch.randn(2)), torch.nn.Parameter(torch.randn(2).double())]}
    assert gptlab.train.flattened(mixed) is mixed


def test_compile_compiles_the_model_the_steps_run_and_evaluation_runs_it_plain(monkeypatch):
    compiled = []

    def fake_compile(model):
        def step_model(x, y):
            compiled.append(tuple(x.shape))
            return model(x, y)

        return step_model

    monkeypatch.setattr(torch, "compile", fake_compile)
    run = tiny(**{"train.compile": True})
    train(run, SMALL)
    assert compiled == [(4, 8)] * 4  # each training step, no evaluation batch
    compiled.clear()
    train(tiny(), SMALL)
    assert compiled == []  # compile off: nothing compiled


@pytest.mark.parametrize("how", ["single", "group"])
def test_the_thread_count_is_chosen_for_the_whole_steps_work(how, monkeypatch):
    module = gptlab.train if how == "single" else gptlab.group
    asked = []
    monkeypatch.setattr(module, "threads_for", lambda requested, flops: asked.append((requested, flops)) or 1)
    runs = [tiny(**{"train.threads": 0, "train.max_iters": 1, "train.seed": s}) for s in (1, 2)]
    if how == "single":
        runs = runs[:1]
        params = train(runs[0], SMALL).model.num_params()
    else:
        params = train_group(runs, SMALL)[0].model.num_params()
    per_step = flops_per_token(runs[0].model, params) * runs[0].train.batch_size * runs[0].model.block_size
    assert asked == [(0, per_step * len(runs))]  # a group's step is every member's step


# -- evaluation ----------------------------------------------------------------------------------------------


class Windows:
    """Members whose loss on a batch is the mean of its targets' first token, times (member + 1)."""

    def __init__(self, count):
        self.count, self.sizes, self.modes = count, [], []

    def train(self, mode):
        self.modes.append(mode)

    def losses(self, x, y):
        self.sizes.append(len(x))
        mean = y[:, 0].double().mean()
        return torch.stack([mean * (m + 1) for m in range(self.count)])


def test_evaluation_scores_every_window_once_in_batches_a_stack_shares():
    run = tiny(**{"train.eval_windows": 600})
    members = Windows(2)
    evaluate = Evaluator(SMALL, run, CPU, members.count)
    losses = evaluate(members)
    per_batch = EVAL_CHUNK_TOKENS["cpu"] // (8 * 2)  # 4096 tokens for both members together
    assert members.sizes == [per_batch, per_batch, 600 - 2 * per_batch] * 2
    assert members.modes == [False, True]
    for split in ("train", "val"):
        _, y = fixed_windows(getattr(SMALL, split), 8, 600)
        mean = y[:, 0].double().mean().item()
        assert losses[split] == pytest.approx([mean, 2 * mean], rel=1e-6)  # weighted by batch size


def test_evaluation_batch_sizes_per_device_and_for_huge_stacks():
    run = tiny()
    assert Evaluator(SMALL, run, CPU, 1).chunk == 4096 // 8
    assert Evaluator(SMALL, run, torch.device("cuda"), 2).chunk == 65536 // 16
    assert Evaluator(SMALL, run, torch.device("mps"), 1).chunk == 65536 // 8  # another accelerator: a GPU's
    assert Evaluator(SMALL, run, CPU, 600).chunk == 1  # a stack too big for one batch: one window at a time


# -- the loop ------------------------------------------------------------------------------------------------


def test_the_model_returned_is_the_one_last_evaluated():
    run = tiny(**{"train.max_iters": 5, "train.eval_interval": 2, "train.eval_windows": 32,
                  "train.lr_schedule": "cosine", "train.warmup_iters": 2})
    result = train(run, SMALL)
    assert [row["step"] for row in result.history] == [0, 2, 4, 5]  # and at the end, off the interval
    assert [row["lr"] for row in result.history] == [lr_at(run.train, s) for s in (0, 2, 4, 5)]
    assert not result.model.training
    x, y = fixed_windows(SMALL.val, 8, 32)
    with torch.no_grad():
        logits = result.model.logits(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    assert result.final_val_loss == pytest.approx(loss, abs=1e-5)  # no step after the last evaluation
    assert result.final_train_loss == result.history[-1]["train_loss"]
    assert result.best_val_loss == min(row["val_loss"] for row in result.history)


def test_progress_reports_each_step_and_each_evaluation():
    run = tiny()
    members = one_model(run)
    seen, reports = [], []
    spy_losses(members, seen)
    (result,) = fit(members, run, [run.train.seed], SMALL, CPU, lambda member, p: reports.append((member, p)))
    history = {row["step"]: row for row in result.history}
    evals = [Progress(s, 4, history[s]["train_loss"], history[s]["val_loss"]) for s in (0, 2, 4)]
    steps = [Progress(s + 1, 4, train_loss=loss.item()) for s, (_, _, loss) in enumerate(seen)]
    assert reports == [(0, p) for p in [evals[0], steps[0], steps[1], evals[1], steps[2], steps[3], evals[2]]]
    got = []
    train(run, SMALL, got.append)
    assert [(p.step, p.val_loss is None) for p in got] == [(p.step, p.val_loss is None) for _, p in reports]


def test_a_member_diverged_from_the_start_stops_and_the_next_one_trains_on():
    runs = [tiny(**{"train.seed": s, "train.max_iters": 3, "train.eval_interval": 2}) for s in (1, 2)]
    members = stacked(runs)
    with torch.no_grad():
        members.params["lm_head.weight"][0].fill_(float("inf"))  # member 1 is broken, member 2 is not
    reports = []
    broken, good = fit(members, runs[0], [1, 2], SMALL, CPU, lambda member, p: reports.append((member, p.step)))
    assert broken.diverged_at == 0 and math.isnan(broken.final_val_loss) and len(broken.history) == 1
    assert good.diverged_at is None and [row["step"] for row in good.history] == [0, 2, 3]
    assert [s for m, s in reports if m == 0] == [0]  # its step-0 evaluation, then nothing
    assert [s for m, s in reports if m == 1] == [0, 1, 2, 2, 3, 3]
    single = train(runs[1], SMALL)
    assert good.final_val_loss == pytest.approx(single.final_val_loss, abs=2e-4)


def fake_clock(tick):
    calls = [0]

    def perf_counter():
        calls[0] += 1
        return calls[0] * tick

    return SimpleNamespace(perf_counter=perf_counter)


def test_speed_counts_the_training_steps_time_not_the_evaluations(monkeypatch):
    tick = 1e-3
    monkeypatch.setattr(gptlab.train, "time", fake_clock(tick))  # every reading of the clock: one tick later
    run = tiny()
    result = train(run, SMALL)
    # readings: start, (before, after) each of the evaluations at steps 0, 2 and 4, then the end
    assert [row["elapsed"] for row in result.history] == pytest.approx([tick, 3 * tick, 5 * tick])
    assert result.wall_time == pytest.approx(7 * tick)
    tokens = 4 * run.train.batch_size * run.model.block_size
    assert result.tokens_per_sec == pytest.approx(tokens / (4 * tick))  # 7 ticks less 3 evaluating


def test_a_diverged_runs_speed_counts_the_steps_it_took(monkeypatch):
    monkeypatch.setattr(gptlab.train, "time", fake_clock(1e-3))
    run = tiny(**{"train.eval_interval": 4})
    members = one_model(run)
    real, steps = members.losses, [0]

    def losses(x, y):
        loss = real(x, y)
        if x.dim() == 3:
            steps[0] += 1
            return loss * float("inf") if steps[0] == 2 else loss  # step 1
        return loss

    members.losses = losses
    (result,) = fit(members, run, [run.train.seed], SMALL, CPU, None)
    assert result.diverged_at == 1 and result.wall_time == pytest.approx(3e-3)
    assert result.tokens_per_sec == pytest.approx(1 * 4 * 8 / 2e-3)  # one step done in 2 ticks of training


def test_train_checks_the_block_size_against_the_corpus_first():
    short = Corpus.from_text("abcdefghij" * 3)
    with pytest.raises(GptlabError, match=r"model.block_size = 8 is too long: the val split has 3 characters"):
        train(tiny(), short)
    with pytest.raises(GptlabError, match=r"model.block_size = 8 is too long: the val split has 3 characters"):
        train_group([tiny(**{"train.seed": s}) for s in (1, 2)], short)


# -- a group -------------------------------------------------------------------------------------------------


def test_a_group_notes_how_it_ran_and_leaves_the_configs_it_was_given(monkeypatch):
    def no_fused_kernel(*args, **kw):
        raise AssertionError("a group must run the explicit attention (vmap would loop over the fused kernel)")

    monkeypatch.setattr(F, "scaled_dot_product_attention", no_fused_kernel)
    runs = [tiny(**{"train.seed": s}) for s in (1, 2)]
    runs[0].model.vocab_size = runs[1].model.vocab_size = 65
    given = [apply_overrides(r, {}) for r in runs]
    results = train_group(runs, SMALL)
    assert runs == given  # copies are trained, not the caller's configs
    rate = sum(r.tokens_per_sec for r in results)
    for result in results:
        assert result.extra == {"group": {"size": 2, "attention": "explicit", "group_tokens_per_sec": rate}}
    unfused = train_group([tiny(**{"train.seed": s, "model.fused": False}) for s in (1, 2)], SMALL)
    assert unfused[0].extra["group"]["attention"] == "as configured"


def test_a_group_of_one_is_the_single_run():
    run = tiny(**{"train.seed": 3})
    (member,) = train_group([run], SMALL)
    single = train(run, SMALL)
    assert [r["step"] for r in member.history] == [r["step"] for r in single.history]
    assert member.final_val_loss == pytest.approx(single.final_val_loss, abs=2e-4)


def test_group_clipping_equals_clip_grad_norm_on_each_member_alone():
    torch.manual_seed(0)
    runs = [tiny(**{"train.seed": s}) for s in (1, 2, 3)]
    members = stacked(runs)
    torch.manual_seed(1)
    grads = {name: torch.randn_like(p) for name, p in members.params.items()}
    targets = [3.0, 2e-6, 0.0]  # above max_norm; near the 1e-6 guard; a zero gradient
    for i, target in enumerate(targets):
        norm = math.sqrt(sum(float(g[i].pow(2).sum()) for g in grads.values()))
        for g in grads.values():
            g[i] *= target / norm
    for name, p in members.params.items():
        p.grad = grads[name].clone()
    members.clip(1e-6)
    for i in range(3):
        alone = [grads[name][i].clone().requires_grad_() for name in members.params]
        for t in alone:
            t.grad = t.detach().clone()
        torch.nn.utils.clip_grad_norm_(alone, 1e-6)
        for name, t in zip(members.params, alone):
            assert torch.allclose(members.params[name].grad[i], t.grad, rtol=1e-5, atol=0), (i, name)


def test_a_nan_at_the_last_evaluation_is_divergence_at_that_step():
    run = tiny(**{"train.max_iters": 2, "train.eval_interval": 2})
    members = one_model(run)
    real, evaluations = members.losses, [0]

    def losses(x, y):
        loss = real(x, y)
        if x.dim() == 2:  # an evaluation batch: one per split here
            evaluations[0] += 1
            return loss * float("nan") if evaluations[0] > 2 else loss  # the evaluation at step 2
        return loss

    members.losses = losses
    (result,) = fit(members, run, [run.train.seed], SMALL, CPU, None)
    assert result.diverged_at == 2 and math.isnan(result.final_val_loss)
    assert [row["step"] for row in result.history] == [0, 2]
