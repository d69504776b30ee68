"""The results of a grid, exactly: each variant's row of the table (counts, spread, comparison, verdict, speed),
what a grid folder's records are taken for or skipped with, and the tables' columns even when empty."""

import json

import pandas as pd
import pytest

from gptlab import results
from gptlab.claims import evaluate
from gptlab.errors import GptlabError
from gptlab.grid import load_grid
from gptlab.record import RunRecord, save_record
from gptlab.results import RunNumbers, VariantRow, variant_rows
from gptlab.runner import write_manifest
from gptlab.stats import compare_to_baseline, summarize


def done(loss, params=10, speed=100.0, train=None):
    return RunNumbers("done", loss, loss - 0.1 if train is None else train, speed, params, None)


def diverged(at, params=10):
    return RunNumbers("diverged", None, None, 50.0, params, at)


def test_each_variants_row_of_the_table():
    runs = {
        "base": [done(2.0, params=11), done(2.1, params=12), done(2.2, speed=200.0)],
        "a": [done(1.5), done(1.6), done(1.55)],
        "half": [done(2.5), diverged(7), diverged(3)],
        "lost": [diverged(5), diverged(9)],
        "none": [],
        "leak": [done(0.5), done(0.6)],
        "nan": [RunNumbers("done", None, None, 1.0, 10, None)],  # a done run without a loss is not finished
    }
    rows = {r.variant: r for r in variant_rows(runs, "base", dict.fromkeys(runs, 3), {"leak"})}
    compared = compare_to_baseline({"base": [2.0, 2.1, 2.2], "a": [1.5, 1.6, 1.55], "half": [2.5]}, "base")
    base = summarize([2.0, 2.1, 2.2])
    assert rows["base"] == VariantRow(
        variant="base", is_baseline=True, leaks_future=False, runs=3, seeds=3, diverged=0, diverged_at=[],
        mean=base.mean, std=base.std, min=2.0, max=2.2, delta=None, p_value=None, significant=False,
        verdict="baseline", train_loss=pytest.approx(base.mean - 0.1), params=11,
        tokens_per_sec=pytest.approx(400 / 3))
    a = summarize([1.5, 1.6, 1.55])
    assert rows["a"] == VariantRow(
        variant="a", is_baseline=False, leaks_future=False, runs=3, seeds=3, diverged=0, diverged_at=[],
        mean=a.mean, std=a.std, min=1.5, max=1.6, delta=compared["a"].delta, p_value=compared["a"].p_value,
        significant=True, verdict=compared["a"].verdict, train_loss=pytest.approx(a.mean - 0.1), params=10,
        tokens_per_sec=100.0)
    assert rows["a"].verdict.startswith("better, ")
    assert rows["half"] == VariantRow(
        variant="half", is_baseline=False, leaks_future=False, runs=1, seeds=3, diverged=2, diverged_at=[3, 7],
        mean=2.5, std=None, min=2.5, max=2.5, delta=compared["half"].delta, p_value=None, significant=False,
        verdict="one seed", train_loss=2.4, params=10, tokens_per_sec=100.0)
    assert rows["lost"] == VariantRow(
        variant="lost", is_baseline=False, leaks_future=False, runs=0, seeds=3, diverged=2, diverged_at=[5, 9],
        mean=None, std=None, min=None, max=None, delta=None, p_value=None, significant=False, verdict="diverged",
        train_loss=None, params=10, tokens_per_sec=None)
    assert rows["none"] == VariantRow(
        variant="none", is_baseline=False, leaks_future=False, runs=0, seeds=3, diverged=0, diverged_at=[],
        mean=None, std=None, min=None, max=None, delta=None, p_value=None, significant=False,
        verdict="not run yet", train_loss=None, params=None, tokens_per_sec=None)
    assert (rows["leak"].leaks_future, rows["leak"].verdict, rows["leak"].delta, rows["leak"].runs) == (
        True, "leaks the future", None, 2)
    assert (rows["nan"].runs, rows["nan"].diverged, rows["nan"].verdict) == (0, 1, "diverged")
    order = [r.variant for r in variant_rows(runs, "base", dict.fromkeys(runs, 3), {"leak"})]
    assert order == ["leak", "a", "base", "half", "lost", "none", "nan"]  # by mean, those without one last


