"""The stopping rule of `--until-settled`: its looks and levels, that peeking after every round keeps the false
verdicts at or below the level (simulated), what it spends when there is an effect, and the replay of a grid's
claims look by look."""

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from gptlab.claims import CONTRADICTED, HOLDS, OPEN, Claim
from gptlab.errors import GptlabError
from gptlab.grid import load_grid
from gptlab.sequential import Design, involved, settle, spent, stopping_look
from gptlab.stats import ALPHA

EXPERIMENTS = 10_000
DESIGN = Design(first=5, step=5, max_seeds=40)  # the shipped grids' 5 seeds, rounds of 5, up to 40


def welch_p_by_look(a: np.ndarray, b: np.ndarray, looks: list[int]) -> np.ndarray:
    """Two-sided Welch p-values of mean(a) - mean(b) on each look's first n seeds: shape (looks, experiments)."""
    out = []
    for n in looks:
        va, vb = a[:, :n].var(axis=1, ddof=1) / n, b[:, :n].var(axis=1, ddof=1) / n
        t_stat = (a[:, :n].mean(axis=1) - b[:, :n].mean(axis=1)) / np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
        out.append(2 * student_t.sf(np.abs(t_stat), df))
    return np.array(out)


def simulate(effect: float, design: Design = DESIGN, levels=None, seed: int = 0):
    """EXPERIMENTS sequential experiments of a claim `a is worse than b` with a true difference of ``effect``
    seed-to-seed standard deviations: the share that ends holds, contradicted, and the mean seeds spent per variant."""
    rng = np.random.default_rng(seed)
    a = rng.normal(effect, 1.0, (EXPERIMENTS, design.max_seeds))
    b = rng.normal(0.0, 1.0, (EXPERIMENTS, design.max_seeds))
    looks = design.looks()
    stop = stopping_look(welch_p_by_look(a, b, looks), design.levels() if levels is None else levels)
    stopped = stop >= 0
    direction = np.array([a[i, :looks[k]].mean() > b[i, :looks[k]].mean() if k >= 0 else False
                          for i, k in enumerate(stop)])
    seeds = np.where(stopped, np.array(looks)[stop], design.max_seeds)
    return float((stopped & direction).mean()), float((stopped & ~direction).mean()), float(seeds.mean())


def test_the_looks_run_from_the_grids_seeds_to_the_budget_and_their_levels_sum_to_alpha():
    assert DESIGN.looks() == [5, 10, 15, 20, 25, 30, 35, 40]
    assert Design(5, 5, 12).looks() == [5, 10, 12] and Design(5, 5, 5).looks() == [5]
    levels = DESIGN.levels()
    assert math.isclose(sum(levels), ALPHA) and all(x > 0 for x in levels)
    assert levels == sorted(levels, reverse=True)  # Pocock-type: spent early, a little less at each look
    assert math.isclose(levels[0], ALPHA * math.log(1 + (math.e - 1) * 5 / 40))
    assert math.isclose(spent(1.0), ALPHA) and spent(0.0) == 0 and spent(2.0) == spent(1.0)
    assert math.isclose(spent(0.5, alpha=0.1), 0.1 * math.log(1 + (math.e - 1) / 2))


def test_a_design_refuses_a_budget_below_its_first_look_and_a_first_look_of_one_seed():
    with pytest.raises(GptlabError, match="--max-seeds = 4 is not allowed; must be at least the grid's 5 seeds"):
        Design(5, 5, 4)
    with pytest.raises(GptlabError, match="at least 2 seeds at the first look"):
        Design(1, 1, 10)
    assert Design(2, 1, 2).looks() == [2]
    assert Design.from_dict(DESIGN.to_dict()) == DESIGN
    with pytest.raises(GptlabError, match="not a design of looks"):
        Design.from_dict({"first": 5, "step": "5", "max_seeds": 40})


