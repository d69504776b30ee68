"""The bugs a learner writes, as data, each with the one test that must catch it; and the check that it does.

mutmut's score counts small syntactic edits. A learner's bugs are different: a mask off by one, a softmax over
the wrong axis, evaluation left in training mode, every seed starting from the same weights. Each ``Bug`` below
is one such bug as a text patch of one file (``original`` must occur there exactly once) and the fully-qualified
name of the test that is about it. ``python -m gptlab.devtools.mutation --catalogue`` copies the project
(``gptlab/``, ``tests/``, ``data/``, ``pyproject.toml``, and ``benchmarks/``, ``ablations/`` and ``examples/``,
which some tests read) to a temporary folder, then for each bug patches the
copy, runs pytest there (the copy's package imported, checked on every run), records the failing tests and
reverts the patch. An entry passes when its named test fails; it fails the check (exit 1) when it survives every
test, is killed only by other tests, or its original text is not found exactly once.

By default each entry runs its named test alone, and the default test selection (``-x``, less this tool's own
tests) only when that test passes, to tell "survived" from "killed by another test" (a test that then fails is
run again without the bug: failing there too, it says nothing about the bug). ``--full`` runs the default
selection first for every entry (its first failing test is then the suite's, in file order), and the named test
too where the suite stopped before it. Each pytest run is a fresh process forked from a server per copy that has
imported torch, scipy and pandas but not gptlab (``--no-preload``: a new ``python -m pytest`` each time).

``--measure`` also trains the lecture model for 1000 steps on each patched copy (``MEASURE_COMMAND``) and
records the val loss beside unmodified baselines; docs/mutations.md holds the numbers.

This module is also the pytest plugin the child runs load (``-p gptlab.devtools.catalogue``): the hooks at the
end write each failing test and the file ``gptlab`` was imported from to ``$GPTLAB_CATALOGUE_REPORT``. It
imports nothing from gptlab, so that a patched copy can break any module and the plugin still loads.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What the default test selection reads: the package, the tests, the corpus, the pytest settings, and the
# benchmark scripts (tests/test_bench.py), shipped grids (tests/test_grid.py) and the examples of a learner's files
# (tests/test_check.py) some tests import or load.
COPIED = ("gptlab", "tests", "data", "pyproject.toml", "benchmarks", "ablations", "examples")
REPORT_ENV = "GPTLAB_CATALOGUE_REPORT"
PYTEST_ARGS = ("-q", "-p", "no:cacheprovider", "-p", "gptlab.devtools.catalogue")
# The default selection, less this tool's own tests: one of them checks that every entry's original text is in
# the code, which each patch breaks by design.
SUITE_ARGS = ("-x", "--ignore=tests/test_mutation_tool.py")
MEASURE_COMMAND = ("train", "--preset", "lecture", "--set", "train.max_iters=1000", "--set", "model.fused=false",
                   "--sample-tokens", "0")
MEASURE_SEEDS = (1337, 1338, 1339)  # the unmodified baseline at these seeds gives the seed noise; bugs run at the first
NAMED_TIMEOUT_S = 120
SUITE_TIMEOUT_S = 600
MEASURE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Bug:
    """One learner's bug: ``original`` (exactly once in ``file``) becomes ``replacement``; ``test`` must fail.

    ``measure_set``: extra ``--set KEY=VALUE`` for ``--measure`` where the default lecture run cannot show the bug
    (dropout 0, a constant lr, the explicit attention path); its baseline is measured with the same settings.
    """

    id: str
    area: str
    bug: str
    file: str
    original: str
    replacement: str
    test: str
    measure_set: tuple[str, ...] = ()


LEARNER_TESTS = "tests/test_learner_bugs.py"
L = LEARNER_TESTS + "::"
MASK = "gptlab/components/mask.py"
MODEL = "gptlab/model.py"
READING = "gptlab/gpt.py"
READING_TEST = "tests/test_gpt_reading.py::test_same_weights_same_logits_and_loss[lecture]"
FUSED = ("model.fused=true",)
PROPERTIES = "gptlab/properties.py"
CHECK_TEST = "tests/test_check.py::"
COSINE = ("train.lr_schedule=cosine", "train.warmup_iters=100")

CATALOGUE: tuple[Bug, ...] = (
    # -- data -------------------------------------------------------------------------------------------------
    Bug("split-val-from-start", "data", "the validation split is the first 10% of the text, inside the training data",
        "gptlab/data.py", "return cls(tokenizer, ids[:n], ids[n:])",
        "return cls(tokenizer, ids[:n], ids[: len(ids) - n])",
        L + "test_splits_are_contiguous_disjoint_and_in_order"),
    Bug("targets-not-shifted", "data", "training targets are the inputs themselves, not shifted by one",
        "gptlab/data.py", "chunk = self.windows[ix]\n        return chunk[:, :-1], chunk[:, 1:]",
        "chunk = self.windows[ix]\n        return chunk[:, :-1], chunk[:, :-1]",
        "tests/test_data.py::test_batches_shapes_and_shift"),
    Bug("window-one-short", "data", "windows of block_size tokens, not block_size + 1: one input too few",
        "gptlab/data.py", "return data.unfold(0, block_size + 1, 1)", "return data.unfold(0, block_size, 1)",
        "tests/test_data.py::test_batches_shapes_and_shift"),
    Bug("eval-windows-at-the-start", "data",
        "the fixed evaluation windows are the split's first ones, not spread over it",
        "gptlab/data.py",
        "ix = torch.linspace(0, len(all_windows) - 1, min(count, len(all_windows))).round().long()"
        ".clamp(max=len(all_windows) - 1)",
        "ix = torch.arange(min(count, len(all_windows)))",
        "tests/test_data.py::test_fixed_windows_are_deterministic_and_span_the_split"),
    Bug("batches-ignore-the-seed", "data", "every seed draws the same batches (the generator's seed is a constant)",
        "gptlab/data.py", "self.generator = torch.Generator().manual_seed(seed)",
        "self.generator = torch.Generator().manual_seed(1337)",
        "tests/test_data.py::test_batches_depend_on_the_seed_and_change_every_step"),
    # -- components: mask, softmax, scale, q/k (explicit and fused paths) -----------------------------------
    Bug("mask-removed", "mask", "no causal mask at all (ScoreAllPairs.causal = False): every token reads the future",
        MASK, "    causal = True\n", "    causal = False\n",
        "tests/test_components.py::test_causal_masks_never_read_the_future[True-after]"),
    Bug("mask-off-by-one", "mask", "the mask starts one diagonal too high (triu(2)): token t reads token t + 1",
        MASK, "future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)",
        "future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(2)",
        "tests/test_components.py::test_causal_masks_never_read_the_future[False-after]"),
    Bug("mask-hides-self", "mask", "the mask covers the diagonal too: a token may not read itself (row 0 is all -inf)",
        MASK, "future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)",
        "future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(0)",
        "tests/test_components.py::test_attention_weights_rows_sum_to_one_and_future_is_zero"),
    Bug("rows-mask-off-by-one", "mask", "mask=before: row t scores keys 0..t+1, one into the future",
        MASK, "k[..., : t + 1, :]", "k[..., : t + 2, :]",
        "tests/test_components.py::test_causal_masks_never_read_the_future[False-before]",
        measure_set=("model.mask=before",)),
    Bug("softmax-over-queries", "softmax", "softmax over the query axis (dim=-2): columns sum to 1, not rows",
        MASK, "return F.softmax(scores, dim=-1)", "return F.softmax(scores, dim=-2)",
        "tests/test_components.py::test_attention_weights_rows_sum_to_one_and_future_is_zero"),
    Bug("scale-dropped", "scale", "scores not scaled by 1/sqrt(head_size) (explicit path)",
        MASK, "return q @ k.transpose(-2, -1) * q.size(-1) ** -0.5", "return q @ k.transpose(-2, -1)",
        L + "test_explicit_attention_matches_a_hand_computation"),
    Bug("scale-dropped-default-path", "scale",
        "the same edit, trained the default way: the fused kernel never calls it",
        MASK, "return q @ k.transpose(-2, -1) * q.size(-1) ** -0.5", "return q @ k.transpose(-2, -1)",
        L + "test_explicit_attention_matches_a_hand_computation", measure_set=FUSED),
    Bug("scale-multiplies", "scale", "scores multiplied by sqrt(head_size) instead of divided (explicit path)",
        MASK, "return q @ k.transpose(-2, -1) * q.size(-1) ** -0.5",
        "return q @ k.transpose(-2, -1) * q.size(-1) ** 0.5",
        L + "test_explicit_attention_matches_a_hand_computation"),
    Bug("q-k-swapped", "q/k", "scores are k @ q^T: row i holds key i against every query",
        MASK, "return q @ k.transpose(-2, -1) * q.size(-1) ** -0.5",
        "return k @ q.transpose(-2, -1) * q.size(-1) ** -0.5",
        L + "test_explicit_attention_matches_a_hand_computation"),
    Bug("fused-not-causal", "mask", "the fused kernel is called without is_causal: the default path reads the future",
        MASK, "return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)",
        "return F.scaled_dot_product_attention(q, k, v, dropout_p=p)",
        L + "test_fused_attention_equals_a_hand_reference", measure_set=FUSED),
    Bug("fused-dropout-in-eval", "mask", "the fused kernel drops attention weights in eval mode too",
        MASK, "p = self.dropout.p if self.training else 0.0", "p = self.dropout.p",
        "tests/test_kill_components.py::test_attention_dropout_acts_in_training_only[after-True]",
        measure_set=("model.fused=true", "model.dropout=0.2")),
    Bug("key-is-the-query", "q/k", "separate q/k: the key is computed with the query's map",
        "gptlab/components/qk.py", "return self.query(x), self.key(x)", "return self.query(x), self.query(x)",
        "tests/test_components.py::test_shared_qk_gives_symmetric_scores_separate_does_not"),
    # -- components: heads, values, norms, residual, projections, feed-forward ------------------------------
    Bug("heads-view-without-transpose", "heads", "heads split with view(B, nh, T, hs): each head mixes positions",
        MODEL, "return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)",
        "return x.view(B, self.n_head, T, C // self.n_head)",
        L + "test_head_h_owns_channels_h_hs_to_h_plus_1_hs"),
    Bug("heads-concat-without-transpose", "heads", "heads joined with reshape(B, T, C) without transposing back",
        MODEL, "y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side again",
        "y = y.reshape(B, T, C)  # the heads side by side again",
        L + "test_concat_is_the_inverse_of_the_split"),
    Bug("values-skipped", "values", "heads average raw x: the value map is built but never applied",
        MODEL, "self.split_heads(self.values(x))", "self.split_heads(x)",
        L + "test_attention_averages_the_value_maps_output"),
    Bug("norm-skipped-before-attention", "norm", "attention reads x, not norm1(x) (pre-norm forgotten)",
        MODEL, "x = self.residual(x, self.attn(self.norm1(x)))", "x = self.residual(x, self.attn(x))",
        "tests/test_kill_components.py::test_block_is_attention_then_feedforward_on_normed_inputs[4]"),
    Bug("norm1-reused-for-ffn", "norm", "the feed-forward layer reads norm1(x): one norm's gains shared by both",
        MODEL, "self.ffn(self.norm2(x))", "self.ffn(self.norm1(x))",
        "tests/test_kill_components.py::test_block_is_attention_then_feedforward_on_normed_inputs[4]"),
    Bug("rmsnorm-over-time", "norm", "RMSNorm's mean over dim 1 (time), not the features",
        "gptlab/components/norm.py", "x.pow(2).mean(dim=-1, keepdim=True)", "x.pow(2).mean(dim=1, keepdim=True)",
        "tests/test_components.py::test_rmsnorm_scales_tokens_to_unit_rms_without_centring",
        measure_set=("model.norm=rmsnorm",)),
    Bug("final-norm-forgotten", "norm", "the final LayerNorm is built but the logits read the raw residual stream",
        MODEL, "return self.lm_head(self.norm_f(self.blocks(self.embed(idx))))",
        "return self.lm_head(self.blocks(self.embed(idx)))",
        L + "test_logits_read_the_residual_stream_through_the_final_norm"),
    Bug("residual-dropped", "residual", "the block returns f(x), not x + f(x)",
        "gptlab/components/residual.py", "return x + out", "return out",
        "tests/test_components.py::test_residual_off_removes_the_identity_path"),
    Bug("attention-projection-skipped", "projections", "the heads' output projection is built but not applied",
        MODEL, "return self.dropout(self.proj(y))", "return self.dropout(y)",
        L + "test_attention_output_goes_through_its_projection"),
    Bug("ffn-without-nonlinearity", "ffn", "no ReLU between the feed-forward layer's two linears",
        MODEL, "nn.ReLU(),", "nn.Identity(),", L + "test_feedforward_is_linear_relu_linear"),
    Bug("ffn-not-wider", "ffn", "the feed-forward hidden layer is n_embd wide, not ffn_mult * n_embd",
        MODEL, "hidden = cfg.ffn_mult * cfg.n_embd", "hidden = cfg.n_embd",
        "tests/test_components.py::test_feedforward_is_mult_times_wider"),
    # -- model: embeddings, sampling, loss, init ------------------------------------------------------------
    Bug("no-position-embedding", "model", "the position embedding is built but never added",
        MODEL, "return self.drop(self.tok_emb(idx) + self.pos_emb(pos))", "return self.drop(self.tok_emb(idx))",
        "tests/test_kill_model.py::test_embedding_is_token_plus_position"),
    Bug("crop-keeps-the-start", "model", "generation crops the context to its first block_size tokens, not its last",
        MODEL, "self.logits(idx[:, -self.block_size :])", "self.logits(idx[:, : self.block_size])",
        L + "test_generation_feeds_the_last_block_size_tokens"),
    Bug("next-token-from-first-position", "model", "generation samples from position 0's logits, not the last",
        MODEL, "[:, -1, :] / temperature", "[:, 0, :] / temperature",
        L + "test_next_token_is_drawn_from_the_last_positions_distribution"),
    Bug("softmax-before-cross-entropy", "model", "the loss applies softmax to the logits before cross_entropy",
        MODEL, "loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))",
        "loss = F.cross_entropy(F.softmax(logits, dim=-1).reshape(-1, logits.size(-1)), targets.reshape(-1))",
        L + "test_loss_is_the_mean_negative_log_likelihood_of_the_targets"),
    Bug("init-std-one", "model", "weights initialised N(0, 1), not N(0, 0.02)",
        READING, "nn.init.normal_(module.weight, mean=0.0, std=0.02)",
        "nn.init.normal_(module.weight, mean=0.0, std=1.0)",
        "tests/test_model.py::test_init_normal_uses_small_weights_torch_keeps_defaults"),
    # -- training -------------------------------------------------------------------------------------------
    Bug("eval-in-training-mode", "training", "evaluation runs in training mode: dropout on while scoring",
        "gptlab/train.py", "members.train(False)", "members.train(True)",
        L + "test_evaluation_is_deterministic_and_equals_an_eval_mode_forward",
        measure_set=("model.dropout=0.2",)),
    Bug("init-ignores-the-seed", "training", "every seed builds the same initial weights (the seed only moves batches)",
        "gptlab/train.py", "torch.manual_seed(cfg.train.seed)", "torch.manual_seed(1337)",
        L + "test_seeds_give_different_initial_weights_and_the_same_seed_the_same[single]"),
    Bug("group-init-one-seed", "training", "a seed group builds every member from the first member's seed",
        "gptlab/group.py", "torch.manual_seed(member.train.seed)", "torch.manual_seed(cfg.train.seed)",
        L + "test_seeds_give_different_initial_weights_and_the_same_seed_the_same[group]"),
    Bug("lr-schedule-not-applied", "training", "the schedule is computed (and logged) but the optimizer keeps train.lr",
        "gptlab/train.py", 'group["lr"] = lr_at(t, step)', 'group["lr"] = t.lr',
        L + "test_the_optimizer_steps_with_the_scheduled_lr", measure_set=COSINE),
    Bug("cosine-upside-down", "training", "the cosine schedule rises from min_lr to lr instead of decaying",
        "gptlab/config.py", "0.5 * (1.0 + math.cos(math.pi * progress))", "0.5 * (1.0 - math.cos(math.pi * progress))",
        "tests/test_config.py::test_cosine_schedule_with_warmup", measure_set=COSINE),
    Bug("clip-by-value", "training", "gradients clipped element by element (clip_grad_value_), not by their norm",
        "gptlab/train.py", "torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)",
        "torch.nn.utils.clip_grad_value_(self.model.parameters(), max_norm)",
        L + "test_clipping_scales_each_members_gradient_to_max_norm[single]",
        measure_set=("train.grad_clip=0.1",)),
    Bug("stacked-clip-scales-up", "training", "a seed group's clipping also scales small gradients up to max_norm",
        "gptlab/group.py", "coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)", "coef = max_norm / (norms + 1e-6)",
        L + "test_clipping_scales_each_members_gradient_to_max_norm[group]"),
    Bug("weight-decay-on-everything", "training", "weight decay on biases and norm gains too, not only matrices",
        "gptlab/train.py", "lambda p: p.dim() >= 2", "lambda p: p.dim() >= 1",
        L + "test_weight_decay_only_on_matrices[single]", measure_set=("train.weight_decay=0.1",)),
    Bug("stacked-decay-on-biases", "training", "a seed group decays its (stacked, 2-D) biases and norm gains",
        "gptlab/group.py", "lambda p: p.dim() >= 3", "lambda p: p.dim() >= 2",
        L + "test_weight_decay_only_on_matrices[group]"),
    Bug("inf-loss-not-divergence", "training", "a training loss of inf is not divergence (only NaN is checked)",
        "gptlab/train.py", "if value is not None and not math.isfinite(value):",
        "if value is not None and math.isnan(value):",
        L + "test_an_infinite_training_loss_is_divergence_at_its_step"),
    # -- harness --------------------------------------------------------------------------------------------
    Bug("key-hashes-the-model-only", "harness", "the run key hashes the model section only: lr or seed runs collide",
        "gptlab/config.py", "blob = json.dumps(changed, sort_keys=True)",
        'blob = json.dumps({k: v for k, v in changed.items() if k.startswith("model.")}, sort_keys=True)',
        "tests/test_config.py::test_key_is_stable_and_changes_with_any_field"),
    Bug("force-ignored", "harness", "--force reruns nothing: finished runs are always skipped",
        "gptlab/runner.py",
        "return [s for s in specs if s.key not in kept] if force else [s for s in specs if not is_finished(runs_dir, s)]",
        "return [s for s in specs if not is_finished(runs_dir, s)]",
        "tests/test_runner.py::test_resume_skips_finished_runs_and_force_reruns_them"),
    Bug("resume-trusts-any-record", "harness",
        "resume counts a readable record under the key as done, whoever's run it is",
        "gptlab/runner.py", "return (record.grid, record.variant, record.seed) == (spec.grid, spec.variant, spec.seed)",
        "return True",
        "tests/test_runner.py::test_resume_skips_finished_runs_and_force_reruns_them"),
    Bug("default-baseline-last", "harness",
        "a grid without `baseline` compares against its last variant, not its first",
        "gptlab/grid.py", "return names[0]", "return names[-1]",
        "tests/test_grid.py::test_baseline_by_dict_by_name_and_default"),
    Bug("every-run-the-first-seed", "harness", "every run of a grid trains with its first seed (same config, same key)",
        "gptlab/grid.py", "cfg.train.seed = seed", "cfg.train.seed = self.seeds[0]",
        "tests/test_grid.py::test_product_and_named_variants_times_seeds"),
    # -- statistics -----------------------------------------------------------------------------------------
    Bug("p-one-sided", "statistics", "the t-test's p-value is one-sided (half the two-sided one)",
        "gptlab/stats.py", "return float(2 * t.sf(abs(self.t_of(shift)), self.df))",
        "return float(t.sf(abs(self.t_of(shift)), self.df))",
        "tests/test_stats.py::test_welch_p_value_matches_a_hand_computation"),
    Bug("student-degrees-of-freedom", "statistics", "Welch's test with Student's degrees of freedom (n1 + n2 - 2)",
        "gptlab/stats.py",
        "df = (va + vb) ** 2 / (va**2 / (len(variant) - 1) + vb**2 / (len(baseline) - 1)) if se "
        "else len(variant) - 1.0",
        "df = len(variant) + len(baseline) - 2.0",
        "tests/test_stats.py::test_welch_p_value_matches_a_hand_computation"),
    Bug("higher-loss-is-better", "statistics", "a variant with a higher loss than the baseline is called better",
        "gptlab/stats.py", "{'better' if delta < 0 else 'worse'}", "{'better' if delta > 0 else 'worse'}",
        "tests/test_stats.py::test_compare_to_baseline_adjusts_over_the_variants"),
    Bug("holm-not-monotone", "statistics", "Holm's adjusted p-values are not kept monotone in the raw ones",
        "gptlab/stats.py", "running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))",
        "running = min(1.0, (len(p_values) - rank) * p_values[i])",
        "tests/test_stats.py::test_holm_multiplies_by_rank_and_stays_monotone"),
    Bug("holm-not-applied", "statistics", "verdicts use each variant's raw p-value: no correction for testing several",
        "gptlab/stats.py", "adjusted = dict(zip(tested, holm([tests[name].p_two_sided() for name in tested])))",
        "adjusted = dict(zip(tested, [tests[name].p_two_sided() for name in tested]))",
        L + "test_verdicts_use_holm_adjusted_p_values"),
    Bug("claim-direction-flipped", "statistics", "a `worse` claim is tested in the `better` direction",
        "gptlab/claims.py", 'sign = 1.0 if claim.kind == "worse" else -1.0',
        'sign = 1.0 if claim.kind == "better" else -1.0',
        "tests/test_claims.py::test_directional_claims_hold_or_are_contradicted"),
    Bug("spending-forgets-looks", "statistics",
        "seeds until settled: each look tests at all the level spent so far, forgetting the looks already taken",
        "gptlab/sequential.py", "return [spent(t) - spent(before) for t, before in zip(fractions, [0.0] + fractions)]",
        "return [spent(t) for t in fractions]",
        "tests/test_sequential.py::test_peeking_after_every_round_keeps_false_verdicts_at_or_below_the_level"),
    Bug("settles-only-holds", "statistics",
        "seeds until settled: a claim stops only when it holds (a one-sided boundary): a contradicted one draws on",
        "gptlab/sequential.py", "if i not in settled and result.status != OPEN:",
        "if i not in settled and result.status == \"holds\":",
        "tests/test_sequential.py::test_settle_replays_the_looks_and_keeps_each_claim_at_the_look_it_settled"),
    Bug("stale-check-skips-claims", "statistics",
        "the stale check compares grid.json's title and insight with the grid file, not its claims",
        "gptlab/results.py", 'WORDS = ("title", "insight", "claims")', 'WORDS = ("title", "insight")',
        "tests/test_results.py::test_a_grid_takes_the_words_of_its_file_and_names_each_field_grid_json_says_otherwise"),
    # -- the one-file reading (gptlab/gpt.py) ---------------------------------------------------------------
    Bug("reading-softmax-over-queries", "reading", "gpt.py: attention softmax over dim=-2",
        READING, "F.softmax(scores, dim=-1)", "F.softmax(scores, dim=-2)", READING_TEST),
    Bug("reading-scale-dropped", "reading", "gpt.py: scores not scaled by 1/sqrt(head_size)",
        READING, "scores = q @ k.transpose(-2, -1) * k.size(-1) ** -0.5", "scores = q @ k.transpose(-2, -1)",
        READING_TEST),
    Bug("reading-mask-off-by-one", "reading", "gpt.py: the mask lets token t read token t + 1",
        READING, ".triu(1)", ".triu(2)", READING_TEST),
    Bug("reading-heads-concat", "reading", "gpt.py: heads joined with reshape(B, T, C) without transposing back",
        READING, "y = y.transpose(1, 2).reshape(B, T, C)", "y = y.reshape(B, T, C)", READING_TEST),
    # -- the checks of a learner's model (gptlab/properties.py): a check with a bug passes bugs or fails good models
    Bug("causal-check-perturbs-itself", "checks",
        "the causality check changes the token just before the positions it compares, not the one after them",
        PROPERTIES, "changed[:, later] = (changed[:, later] + 1) % V",
        "changed[:, later - 1] = (changed[:, later - 1] + 1) % V",
        CHECK_TEST + "test_the_example_file_passes_every_check_and_its_script_never_runs"),
    Bug("causal-check-never-cuts", "checks",
        "the causality check only changes later tokens, never cuts them off: positions that depend on T pass",
        PROPERTIES, "cut = largest_change(logits_of(model, idx[:, :later]), full[:, :later])", "cut = 0.0",
        CHECK_TEST + "test_each_planted_bug_fails_its_check[positions-reversed]"),
    Bug("batch-check-eval-only", "checks",
        "batch independence is checked in eval mode only: statistics over the batch in training pass",
        PROPERTIES, 'for mode in ("eval", "train"):', 'for mode in ("eval",):',
        CHECK_TEST + "test_each_planted_bug_fails_its_check[batchnorm-over-the-batch]"),
    Bug("eval-check-at-the-files-dropout", "checks",
        "eval determinism is checked at the file's own dropout: at dropout 0 dropout left on in eval passes",
        PROPERTIES, "p = subject.dropout if subject.dropout > 0 else EVAL_DROPOUT", "p = subject.dropout",
        CHECK_TEST + "test_each_planted_bug_fails_its_check[dropout-on-in-eval]"),
    Bug("positions-check-same-order", "checks",
        "the positions check compares the first position with itself: every model that reads context fails it",
        PROPERTIES, "logits[:, 1:], logits[:, :1].expand_as(logits[:, 1:])",
        "logits[:, :1], logits[:, :1].expand_as(logits[:, :1])",
        CHECK_TEST + "test_the_example_file_passes_every_check_and_its_script_never_runs"),
)

# The model bugs above by the property of gptlab/properties.py (the check of `gptlab check`) that shows their
# symptom in any model, with the val loss each gave in docs/mutations.md's measurement (lecture preset, 1000
# steps, seed 1337; unmodified: 2.248).
PROPERTY_OF: dict[str, tuple[str, str]] = {
    "mask-removed": ("causal", "0.313"),
    "mask-off-by-one": ("causal", "0.312"),
    "rows-mask-off-by-one": ("causal", "0.313"),
    "softmax-over-queries": ("causal", "0.470"),
    "fused-not-causal": ("causal", "0.312"),
    "heads-view-without-transpose": ("causal", "0.355"),
    "heads-concat-without-transpose": ("causal", "0.402"),
    "rmsnorm-over-time": ("causal", "0.580"),
    "fused-dropout-in-eval": ("eval-deterministic", "2.365"),
    "values-skipped": ("gradients", "2.285"),
    "norm-skipped-before-attention": ("gradients", "2.344"),
    "final-norm-forgotten": ("gradients", "2.473"),
    "attention-projection-skipped": ("gradients", "2.273"),
    "no-position-embedding": ("positions", "2.294"),
    "softmax-before-cross-entropy": ("learns", "3.941"),
    "init-std-one": ("init-loss", "3.310"),
    "residual-dropped": ("trains", "3.314"),
    "ffn-without-nonlinearity": ("trains", "2.322"),
    "crop-keeps-the-start": ("generate", "2.248"),
}


# -- patching a copy ------------------------------------------------------------------------------------------


class PatchError(Exception):
    """A bug's original text is not in its file exactly once (or the file is missing)."""