def test_without_the_baselines_runs_nothing_is_compared():
    rows = {r.variant: r for r in variant_rows({"base": [diverged(1)], "a": [done(1.0), done(1.1)]}, "base",
                                               {"base": 2, "a": 2}, set())}
    assert (rows["a"].verdict, rows["a"].delta, rows["a"].p_value) == ("baseline not run", None, None)
    assert rows["base"].verdict == "baseline"


# -- a grid folder ---------------------------------------------------------------------------------------------


def record_of(spec, loss, **changes):
    fields = dict(
        key=spec.key, grid=spec.grid, variant=spec.variant, seed=spec.seed, config=spec.config.to_dict(),
        status="done" if loss is not None else "diverged", final_val_loss=loss, best_val_loss=loss,
        final_train_loss=None if loss is None else loss - 0.1, diverged_at=None if loss is not None else 4,
        history=[{"step": 0, "train_loss": 4.2, "val_loss": 4.3, "lr": 1e-3, "elapsed": 0.0},
                 {"step": 10, "train_loss": 2.0, "val_loss": 2.1, "lr": 5e-4, "elapsed": 1.5}],
        params=100, tokens_per_sec=1000.0, wall_time=1.0, device="cpu", torch_version="t", gptlab_version="v",
        git_commit="c", sample="", created="now")
    fields.update(changes)
    return RunRecord(**fields)


GRID = ("name: g\npreset: bigram\nvariants: [{name: a, set: {train.lr: 0.01}}, "
        "{name: b, set: {model.n_layer: 1, train.lr: 0.01}}, {name: leak, preset: lecture, "
        "set: {model.mask: none, train.lr: 0.01}}]\nseeds: [1]\nbaseline: b\n"
        "claims: [{variant: a, is: worse, than: b}, {variant: leak, is: better}]\n")


def make(tmp_path, text=GRID, losses=(2.0, 1.9, 0.5)):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    grid = load_grid(path)
    folder = tmp_path / "out" / "g"
    write_manifest(grid, folder, "cpu", trained=True)
    for spec, loss in zip(grid.runs(), losses):
        save_record(folder / "runs", record_of(spec, loss))
    return grid, folder


def test_a_grid_folder_knows_what_varies_leaks_and_is_missing(tmp_path):
    grid, folder = make(tmp_path)
    runs = results.load_grid_runs(folder)
    assert runs.varied_keys() == {"model.n_layer", "model.mask"}  # not train.lr, the same in every variant
    assert runs.leaking() == {"leak"} and not runs.leaks_future("a") and runs.leaks_future("leak")
    assert runs.finished_losses() == {"a": [2.0], "b": [1.9], "leak": [0.5]}
    assert runs.missing() == []
    (folder / "runs" / f"{grid.runs()[0].key}.json").unlink()
    assert results.load_grid_runs(folder).missing() == ["a (seed 1)"]
    assert runs.claim_results() == evaluate(grid.claims, runs.finished_losses(), "b")
    assert runs.provenance == {k: json.loads((folder / "grid.json").read_text())[k]
                               for k in ("gptlab_version", "git_commit", "git_dirty", "device", "created")}


def test_only_done_runs_with_a_loss_are_finished(tmp_path):
    grid, folder = make(tmp_path, losses=(None, 1.9, 0.5))
    runs = results.load_grid_runs(folder)
    assert runs.finished_losses() == {"a": [], "b": [1.9], "leak": [0.5]}
    done_no_loss = record_of(grid.runs()[1], 1.9, final_val_loss=None)
    assert results.finished([done_no_loss]) == [] and results.finished(runs.runs_of("b")) == runs.runs_of("b")


def test_records_not_used_are_skipped_with_the_reason(tmp_path):
    grid, folder = make(tmp_path)
    (folder / "runs" / "0broken.json").write_text("{not json")
    old = load_grid(tmp_path / "g.yaml", {"train.max_iters": "10"}).runs()[0]
    save_record(folder / "runs", record_of(old, 3.0))
    a = grid.runs()[0]
    save_record(folder / "runs", record_of(a, 2.0, variant="b"))  # a's key, naming another variant
    runs = results.load_grid_runs(folder)
    assert sorted(runs.skipped) == sorted([
        "runs/0broken.json: not valid JSON (half-written or corrupt); skipped",
        f"runs/{old.key}.json: 'a' seed 1, a config grid.json does not describe (an earlier `gptlab ablate` of "
        "this folder); skipped",
        f"runs/{a.key}.json: names 'g' 'b' seed 1, where this grid has 'a' seed 1; skipped"])
    assert sorted(r.variant for r in runs.records) == ["b", "leak"]
    assert len(results.readable_records(folder)) == 4  # every readable file, the broken one left out