def test_stopping_look_is_the_first_look_below_its_level_and_minus_one_when_none_is():
    levels = [0.01, 0.02, 0.03]
    p = np.array([[0.5, 0.005, 0.5, 0.01], [0.01, 0.5, 0.5, 0.5], [0.001, 0.001, 0.5, 0.029]])
    assert stopping_look(p, levels).tolist() == [1, 0, -1, 2]
    assert stopping_look(np.array([0.5, 0.015]), [0.01, 0.02]).tolist() == 1  # one experiment


def test_peeking_after_every_round_keeps_false_verdicts_at_or_below_the_level():
    """10,000 experiments with no effect, 8 looks each: the rule finds a false "holds" or "contradicted" in at most
    ALPHA of them; testing every look at ALPHA (forgetting the looks already taken) finds far more."""
    holds, contradicted, seeds = simulate(effect=0.0)
    print(f"\nno effect, {EXPERIMENTS:,} experiments: false holds {holds:.4f}, false contradicted {contradicted:.4f}, "
          f"false verdicts {holds + contradicted:.4f} (level {ALPHA}); seeds spent {seeds:.1f} per variant")
    assert holds + contradicted <= ALPHA
    assert holds > 0.005 and contradicted > 0.005  # two-sided: both errors are possible, and counted
    naive_holds, naive_contradicted, _ = simulate(effect=0.0, levels=[ALPHA] * len(DESIGN.looks()))
    assert naive_holds + naive_contradicted > 2.5 * ALPHA
    cumulative = [spent(n / DESIGN.max_seeds) for n in DESIGN.looks()]  # each look at all the level spent so far
    assert sum(simulate(effect=0.0, levels=cumulative)[:2]) > ALPHA


def test_with_an_effect_the_rule_stops_early_and_settles_the_claim_the_right_way():
    holds, contradicted, seeds = simulate(effect=1.0)
    print(f"\neffect 1 sd, {EXPERIMENTS:,} experiments: holds {holds:.4f}, contradicted {contradicted:.4f}; "
          f"expected seeds spent {seeds:.1f} per variant of {DESIGN.max_seeds}")
    assert holds > 0.9 and contradicted < 0.001
    assert 10 < seeds < 22  # most stop at the second to fourth look
    small_holds, _, small_seeds = simulate(effect=0.5)
    print(f"effect 0.5 sd: holds {small_holds:.4f}; expected seeds spent {small_seeds:.1f} per variant")
    assert 0.25 < small_holds < holds and seeds < small_seeds < DESIGN.max_seeds  # half the effect: less often settled, later


def losses(mean: float, n: int, spread: float = 0.01) -> list[float]:
    """n values with the given mean and a fixed, symmetric spread (a made-up variant's final val losses)."""
    offsets = np.linspace(-1, 1, n) * spread
    return [mean + float(x) for x in offsets]


def test_settle_replays_the_looks_and_keeps_each_claim_at_the_look_it_settled():
    claims = [Claim("wide", kind="worse"), Claim("tiny", kind="worse"), Claim("wide", near=2.0, within=0.05)]
    data = {"base": losses(2.0, 15), "wide": losses(2.1, 15), "tiny": losses(2.0005, 15, spread=0.02)}
    out = settle(claims, data, "base", DESIGN)
    assert out.looks_taken == 3  # the first look settled claims 1 and 3; claim 2 is still open at 15 seeds
    assert [r.status for r in out.results] == [HOLDS, OPEN, CONTRADICTED] and out.settled_at == [1, None, 1]
    assert out.results[0].seeds == (5, 5) and out.results[0].reason.startswith("look 1 of 8 (5 seeds): adjusted p")
    assert out.results[0].reason.endswith(f"< {DESIGN.levels()[0]:.2g}, the level spent at this look")
    assert out.results[1].seeds == (15, 15)
    assert out.results[1].reason.startswith("look 3 of 8 (15 seeds): adjusted p=")
    assert out.results[1].reason.endswith("; the next look is at 20 seeds")
    assert out.results[1].reason.count(";") == 1  # the fixed design's "about N seeds would settle it" is dropped
    assert out.wanted == {"tiny": 20, "base": 20} and out.open_claims == {"tiny": [2], "base": [2]}