def copy_project(source: Path, dest: Path) -> Path:
    """``COPIED`` from ``source`` into ``dest`` (created), without caches; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")
    for name in COPIED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, dest / name)
    return dest


def occurrences(bug: Bug, root: Path) -> int:
    path = root / bug.file
    return path.read_text(encoding="utf-8").count(bug.original) if path.is_file() else 0


def patch_problem(bug: Bug, root: Path) -> str | None:
    """Why ``bug`` cannot be applied to ``root`` (None: it can)."""
    if not (root / bug.file).is_file():
        return f"{bug.file}: no such file"
    count = occurrences(bug, root)
    if count != 1:
        return f"{bug.file}: the original text occurs {count} times (must be exactly once)"
    if bug.original == bug.replacement:
        return "the replacement is the original"
    return None


@contextmanager
def applied(bug: Bug, root: Path) -> Iterator[None]:
    """``bug`` patched into the copy at ``root`` for the duration; the file's text is restored afterwards."""
    problem = patch_problem(bug, root)
    if problem:
        raise PatchError(problem)
    path = root / bug.file
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(bug.original, bug.replacement), encoding="utf-8")
    try:
        yield
    finally:
        path.write_text(text, encoding="utf-8")


# -- running pytest (and training) on a copy -------------------------------------------------------------------


