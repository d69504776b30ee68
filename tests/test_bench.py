import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench  # noqa: E402
import reference as ref  # noqa: E402

from gptlab.flops import matmul_peak_flops, mfu  # noqa: E402

CPU = torch.device("cpu")
TEXT = bench.read_text(bench.DATA)[:200_000]


def models():
    torch.manual_seed(0)
    return [ref.LectureGPT(ref.LectureConfig()), ref.NanoGPT(ref.NanoConfig())]


@pytest.mark.parametrize(("model", "tolerance"), list(zip(models(), (0.1, 0.25))), ids=["lecture", "nanogpt"])
def test_reference_models_give_logits_per_position_and_start_near_uniform(model, tolerance):
    """Loss at init ~ ln 65; tied embeddings push nanoGPT's a little above (its own token scores higher)."""
    T = 8
    x, y = torch.randint(0, 65, (4, T)), torch.randint(0, 65, (4, T))
    logits, loss = model(x, y)
    assert logits.shape == (4, T, 65)
    assert loss.item() == pytest.approx(math.log(65), abs=tolerance)
    assert model(x)[1] is None


@pytest.mark.parametrize("model", models(), ids=["lecture", "nanogpt"])
def test_reference_models_are_causal(model):
    x = torch.randint(0, 65, (1, 8))
    changed = x.clone()
    changed[0, 5] = (x[0, 5] + 1) % 65
    a, b = model(x)[0], model(changed)[0]
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)
    assert not torch.allclose(a[0, 5:], b[0, 5:])


def test_lecture_reference_has_one_module_per_head():
    model = ref.LectureGPT(ref.LectureConfig())
    attention = model.blocks[0].sa
    assert len(attention.heads) == 4
    assert attention.heads[0].key.weight.shape == (8, 32) and attention.heads[0].key.bias is None


def test_nanogpt_reference_ties_embeddings_and_shrinks_residual_projections():
    torch.manual_seed(0)
    model = ref.NanoGPT(ref.NanoConfig())
    assert model.transformer.wte.weight is model.lm_head.weight
    block = model.transformer.h[0]
    assert block.attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert block.ln_1.bias is None


def test_nanogpt_schedule_warms_up_then_decays_to_min_lr():
    cfg = ref.NanoConfig()
    assert ref.nano_lr(cfg, 0) == pytest.approx(1e-3 / 101)
    assert ref.nano_lr(cfg, 100) == pytest.approx(1e-3)
    assert ref.nano_lr(cfg, 2000) == pytest.approx(1e-4)
    assert ref.nano_lr(cfg, 1000) > ref.nano_lr(cfg, 1500) > 1e-4


def test_nanogpt_optimizer_decays_matrices_only():
    model = ref.NanoGPT(ref.NanoConfig())
    decay, no_decay = ref.nano_optimizer(model, ref.NanoConfig(), CPU).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert decay["betas"] == (0.9, 0.99)


def tiny_stats(steps, evals):
    return bench.RunStats(steps, 1, evals, wall=1.0, final_val=2.0, peak_mib=1.0, tokens_per_step=100,
                          flops_token=1e6)


def test_ms_per_iter_is_the_median_after_warm_up_and_feeds_tokens_per_sec():
    stats = tiny_stats([1.0] * 2 + [0.01, 0.02, 0.03, 0.02, 0.02, 0.04, 0.02, 0.01], [])
    assert stats.ms_per_iter == pytest.approx(20.0)
    assert stats.tokens_per_sec == pytest.approx(5000.0)
    assert mfu(stats.flops_token, stats.tokens_per_sec, 1e10) == pytest.approx(0.5)


def test_time_to_loss_is_the_first_eval_at_or_below_it():
    stats = tiny_stats([0.01], [(0, 4.1, 1.0), (250, 1.95, 7.0), (500, 1.89, 13.0), (750, 1.80, 19.0)])
    assert stats.time_to(1.89) == 13.0
    assert math.isnan(stats.time_to(1.5))


def test_target_goals_and_ratios():
    assert bench.meets(0.5, "<= 0.5") and not bench.meets(0.51, "<= 0.5")
    assert bench.meets(0.4, ">= 0.40") and not bench.meets(math.nan, "<= 1.0")
    assert math.isnan(bench.ratio(1.0, 0.0)) and bench.ratio(1.0, 4.0) == 0.25