def test_settle_takes_a_look_only_when_every_variant_of_an_open_claim_has_its_seeds():
    claims = [Claim("tiny", kind="worse")]
    data = {"base": losses(2.0, 10), "tiny": losses(2.0005, 9, spread=0.02)}
    out = settle(claims, data, "base", DESIGN)
    assert out.looks_taken == 1 and out.results[0].seeds == (5, 5) and out.wanted == {"tiny": 10, "base": 10}
    early = settle(claims, {"base": losses(2.0, 4), "tiny": losses(2.5, 4)}, "base", DESIGN)
    assert early.looks_taken == 0 and early.results[0].status == OPEN
    assert early.results[0].reason == "the first look needs 5 seeds of each variant"
    assert early.results[0].effect == pytest.approx(0.5) and early.wanted == {"tiny": 5, "base": 5}
    unsure = settle(claims, {"base": losses(2.0, 4), "tiny": losses(2.0005, 4, spread=0.02)}, "base", DESIGN)
    assert unsure.results[0].status == OPEN and unsure.results[0].seeds_needed is None  # the looks decide, not power


def test_settle_stops_when_the_budget_is_spent_or_every_claim_is_settled():
    claims = [Claim("tiny", kind="worse", than="other")]
    spent_out = settle(claims, {"base": losses(2.0, 5), "tiny": losses(2.0, 12, 0.02),
                                "other": losses(2.0, 12, 0.02)}, "base", Design(5, 5, 12))
    assert spent_out.looks_taken == 3 and spent_out.results[0].status == OPEN and spent_out.wanted == {}
    assert spent_out.results[0].reason.endswith("; the budget is spent") and spent_out.results[0].seeds == (12, 12)
    done = settle([Claim("wide", kind="worse")], {"base": losses(2.0, 20), "wide": losses(2.5, 20)}, "base", DESIGN)
    assert done.looks_taken == 1 and done.wanted == {} and done.open_claims == {}


def test_a_claim_involves_its_variant_and_what_it_is_compared_with():
    assert involved(Claim("a", kind="worse"), "base") == ["a", "base"]
    assert involved(Claim("a", kind="same", than="b", within=0.1), "base") == ["a", "b"]
    assert involved(Claim("a", near=2.0, within=0.1), "base") == ["a"]


# -- seeds until settled, end to end with an executor that trains nothing ------------------------------------

GRID = """name: g
preset: bigram
set: {train.max_iters: 10}
grid: {train.lr: [0.01, 0.02, 0.03]}
seeds: [1, 2, 3]
claims:
"""


class MadeUp:
    """An executor whose runs' final val losses are ``means[lr] + noise(seed)``, one job at a time."""

    def __init__(self, means):
        self.means, self.trained = means, []

    def run(self, jobs, on_event, on_done):
        import random

        from gptlab.record import RunRecord

        for job in jobs:
            records = []
            for spec in job.specs:
                self.trained.append((spec.variant, spec.seed))
                loss = self.means[spec.config.train.lr] + random.Random(spec.seed).gauss(0, 0.01)
                records.append(RunRecord(
                    key=spec.key, grid=spec.grid, variant=spec.variant, seed=spec.seed, config=spec.config.to_dict(),
                    status="done", final_val_loss=loss, best_val_loss=loss, final_train_loss=loss, diverged_at=None,
                    history=[{"step": 0, "val_loss": 4.0}], params=1, tokens_per_sec=1.0, wall_time=2.0,
                    device="cpu", torch_version="t", gptlab_version="v", git_commit="c", sample="",
                    created="2000-01-01T00:00:00+00:00"))
            on_done(job, records, None)


def until_settled(tmp_path, claims, means, max_seeds=9, force=False):
    from gptlab.grid import load_grid
    from gptlab.runner import run_until_settled

    path = tmp_path / "g.yaml"
    path.write_text(GRID + "".join(f"  - {c}\n" for c in claims))
    executor, rounds = MadeUp(means), []
    outcome = run_until_settled(load_grid(path), tmp_path / "out", max_seeds, 1, force, None, executor, None,
                                rounds.append)
    return executor, rounds, outcome