def child_env(root: Path, report: Path | None = None) -> dict[str, str]:
    """The copy's package first on the path; no bytecode written (a same-size patch written within the second
    of its original would otherwise load the stale .pyc); torch on one thread, as the suite's conftest sets."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(REPORT_ENV, None)
    if report is not None:
        env[REPORT_ENV] = str(report)
    return env


@dataclass
class Outcome:
    """One child process: its exit code (None: timed out), its output's tail and how long it took."""

    returncode: int | None
    output: str
    seconds: float


# The process groups of the children running now (each child starts its own session), killed on an interrupt;
# once STOP is set no new child starts.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()
STOP = threading.Event()


@contextmanager
def live(pgid: int) -> Iterator[None]:
    with _LIVE_LOCK:
        _LIVE.add(pgid)
    try:
        yield
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(pgid)


def stop_children() -> None:
    """Start no more children and kill the running ones (by their process group ids)."""
    STOP.set()
    with _LIVE_LOCK:
        for pgid in _LIVE:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt


def run_child(args: Sequence[str], root: Path, env: dict[str, str], timeout: float) -> Outcome:
    """``python ARGS`` in ``root``; on timeout the child's whole process group (it may have spawned workers) is
    killed."""
    _check_stop()
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    with live(process.pid):
        try:
            out, _ = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
            code = None
    _check_stop()
    return Outcome(code, out[-4000:], time.perf_counter() - start)