def test_quick_mode_shrinks_both_sides_alike():
    cfg = bench.gptlab_config("cpu", CPU, quick=True, threads=1)
    nano = bench.reference_config("cpu", quick=True)
    assert (cfg.train.max_iters, cfg.train.eval_interval, cfg.train.warmup_iters, cfg.train.threads) == (200, 25, 10, 1)
    assert bench.gptlab_config("lecture", CPU, quick=True, threads=0).train.warmup_iters == 0
    assert (nano.max_iters, nano.eval_interval, nano.lr_decay_iters, nano.warmup_iters) == (200, 25, 200, 10)
    assert bench.reference_config("cpu", quick=False) == ref.NanoConfig()


def test_the_full_comparison_puts_gptlab_on_nanogpts_recipe_and_stops_both_early():
    cfg = bench.gptlab_config("full", CPU, quick=False, threads=0, max_iters=2500)
    nano = bench.reference_config("full", quick=False, max_iters=2500)
    assert (cfg.train.lr, cfg.train.lr_schedule, cfg.train.min_lr, cfg.train.warmup_iters, cfg.train.beta2) == (
        nano.learning_rate, "cosine", nano.min_lr, nano.warmup_iters, nano.beta2)
    assert cfg.train.max_iters == nano.max_iters == 2500 and nano.lr_decay_iters == 5000 and nano.compile


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_runs_report_every_step_and_eval(restore_threads):
    lecture = dataclasses.replace(ref.LectureConfig(), max_iters=20, eval_interval=10, eval_iters=2)
    stats = bench.measured(CPU, 1, lambda clock: bench.run_reference("lecture", lecture, TEXT, CPU, clock))
    assert len(stats.step_times) == 20 and [e[0] for e in stats.evals] == [0, 10, 19]
    assert stats.final_val == stats.evals[-1][1] and stats.peak_mib > 0 and stats.threads == 1

    nano = dataclasses.replace(ref.NanoConfig(), n_layer=1, max_iters=10, eval_interval=5, eval_iters=1)
    stats = bench.measured(CPU, 1, lambda clock: bench.run_reference("cpu", nano, TEXT, CPU, clock))
    assert len(stats.step_times) == 11 and [e[0] for e in stats.evals] == [0, 5, 10]

    cfg = bench.apply_overrides(bench.gptlab_config("lecture", CPU, quick=False, threads=0),
                                {"train.max_iters": 20, "train.eval_interval": 10, "train.eval_windows": 16})
    stats = bench.measured(CPU, 2, lambda clock: bench.run_gptlab(cfg, TEXT, clock))
    assert len(stats.step_times) == 20 and [e[0] for e in stats.evals] == [0, 10, 20]
    assert stats.threads == 1  # automatic: the lecture model is too small for two threads
    assert torch.get_num_threads() == 2  # and the count is restored afterwards


def test_bad_arguments_exit_with_code_2():
    for argv in (["--repeats", "0"], ["--preset", "huge"], ["--threads", "-1"], ["--preset", "full"]):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(argv)
        assert exc.value.code == 2


def test_matmul_peak_is_a_positive_rate():
    assert 1e6 < matmul_peak_flops(size=128, repeats=2) < 1e15