def test_seeds_go_in_rounds_to_the_variants_of_open_claims_until_the_budget(tmp_path):
    from gptlab.results import load_grid_runs

    claims = ['{variant: "lr=0.02", is: worse}', '{variant: "lr=0.03", is: worse}']
    executor, rounds, outcome = until_settled(tmp_path, claims, {0.01: 2.0, 0.02: 2.0, 0.03: 2.5})
    assert sorted(executor.trained[:9]) == sorted((f"lr={lr}", s) for lr in (0.01, 0.02, 0.03) for s in (1, 2, 3))
    added = sorted(executor.trained[9:])  # claim 2 settled at look 1; claim 1 (no effect) takes every round
    assert added == sorted((v, s) for v in ("lr=0.01", "lr=0.02") for s in range(4, 10))
    assert [r.added for r in rounds] == [{"lr=0.02": [4, 5, 6], "lr=0.01": [4, 5, 6]},
                                         {"lr=0.02": [7, 8, 9], "lr=0.01": [7, 8, 9]}, {}]
    assert [r.settlement.looks_taken for r in rounds] == [1, 2, 3]
    assert len(outcome.todo) == 21 and len(outcome.finished) == 21 and not outcome.failed
    grid_runs = load_grid_runs(tmp_path / "out" / "g")
    assert grid_runs.grid.seed_counts == {"lr=0.02": 9, "lr=0.01": 9} and grid_runs.grid.design == Design(3, 3, 9)
    assert len(grid_runs.records) == 21 and not grid_runs.missing() and not grid_runs.skipped
    assert [r.status for r in grid_runs.claim_results()] == [OPEN, HOLDS]
    assert grid_runs.claim_results()[1].seeds == (3, 3)
    again, again_rounds, _ = until_settled(tmp_path, claims, {0.01: 2.0, 0.02: 2.0, 0.03: 2.5})
    assert again.trained == [] and [r.settlement.looks_taken for r in again_rounds] == [3]  # it resumes at its records
    forced, _, _ = until_settled(tmp_path, claims, {0.01: 2.0, 0.02: 2.0, 0.03: 2.5}, force=True)
    assert sorted(forced.trained) == sorted(executor.trained)  # every run once more, none twice
    (tmp_path / "fresh").mkdir()
    fresh, fresh_rounds, _ = until_settled(tmp_path / "fresh", claims, {0.01: 2.0, 0.02: 2.0, 0.03: 2.5}, force=True)
    assert fresh.trained == executor.trained and len(fresh_rounds) == 3  # forced: a later round keeps earlier ones


def test_a_claim_restated_to_settle_earlier_keeps_every_seed_on_record_in_the_grid(tmp_path):
    from gptlab.results import load_grid_runs, summarize_grid

    means = {0.01: 2.0, 0.02: 2.0, 0.03: 2.5}
    until_settled(tmp_path, ['{variant: "lr=0.02", is: worse}'], means)  # open to the budget: 9 seeds of two
    runs_dir = tmp_path / "out" / "g" / "runs"
    gap = next(p for p in runs_dir.glob("*.json") if '"seed": 5,' in p.read_text() and '"lr=0.01"' in p.read_text())
    gap.unlink()  # a run missing between seeds on record is trained, not a reason to drop the seeds after it
    executor, rounds, _ = until_settled(tmp_path, ['{variant: "lr=0.03", is: worse}'], means)  # settles at look 1
    assert executor.trained == [("lr=0.01", 5)] and [r.added for r in rounds] == [{}]
    grid_runs = load_grid_runs(tmp_path / "out" / "g")
    assert grid_runs.grid.seed_counts == {"lr=0.01": 9, "lr=0.02": 9}  # the grid's 3 seeds need no count
    assert len(grid_runs.records) == 21 and not grid_runs.skipped and not grid_runs.missing()
    assert grid_runs.settlement(grid_runs.grid.design).settled_at == [1]  # the seeds past look 1 change no verdict
    assert [(r.status, r.seeds) for r in grid_runs.claim_results()] == [(HOLDS, (3, 3))]
    assert {r.variant: r.runs for r in summarize_grid(grid_runs)} == {"lr=0.01": 9, "lr=0.02": 9, "lr=0.03": 3}
    smaller, _, _ = until_settled(tmp_path, ['{variant: "lr=0.03", is: worse}'], means, max_seeds=6)
    narrowed = load_grid_runs(tmp_path / "out" / "g")  # a smaller budget: the seeds past it are outside the design
    assert smaller.trained == [] and narrowed.grid.seed_counts == {"lr=0.01": 6, "lr=0.02": 6}
    assert len(narrowed.records) == 15 and len(narrowed.skipped) == 6