@dataclass
class Failure:
    test: str   # the node id, e.g. tests/test_data.py::test_batches_shapes_and_shift
    when: str   # setup, call, teardown or collect
    error: str  # the exception's type, e.g. AssertionError


@dataclass
class PytestRun:
    outcome: Outcome
    failures: list[Failure]
    imported_from: str | None  # the gptlab package the run imported

    @property
    def failed(self) -> list[str]:
        return [f.test for f in self.failures]

    @property
    def timed_out(self) -> bool:
        return self.outcome.returncode is None

    @property
    def found_nothing(self) -> bool:
        """pytest's exit codes 4 (usage: e.g. no such test) and 5 (no test collected)."""
        return self.outcome.returncode in (4, 5)


# The fork server: a Python process in the copy that has imported these libraries (never gptlab) and forks one
# fresh child per pytest run, which imports gptlab and the tests from the (patched) copy. Importing torch and
# scipy takes ~3 s of a ~4 s run of one test on this 2-core machine; forked, a run starts in a fraction of that.
PRELOAD = ("torch", "numpy", "scipy.stats", "pandas", "yaml", "typer", "rich", "pytest")
SERVER = r"""
import json, os, sys
for name in sys.argv[1:]:
    __import__(name)
if any(m == "gptlab" or m.startswith("gptlab.") for m in sys.modules):
    sys.exit("the fork server must not import gptlab: its children import it from the patched copy")
import pytest
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.environ.update(request["env"])
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        try:
            code = int(pytest.main(request["args"]))
        except BaseException:
            code = 3
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class ForkServer:
    """Runs pytest in the copy at ``root``, each run in a child forked from a server with ``preload`` imported."""

    def __init__(self, root: Path, preload: Sequence[str] = PRELOAD, start_timeout: float = 120) -> None:
        self.root = root
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, *preload], cwd=root, env=child_env(root),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next(start_timeout, "ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # the server ended

    def _next(self, timeout: float | None, key: str) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if not line:
            raise RuntimeError(f"the fork server in {self.root} ended (exit code {self.process.wait()})")
        return json.loads(line)[key]

    def run(self, args: Sequence[str], env: dict[str, str], timeout: float) -> Outcome:
        """``pytest ARGS`` in a forked child; on timeout its process group is killed."""
        assert self.process.stdin is not None
        _check_stop()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gptlab-catalogue-log-") as tmp:
            log = Path(tmp) / "pytest.log"
            self.process.stdin.write(json.dumps({"args": list(args), "env": env, "log": str(log)}) + "\n")
            self.process.stdin.flush()
            pid = self._next(60, "pid")
            with live(pid):
                code = self._next(timeout, "code")
                if code is None:
                    os.killpg(pid, signal.SIGKILL)
                    self._next(60, "code")
            _check_stop()
            output = log.read_text(encoding="utf-8", errors="replace")[-4000:] if log.is_file() else ""
        return Outcome(code, output, time.perf_counter() - start)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_pytest(root: Path, args: Sequence[str], timeout: float, server: ForkServer | None = None) -> PytestRun:
    """pytest in the copy at ``root`` with ``PYTEST_ARGS`` + ``args`` (forked from ``server``, or in a new
    ``python -m pytest``); raises when the run imported gptlab from anywhere but the copy."""
    with tempfile.TemporaryDirectory(prefix="gptlab-catalogue-report-") as tmp:
        report = Path(tmp) / "report.jsonl"
        if server is None:
            outcome = run_child(["-m", "pytest", *PYTEST_ARGS, *args], root, child_env(root, report), timeout)
        else:
            outcome = server.run([*PYTEST_ARGS, *args], {REPORT_ENV: str(report)}, timeout)
        lines = report.read_text(encoding="utf-8").splitlines() if report.is_file() else []
    failures, imported = [], None
    for line in lines:
        item = json.loads(line)
        if "gptlab" in item:
            imported = item["gptlab"]
        else:
            failures.append(Failure(item["test"], item["when"], item["error"]))
    if imported is not None and not is_inside(Path(imported), root):
        raise RuntimeError(f"pytest in {root} imported gptlab from {imported}, not from the copy")
    return PytestRun(outcome, failures, imported)


def is_inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def imported_package(root: Path) -> Path:
    """Where ``import gptlab`` resolves in a child run in ``root`` (the check that the copy is what runs)."""
    out = run_child(["-c", "import gptlab; print(gptlab.__file__)"], root, child_env(root), 120)
    if out.returncode != 0:
        raise RuntimeError(f"cannot import gptlab in {root}: {out.output.strip()[-500:]}")
    return Path(out.output.strip().splitlines()[-1])


def named_failed(run: PytestRun, test: str) -> bool:
    """Whether ``test`` (a node id; a parametrized function's name covers all its cases) failed in ``run``."""
    return any(failed == test or failed.startswith(test + "[") for failed in run.failed)


# -- the check of one entry ------------------------------------------------------------------------------------

KILLED = "killed"
BY_OTHERS = "killed by other tests only"
SURVIVED = "survived"
NOT_FOUND = "original not found once"
NAMED_MISSING = "named test not found"
TIMEOUT = "timeout"
PREEXISTING = "undetermined: the tests that failed fail without the bug too"


@dataclass
class EntryResult:
    bug: Bug
    status: str
    named_failed: bool = False
    failing: list[str] = field(default_factory=list)  # every failing test seen, in order
    error: str = ""          # the named test's exception type, when it failed
    ran: str = ""            # what was run: "named test", "named test, then the suite", ...
    seconds: float = 0.0
    message: str = ""
    val_loss: float | None = None
    measure_note: str = ""   # "diverged at step N", "crashed: ...", or ""
    preexisting: list[str] = field(default_factory=list)  # failing tests that fail without the bug too

    @property
    def ok(self) -> bool:
        return self.status == KILLED and self.named_failed

    @property
    def first_failing(self) -> str:
        return self.failing[0] if self.failing else ""


def check_entry(bug: Bug, root: Path, full: bool = False, named_timeout: float = NAMED_TIMEOUT_S,
                suite_timeout: float = SUITE_TIMEOUT_S, server: ForkServer | None = None) -> EntryResult:
    """Patch ``bug`` into the copy at ``root``, find which tests fail, revert."""
    start = time.perf_counter()
    try:
        with applied(bug, root):
            result = _check_patched(bug, root, full, named_timeout, suite_timeout, server)
    except PatchError as err:
        result = EntryResult(bug, NOT_FOUND, message=str(err))
    others = [t for t in result.failing if t != bug.test and not t.startswith(bug.test + "[") and "::" in t]
    if others:  # run again without the bug: a test failing there too says nothing about the bug
        unpatched = run_pytest(root, others, suite_timeout, server)
        if unpatched.failures:
            result.preexisting = unpatched.failed
            result.failing = [t for t in result.failing if t not in unpatched.failed]
            result.message = "failing without the bug too: " + ", ".join(unpatched.failed)
            if result.status == BY_OTHERS and not result.failing:
                result.status = PREEXISTING
    result.seconds = time.perf_counter() - start
    return result


def _check_patched(bug: Bug, root: Path, full: bool, named_timeout: float, suite_timeout: float,
                   server: ForkServer | None) -> EntryResult:
    failing: list[str] = []
    ran: list[str] = []

    def result(status: str, named: bool = False, error: str = "", message: str = "") -> EntryResult:
        return EntryResult(bug, status, named, failing, error, ", then ".join(ran), message=message)

    if full:
        suite = run_pytest(root, SUITE_ARGS, suite_timeout, server)
        ran.append("the suite (-x)")
        if suite.timed_out:
            return result(TIMEOUT, message=f"the suite ran past {suite_timeout:.0f} s")
        failing += suite.failed
        if named_failed(suite, bug.test):
            return result(KILLED, True, _error_of(suite, bug.test))
    named = run_pytest(root, ["-x", bug.test], named_timeout, server)
    ran.append("the named test")
    if named.timed_out:
        return result(TIMEOUT, message=f"the named test ran past {named_timeout:.0f} s")
    if named.found_nothing and not named.failures:
        return result(NAMED_MISSING, message=named.outcome.output.strip()[-300:])
    failing += [test for test in named.failed if test not in failing]
    if named_failed(named, bug.test):
        return result(KILLED, True, _error_of(named, bug.test))
    if named.failures:  # e.g. the test module fails to import: the named test never ran
        return result(BY_OTHERS, message="the named test did not run: "
                                         + ", ".join(f"{f.test} ({f.when})" for f in named.failures))
    if not full:
        suite = run_pytest(root, SUITE_ARGS, suite_timeout, server)
        ran.append("the suite (-x)")
        if suite.timed_out:
            return result(TIMEOUT, message=f"the suite ran past {suite_timeout:.0f} s")
        failing += suite.failed
    return result(BY_OTHERS if failing else SURVIVED)


def _error_of(run: PytestRun, test: str) -> str:
    return next((f.error for f in run.failures if f.test == test or f.test.startswith(test + "[")), "")


# -- measuring what a bug does to the loss ---------------------------------------------------------------------


@dataclass
class Measurement:
    val_loss: float | None
    note: str  # "", "diverged at step N" or "crashed: <last line>"
    seconds: float


def measure(root: Path, sets: Sequence[str] = (), seed: int = MEASURE_SEEDS[0],
            timeout: float = MEASURE_TIMEOUT_S) -> Measurement:
    """``gptlab train`` (``MEASURE_COMMAND`` + ``sets`` + the seed) on the copy at ``root``: its final val loss."""
    with tempfile.TemporaryDirectory(prefix="gptlab-catalogue-train-") as tmp:
        extra = [a for s in (*sets, f"train.seed={seed}") for a in ("--set", s)]
        out = run_child(["-m", "gptlab.cli", *MEASURE_COMMAND, *extra, "--out", tmp], root, child_env(root), timeout)
        summary = Path(tmp) / "result.json"
        if out.returncode is None:
            return Measurement(None, f"timed out after {timeout:.0f} s", out.seconds)
        if out.returncode != 0 or not summary.is_file():
            last = (out.output.strip().splitlines() or ["(no output)"])[-1]
            return Measurement(None, f"crashed: {last[:120]}", out.seconds)
        raw = json.loads(summary.read_text(encoding="utf-8"))
    if raw.get("diverged_at") is not None:
        return Measurement(None, f"diverged at step {raw['diverged_at']}", out.seconds)
    return Measurement(float(raw["final_val_loss"]), "", out.seconds)


def measured_bug(bug: Bug, root: Path) -> Measurement:
    try:
        with applied(bug, root):
            return measure(root, bug.measure_set)
    except PatchError as err:
        return Measurement(None, str(err), 0.0)


# -- the whole catalogue ---------------------------------------------------------------------------------------


def select(ids: Sequence[str] | None, catalogue: Sequence[Bug] = CATALOGUE) -> list[Bug]:
    """The entries with these ids (all when None); an unknown id raises ValueError naming the known ones."""
    if not ids:
        return list(catalogue)
    known = {bug.id: bug for bug in catalogue}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(f"unknown catalogue id {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[i] for i in ids]


def check_catalogue(catalogue: Sequence[Bug]) -> list[str]:
    """Problems of the catalogue as data: duplicate ids, tests not named as tests/FILE.py::NAME."""
    problems = []
    ids = [bug.id for bug in catalogue]
    problems += [f"{i}: duplicate id" for i in sorted({i for i in ids if ids.count(i) > 1})]
    for bug in catalogue:
        path, sep, name = bug.test.partition("::")
        if not (sep and path.startswith("tests/") and path.endswith(".py") and name.startswith("test_")):
            problems.append(f"{bug.id}: test {bug.test!r} is not tests/FILE.py::test_NAME")
    return problems


@dataclass
class Baseline:
    sets: tuple[str, ...]
    seed: int
    measurement: Measurement


@dataclass
class Slot:
    """A worker's copy of the project, and its fork server (None: a new ``python -m pytest`` per run)."""

    root: Path
    server: ForkServer | None


def run_all(bugs: Sequence[Bug], jobs: int, full: bool, do_measure: bool, workdir: Path,
            on_done: Callable[[EntryResult], None] | None = None, source: Path = PROJECT_ROOT,
            preload: bool = True) -> tuple[list[EntryResult], list[Baseline]]:
    """Check (and measure) every bug, ``jobs`` at once, each worker on its own copy of the project."""
    jobs = max(1, min(jobs, len(bugs)))
    slots: queue.Queue[Slot] = queue.Queue()
    servers = []
    try:
        for i in range(jobs):
            root = copy_project(source, workdir / f"copy{i}")
            package = imported_package(root)
            if not is_inside(package, root):
                raise RuntimeError(f"a child run in {root} imports gptlab from {package}, not from the copy")
            server = ForkServer(root) if preload else None
            servers += [server] if server else []
            slots.put(Slot(root, server))
        return _run_on(slots, bugs, full, do_measure, on_done)
    finally:
        for server in servers:
            server.close()


def _run_on(slots: queue.Queue[Slot], bugs: Sequence[Bug], full: bool, do_measure: bool,
            on_done: Callable[[EntryResult], None] | None) -> tuple[list[EntryResult], list[Baseline]]:
    def on_a_slot(work: Callable[[Slot], Any]) -> Any:
        slot = slots.get()
        try:
            return work(slot)
        finally:
            slots.put(slot)

    def entry(bug: Bug) -> EntryResult:
        result: EntryResult = on_a_slot(lambda slot: check_entry(bug, slot.root, full, server=slot.server))
        if do_measure and result.status != NOT_FOUND:
            m: Measurement = on_a_slot(lambda slot: measured_bug(bug, slot.root))
            result.val_loss, result.measure_note = m.val_loss, m.note
        return result

    def baseline(sets: tuple[str, ...], seed: int) -> Measurement:
        return on_a_slot(lambda slot: measure(slot.root, sets, seed))

    settings = sorted({(), *(bug.measure_set for bug in bugs)}) if do_measure else []
    wanted = [(sets, seed) for sets in settings for seed in (MEASURE_SEEDS if not sets else MEASURE_SEEDS[:1])]
    pool = ThreadPoolExecutor(slots.qsize())
    try:
        base_futures = {pool.submit(baseline, sets, seed): (sets, seed) for sets, seed in wanted}
        futures = {pool.submit(entry, bug): bug for bug in bugs}
        for future in as_completed(futures):
            if on_done is not None:
                on_done(future.result())
        baselines = [Baseline(*base_futures[f], f.result()) for f in base_futures]
    except BaseException:  # Ctrl-C: drop what has not started, kill what runs
        pool.shutdown(wait=False, cancel_futures=True)
        stop_children()
        raise
    pool.shutdown()
    order = {bug.id: i for i, bug in enumerate(bugs)}
    results = sorted((f.result() for f in futures), key=lambda r: order[r.bug.id])
    return results, baselines


# -- reporting -------------------------------------------------------------------------------------------------


def result_text(result: EntryResult) -> str:
    if result.ok:
        return f"killed ({result.error})" if result.error else "killed"
    return result.status


def loss_text(result: EntryResult) -> str:
    if result.val_loss is not None:
        return f"{result.val_loss:.4f}"
    return result.measure_note or "-"


def format_table(results: Sequence[EntryResult], with_loss: bool = False) -> str:
    """One line per entry: id, area, bug, named test, result, first failing test (and the val loss)."""
    header = ["id", "area", "bug", "named test", "result", "first failing test"] + (["val loss"] if with_loss else [])
    rows = [[r.bug.id, r.bug.area, r.bug.bug, r.bug.test, result_text(r),
             "(the named test)" if r.first_failing == r.bug.test else r.first_failing or "-"]
            + ([loss_text(r)] if with_loss else []) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_lines(results: Sequence[EntryResult], seconds: float, jobs: int, full: bool,
                  preload: bool = True) -> list[str]:
    counts: dict[str, int] = {}
    for r in results:
        key = "killed by its named test" if r.ok else r.status
        counts[key] = counts.get(key, 0) + 1
    how = ("each entry: the default test selection (-x) first, then its named test where the suite stopped before it"
           if full else "each entry: its named test alone; the default selection (-x, less "
                        "tests/test_mutation_tool.py) only where the named test passed")
    processes = ("each pytest run forked from a server that imported torch, scipy, pandas (not gptlab)" if preload
                 else "each pytest run a new python -m pytest")
    lines = [f"{len(results)} entries: " + ", ".join(f"{n} {what}" for what, n in counts.items()),
             f"{how}; {processes}; {jobs} at once; total time {seconds:.0f} s"]
    preexisting = sorted({t for r in results for t in r.preexisting})
    if preexisting:
        lines.append(f"failing without any bug (not counted against an entry): {', '.join(preexisting)}")
    for r in results:
        if not r.ok:
            detail = f" ({r.message})" if r.message else ""
            failing = f"; failing: {', '.join(r.failing[:5])}" if r.failing else ""
            lines.append(f"NOT OK {r.bug.id}: {r.status}{detail}{failing}")
    return lines


def baseline_lines(baselines: Sequence[Baseline]) -> list[str]:
    lines = []
    for b in baselines:
        m = b.measurement
        value = f"{m.val_loss:.4f}" if m.val_loss is not None else m.note
        lines.append(f"baseline{' ' + ' '.join(b.sets) if b.sets else ''} seed {b.seed}: val loss {value} "
                     f"({m.seconds:.0f} s)")
    plain = [b.measurement.val_loss for b in baselines if not b.sets and b.measurement.val_loss is not None]
    if len(plain) > 1:
        lines.append(f"seed noise of the plain baseline over {len(plain)} seeds: max - min = "
                     f"{max(plain) - min(plain):.4f}")
    return lines


def markdown_table(results: Sequence[EntryResult], baselines: Sequence[Baseline]) -> str:
    """The docs' table: each bug, the test that kills it, its val loss after 1000 steps against the unmodified
    run with the same settings (seed ``MEASURE_SEEDS[0]``) and the difference."""
    base = {b.sets: b.measurement.val_loss for b in baselines if b.seed == MEASURE_SEEDS[0]}
    lines = ["| # | the bug | file | killed by | val loss | baseline | difference |",
             "| ---: | --- | --- | --- | ---: | ---: | ---: |"]
    for i, r in enumerate(results, 1):
        reference = base.get(r.bug.measure_set)
        ref = f"{reference:.3f}" if reference is not None else "-"
        if r.bug.measure_set:
            ref += f" ({', '.join(r.bug.measure_set)})"
        value = f"{r.val_loss:.3f}" if r.val_loss is not None else r.measure_note or "-"
        if r.val_loss is None or reference is None:
            delta = "-"
        else:
            delta = "identical" if r.val_loss == reference else f"{r.val_loss - reference:+.3f}"
        path, _, name = r.bug.test.partition("::")
        killed = f"`{path.removeprefix('tests/')}::{name}`" + ("" if r.ok else f" **{r.status}**")
        lines.append(f"| {i} | `{r.bug.id}` ({r.bug.area}): {r.bug.bug} | `{r.bug.file}` | {killed} | {value} | "
                     f"{ref} | {delta} |")
    return "\n".join(lines)


def main(ids: Sequence[str] | None = None, jobs: int = 2, full: bool = False, do_measure: bool = False,
         markdown: bool = False, preload: bool = True) -> int:
    """The ``--catalogue`` command: 0 when every entry is killed by its named test, 1 otherwise."""
    problems = check_catalogue(CATALOGUE)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    bugs = select(ids)
    STOP.clear()
    start = time.perf_counter()
    done = [0]

    def progress(result: EntryResult) -> None:
        done[0] += 1
        loss = f", val loss {loss_text(result)}" if do_measure else ""
        print(f"[{done[0]}/{len(bugs)}] {result.bug.id}: {result_text(result)} ({result.seconds:.1f} s{loss})",
              flush=True)

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # a CI job cancelled: stop the children and clean up as on Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with tempfile.TemporaryDirectory(prefix="gptlab-catalogue-") as tmp:
            results, baselines = run_all(bugs, jobs, full, do_measure, Path(tmp), progress, preload=preload)
    except KeyboardInterrupt:
        print("interrupted: the running checks were stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - start
    print()
    print(format_table(results, with_loss=do_measure))
    print()
    if do_measure:
        print("\n".join(baseline_lines(baselines)))
        if markdown:
            print()
            print(markdown_table(results, baselines))
        print()
    print("\n".join(summary_lines(results, seconds, max(1, min(jobs, len(bugs))), full, preload)))
    return 0 if all(r.ok for r in results) else 1


# -- the pytest plugin of the child runs (loaded with -p gptlab.devtools.catalogue) ---------------------------


def _report(item: dict[str, str]) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(item) + "\n")


_ERRORS: dict[tuple[str, str], str] = {}  # (node id, phase) -> the exception's type name, from makereport


def pytest_runtest_makereport(item: Any, call: Any) -> None:
    if call.excinfo is not None:
        _ERRORS[(item.nodeid, call.when)] = call.excinfo.typename


def pytest_sessionstart(session: Any) -> None:
    import gptlab

    _report({"gptlab": str(Path(gptlab.__file__).resolve())})


def pytest_runtest_logreport(report: Any) -> None:
    if report.failed:
        _report({"test": report.nodeid, "when": report.when, "error": _ERRORS.get((report.nodeid, report.when), "")})


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _report({"test": report.nodeid or "<collection>", "when": "collect", "error": "collection error"})