def test_a_missing_or_broken_grid_json_is_one_line(tmp_path):
    with pytest.raises(GptlabError) as exc:
        results.read_manifest(tmp_path)
    assert str(exc.value) == (f"{tmp_path / 'grid.json'}: missing; a grid folder is written by "
                              "`gptlab ablate <grid.yaml>`")
    (tmp_path / "grid.json").write_text("{")
    with pytest.raises(GptlabError) as exc:
        results.read_manifest(tmp_path)
    assert str(exc.value).startswith(f"{tmp_path / 'grid.json'}: not valid JSON (Expecting property name")
    assert str(exc.value).endswith("); rerun `gptlab ablate` for this grid")
    (tmp_path / "grid.json").write_text(json.dumps({"name": "g"}))
    with pytest.raises(GptlabError) as exc:
        results.read_manifest(tmp_path)
    assert str(exc.value) == (f"{tmp_path / 'grid.json'}: lacks variants, seeds, baseline, preset; rerun "
                              "`gptlab ablate` for this grid")


def test_tables_have_their_columns_and_rows(tmp_path):
    grid, folder = make(tmp_path)
    table = results.load(tmp_path / "out")
    assert list(table.index) == [0, 1, 2] and list(table.variant) == ["a", "b", "leak"]
    assert list(table.scale) == ["cpu"] * 3 and list(table.leaks_future) == [False, False, True]
    assert list(table.is_baseline) == [False, True, False]
    curves = results.curves(folder)
    assert curves.iloc[1].to_dict() == {"grid": "g", "scale": "cpu", "variant": "a", "seed": 1,
                                        "key": grid.runs()[0].key, "step": 10, "train_loss": 2.0, "val_loss": 2.1,
                                        "lr": 5e-4, "elapsed": 1.5}
    summary = results.summary(table)
    assert list(summary.columns) == list(VariantRow.__dataclass_fields__)
    assert summary.set_index("variant").loc["b", "verdict"] == "baseline"  # the table's own baseline


def test_empty_tables_keep_their_columns(tmp_path):
    assert list(results.load(tmp_path).columns) == results.RUN_COLUMNS
    grid, folder = make(tmp_path, losses=())
    runs = results.load_grid_runs(folder)
    assert list(results.runs_table(runs).columns) == results.RUN_COLUMNS
    assert list(results.curves(folder).columns) == results.CURVE_COLUMNS
    assert list(results.summary(results.load(folder)).columns) == list(VariantRow.__dataclass_fields__)
    assert results.write_tables(runs) == [folder / "results.csv", folder / "curves.csv"]
    assert (folder / "curves.csv").read_text().splitlines() == [",".join(results.CURVE_COLUMNS)]


def test_written_tables_have_no_index_column(tmp_path):
    _, folder = make(tmp_path)
    results.write_tables(results.load_grid_runs(folder))
    assert (folder / "results.csv").read_text().splitlines()[0].startswith(",".join(results.RUN_COLUMNS))
    assert (folder / "curves.csv").read_text().splitlines()[0] == ",".join(results.CURVE_COLUMNS)


def test_a_table_that_names_no_baseline_needs_one(tmp_path):
    _, folder = make(tmp_path)
    table = results.load(folder)
    table["is_baseline"] = False
    with pytest.raises(GptlabError) as exc:
        results.summary(table)
    assert str(exc.value) == "these runs do not name one baseline; give summary(runs, baseline=VARIANT)"
    (tmp_path / "h").mkdir()
    make(tmp_path / "h")
    both = pd.concat([results.load(folder), results.load(tmp_path / "h" / "out" / "g").assign(grid="h")])
    with pytest.raises(GptlabError) as exc:
        results.summary(both)
    assert str(exc.value) == ("summary compares the variants of one grid; these runs come from g, h "
                              "(select one: runs[runs.grid == NAME])")