def test_the_gpu_check_dry_runs_every_step_on_a_cpu(tmp_path):
    """benchmarks/gpu_check.py --tiny: every step's command runs (CUDA tests skip), a report is written."""
    import gpu_check  # noqa: E402

    assert gpu_check.main([str(tmp_path), "--tiny"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("| 0 |") == 4 and "not a measurement" in summary
    assert "seeds as one group" in summary and "nanoGPT" in summary
    assert (tmp_path / "reports" / "qk-full" / "README.md").read_text().startswith("# Queries ask")


@pytest.mark.slow
def test_the_hostile_input_script_measures_a_few_refusals():
    """benchmarks/hostile.py runs the real CLI: two bad numbers and a duplicate grid key are refused in one line."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "hostile.py"
    result = subprocess.run([sys.executable, str(script), "--only", "=nan", "--only", "duplicate key"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 good, 0 bad of 3" in result.stdout


def test_profile_step_splits_a_step_into_its_phases_and_times_it_without_the_profiler():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
    out = subprocess.run([sys.executable, str(script), "--steps", "20", "--top", "2", "--eval-windows", "64"], capture_output=True,
                         text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for phase in ("batch", "forward", "backward", "zero_grad", "optimizer", "eval (one)"):
        assert phase in rows, out
    shares = [int(rows[p].split("|")[3].strip().rstrip("%")) for p in ("batch", "forward", "backward", "zero_grad",
                                                                        "optimizer")]
    assert 97 <= sum(shares) <= 103 and shares[1] > 10 and shares[2] > 10  # every training step's time, in phases
    assert "`aten::_fused_adamw_`" in out and "ms/step without the profiler" in out


def test_profile_step_times_the_steps_operators_warm_and_cold():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
    out = subprocess.run([sys.executable, str(script), "--cache", "--steps", "20"], capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| `")]
    assert [row[0].split("`")[1] for row in rows] == ["addmm", "mm", "layer_norm", "relu", "softmax",
                                                      "scaled_dot_product_attention", "cross_entropy"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])  # warm, cold, 4x the tokens: microseconds
    assert "GFLOP/s" in out and "matmul peak on one thread" in out


def run_against(*args):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "against.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_against_times_each_checkout_in_a_process_of_its_own():
    """This checkout against itself: a value for each side, from a fresh process that imports gptlab from it."""
    here = Path(__file__).resolve().parents[1]
    done = run_against(str(here), "--pairs", "1", "--measures", "startup")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"here: {here} at " in done.stdout and f"there: {here} at " in done.stdout
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| start-up")]
    assert all(0.05 < float(cell.split("(")[0]) < 60 for cell in row.split("|")[2:4])  # seconds to import


def test_against_tables_each_sides_values_their_medians_and_the_ratios():
    import against  # noqa: E402

    step = against.Measure("a step", "ms", lambda scratch: [], values={"here": [3.0, 9.0, 4.0], "there": [8.0, 6.0]})
    process = against.Measure("`gptlab train --preset lecture`", "s", lambda scratch: [],
                              values={"here": [10.0], "there": [20.0]})
    lines = against.table([step, process], [40.0, 50.0, 30.0], {"here": Path("a"), "there": Path("b")}).splitlines()
    assert lines[2] == "| a step | 3.00 9.00 4.00 (median 4.00 ms) | 8.00 6.00 (median 7.00 ms) | 0.571 |"
    assert lines[3] == "| `gptlab train --preset lecture` | 10.00 (median 10.00 s) | 20.00 (median 20.00 s) | 0.500 |"
    assert lines[4].endswith("| 40.00 50.00 30.00 (median 40.00 s) | | |")
    assert lines[5] == "| `gptlab train --preset lecture` / the lecture's recipe | 0.250 | 0.500 | 0.500 |"


def test_against_refuses_a_folder_that_is_no_checkout_in_one_line(tmp_path):
    done = run_against(str(tmp_path))
    assert done.returncode == 2
    assert f"there = {tmp_path}: not a checkout of gptlab" in done.stderr.splitlines()[-1]


@pytest.mark.slow
def test_against_runs_every_measure_and_the_grid_cut_short():
    """--quick: the steps, the whole command beside the lecture's recipe, start-up and a grid, once a side."""
    here = Path(__file__).resolve().parents[1]
    done = run_against(str(here), "--quick", "--pairs", "1", "--grid", "lecture")
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")][2:]
    assert [row.split("|")[1].strip().split(",")[0] for row in table] == [
        "`lecture` training step", "`cpu` training step", "`gptlab train --preset lecture`", "start-up: `import gptlab.cli",
        "`gptlab ablate lecture --force`", "the lecture's own recipe", "`gptlab train --preset lecture` / the lecture's recipe"]


@pytest.mark.slow
def test_profile_step_times_the_flat_buffers_against_parameter_by_parameter_with_the_same_loss():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_step.py"
    out = subprocess.run([sys.executable, str(script), "--flat-pairs", "1", "--steps", "10"], capture_output=True,
                         text=True, check=True).stdout
    flat, per_parameter, verdict = out.splitlines()[-3:]
    assert flat.startswith("flat buffers: ms/step ") and per_parameter.startswith("per parameter: ms/step ")
    assert flat.split("final val loss")[1] == per_parameter.split("final val loss")[1]  # the same update
    assert verdict.startswith("flat / per parameter: median ") and verdict.endswith(" of 1 pairs")