def test_no_round_lowers_a_seed_count_below_the_seeds_on_record(tmp_path):
    from gptlab.results import load_grid_runs
    from gptlab.runner import run_until_settled

    means = {0.01: 2.0, 0.02: 2.0, 0.03: 2.5}
    until_settled(tmp_path, ['{variant: "lr=0.02", is: worse}'], means)  # lr=0.02: 9 seeds; lr=0.03: 3
    path = tmp_path / "g.yaml"
    path.write_text(GRID + '  - {variant: "lr=0.03", is: same, than: "lr=0.02", within: 0.5}\n')  # open throughout
    executor, seen = MadeUp(means), []

    def on_round(done):
        grid_runs = load_grid_runs(tmp_path / "out" / "g")  # the grid.json this round wrote
        seen.append((done.settlement.wanted, grid_runs.grid.seed_counts, len(grid_runs.skipped)))

    run_until_settled(load_grid(path), tmp_path / "out", 9, 1, False, None, executor, None, on_round)
    assert sorted(executor.trained) == [("lr=0.03", s) for s in range(4, 10)]
    assert seen == [({"lr=0.03": 6, "lr=0.02": 6}, {"lr=0.01": 9, "lr=0.02": 9}, 0),
                    ({"lr=0.03": 9, "lr=0.02": 9}, {"lr=0.01": 9, "lr=0.02": 9, "lr=0.03": 6}, 0),
                    ({}, {"lr=0.01": 9, "lr=0.02": 9, "lr=0.03": 9}, 0)]


def test_each_round_trains_with_the_jobs_grouping_and_progress_it_was_given(tmp_path, monkeypatch):
    import gptlab.runner

    calls, real_run_grid = [], gptlab.runner.run_grid

    def recording(grid, out, jobs, force, group_seeds, executor, on_event, kept):
        calls.append((jobs, force, group_seeds, on_event, len(kept)))
        return real_run_grid(grid, out, jobs, force, group_seeds, executor, on_event, kept=kept)

    monkeypatch.setattr(gptlab.runner, "run_grid", recording)
    path = tmp_path / "g.yaml"
    path.write_text(GRID + '  - {variant: "lr=0.02", is: worse}\n')
    events = []
    means = {0.01: 2.0, 0.02: 2.0, 0.03: 2.5}
    gptlab.runner.run_until_settled(load_grid(path), tmp_path / "out", 6, 3, False, False, MadeUp(means),
                                    events.append, None)
    assert calls == [(3, False, False, events.append, 0), (3, False, False, events.append, 9)]


def test_a_look_that_waits_on_a_failed_run_ends_the_rounds(tmp_path):
    class FailsOne(MadeUp):
        def run(self, jobs, on_event, on_done):
            for job in jobs:
                if any(spec.seed == 5 and spec.variant == "lr=0.01" for spec in job.specs):
                    on_done(job, None, "boom")
                else:
                    super().run([job], on_event, on_done)

    from gptlab.runner import run_until_settled

    path = tmp_path / "g.yaml"
    path.write_text(GRID + '  - {variant: "lr=0.02", is: worse}\n')
    rounds = []
    outcome = run_until_settled(load_grid(path), tmp_path / "out", 9, 1, False, None,
                                FailsOne({0.01: 2.0, 0.02: 2.0, 0.03: 2.5}), None, rounds.append)
    assert [r.added for r in rounds] == [{"lr=0.01": [4, 5, 6], "lr=0.02": [4, 5, 6]}, {}]
    assert [r.settlement.wanted for r in rounds] == [{"lr=0.02": 6, "lr=0.01": 6}] * 2
    assert list(outcome.failed.values()) == ["boom"]


def test_a_grid_whose_claims_settle_at_the_first_look_gets_no_seeds(tmp_path):
    executor, rounds, outcome = until_settled(tmp_path, ['{variant: "lr=0.03", is: worse}'],
                                              {0.01: 2.0, 0.02: 2.0, 0.03: 2.5})
    assert len(executor.trained) == 9 and [r.added for r in rounds] == [{}] and len(outcome.jobs) == 9


def test_the_report_says_each_variants_seeds_why_and_the_rule(tmp_path):
    from gptlab.report import render, reproduce_command
    from gptlab.results import load_grid_runs, summarize_grid

    claims = ['{variant: "lr=0.02", is: worse}', '{variant: "lr=0.03", is: worse}']
    until_settled(tmp_path, claims, {0.01: 2.0, 0.02: 2.0, 0.03: 2.5}, max_seeds=6)
    grid_runs = load_grid_runs(tmp_path / "out" / "g")
    text = render(grid_runs)[0].read_text()
    assert "- Seeds until settled: looks planned at 3, 6 seeds per variant, 2 taken;" in text
    assert "  - `lr=0.01`: 6 (claim 1 open; claim 2 settled at look 1)\n" in text
    assert "  - `lr=0.03`: 3 (claim 2 settled at look 1)\n" in text
    assert "Lan-DeMets' Pocock-type alpha spending" in text and "look 2 of 2 (6 seeds): adjusted p=" in text
    assert reproduce_command(grid_runs).endswith(" --until-settled --max-seeds 6 --out " +
                                                 (tmp_path / "out").as_posix())
    rows = {r.variant: (r.runs, r.seeds) for r in summarize_grid(grid_runs)}
    assert rows == {"lr=0.01": (6, 6), "lr=0.02": (6, 6), "lr=0.03": (3, 3)}


def test_ablate_until_settled_adds_rounds_says_why_and_a_plain_ablate_goes_on_so(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gptlab.cli import app

    import gptlab.runner

    class InProcess:
        """Trains each job here, one after another (no worker processes to start: seconds saved)."""

        def __init__(self, jobs=1, cores=None):
            pass

        def run(self, jobs, on_event, on_done):
            for job in jobs:
                on_done(job, gptlab.runner.execute_job(job, on_event), None)

    monkeypatch.setattr(gptlab.runner, "LocalProcessExecutor", InProcess)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text("name: g\npreset: bigram\nset: {train.max_iters: 5, train.eval_interval: 5, "
                                     "train.eval_windows: 8}\ngrid: {train.lr: [0.01, 0.0100001]}\nseeds: [1, 2]\n"
                                     "claims:\n  - {variant: \"lr=0.0100001\", is: better}\n")
    runner = CliRunner()
    first = runner.invoke(app, ["ablate", "g.yaml", "--until-settled", "--max-seeds", "4", "--jobs", "1"],
                          env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    assert "look 1: claim 1 not settled; adding lr=0.0100001: seeds 3-4; lr=0.01: seeds 3-4" in first.output
    readme = tmp_path / "reports" / "g" / "README.md"
    assert "look 2 of 2 (4 seeds): adjusted p=" in readme.read_text() and "the budget is spent" in readme.read_text()
    before = readme.read_text()
    again = runner.invoke(app, ["ablate", "g.yaml"], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "reports/g: its seeds were added until settled (at most 4 a variant): going on so" in again.output
    assert "4 runs (2 variants x 2 seeds), 4 already done, 0 to run; then up to 4 seeds a variant where a claim is " \
           "open" in again.output
    assert readme.read_text() == before
    for args, message in ((["--max-seeds", "4"], "--max-seeds goes with --until-settled"),
                          (["--until-settled", "--max-seeds", "1"],
                           "--max-seeds = 1 is not allowed; must be at least the grid's 2 seeds")):
        refused = runner.invoke(app, ["ablate", "g.yaml", *args])
        assert refused.exit_code == 2 and message in refused.output
