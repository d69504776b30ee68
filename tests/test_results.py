import math
from pathlib import Path

import pandas as pd
import pytest

from gptlab import results
from gptlab.errors import GptlabError
from gptlab.grid import load_grid
from gptlab.record import RunRecord, save_record
from gptlab.runner import write_manifest

LOSSES = {("a", 1): 2.0, ("a", 2): 2.2, ("b", 1): 1.8, ("b", 2): None}  # None: diverged


def fake_record(spec, loss, variant=None):
    return RunRecord(
        key=spec.key, grid=spec.grid, variant=variant or spec.variant, seed=spec.seed, config=spec.config.to_dict(),
        status="done" if loss is not None else "diverged", final_val_loss=loss, best_val_loss=loss,
        final_train_loss=None if loss is None else loss - 0.1, diverged_at=None if loss is not None else 7,
        history=[{"step": 0, "train_loss": 4.2, "val_loss": 4.3, "lr": 1e-3, "elapsed": 0.0},
                 {"step": 10, "train_loss": loss, "val_loss": loss, "lr": 1e-3, "elapsed": 1.5}],
        params=100, tokens_per_sec=1000.0, wall_time=1.0, device="cpu", torch_version="t",
        gptlab_version="v", git_commit="c", sample="", created="now",
    )


def make_grid(reports, name="g", extra_set=None):
    path = reports / f"{name}.yaml"
    path.write_text(f"name: {name}\nvariants: [{{name: a}}, {{name: b, set: {{model.n_layer: 1}}}}]\nseeds: [1, 2]\n"
                    "baseline: a\n")
    grid = load_grid(path, extra_set)
    grid_dir = reports / name
    write_manifest(grid, grid_dir, "cpu", trained=True)
    for spec in grid.runs():
        save_record(grid_dir / "runs", fake_record(spec, LOSSES[(spec.variant, spec.seed)]))
    return grid, grid_dir


def test_load_one_grid_gives_one_row_per_run_with_config_columns(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    (grid_dir / "runs" / "broken.json").write_text("{not json")
    runs = results.load(grid_dir)
    assert list(runs.columns[: len(results.RUN_COLUMNS)]) == results.RUN_COLUMNS
    assert list(zip(runs.variant, runs.seed)) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert runs.final_val_loss.tolist()[:3] == [2.0, 2.2, 1.8] and math.isnan(runs.final_val_loss.iloc[3])
    assert runs.status.tolist() == ["done", "done", "done", "diverged"]
    assert runs["model.n_layer"].tolist() == [3, 3, 1, 1] and runs["train.seed"].tolist() == [1, 2, 1, 2]
    assert runs.is_baseline.tolist() == [True, True, False, False] and not runs.leaks_future.any()


def test_records_of_an_earlier_invocation_are_left_out_unless_asked(tmp_path):
    grid, grid_dir = make_grid(tmp_path)
    quick = load_grid(tmp_path / "g.yaml", {"train.max_iters": "10"})
    save_record(grid_dir / "runs", fake_record(quick.runs()[0], 9.0))
    assert len(results.load(grid_dir)) == 4
    assert len(results.load(grid_dir, current_only=False)) == 5


def test_load_a_folder_of_grids(tmp_path):
    make_grid(tmp_path, "g")
    make_grid(tmp_path, "h")
    (tmp_path / "notes").mkdir()
    runs = results.load(tmp_path)
    assert runs.grid.tolist() == ["g"] * 4 + ["h"] * 4
    assert results.load(tmp_path / "notes").empty
    with pytest.raises(GptlabError, match="no such folder"):
        results.load(tmp_path / "missing")


def test_summary_ranks_variants_with_spread_delta_and_the_grids_baseline(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    table = results.summary(results.load(grid_dir))
    assert table.variant.tolist() == ["b", "a"]
    b, a = table.iloc[0], table.iloc[1]
    assert a["mean"] == pytest.approx(2.1) and a["std"] == pytest.approx(0.1414, abs=1e-4)
    assert (a["min"], a["max"], a["runs"], a["diverged"], a["is_baseline"]) == (2.0, 2.2, 2, 0, True)
    assert b["mean"] == pytest.approx(1.8) and b["delta"] == pytest.approx(-0.3) and b["diverged"] == 1
    assert b["std"] is None or math.isnan(b["std"])  # one finished seed: no spread
    assert b["train_loss"] == pytest.approx(1.7) and b["verdict"] == "one seed"
    assert "p_value" in table.columns
    again = results.summary(results.load(grid_dir), baseline="b")
    assert again.set_index("variant").loc["a", "delta"] == pytest.approx(0.3)


def test_summary_refuses_a_baseline_that_is_no_variant_and_mixed_grids(tmp_path):
    make_grid(tmp_path, "g")
    make_grid(tmp_path, "h")
    with pytest.raises(GptlabError, match="baseline 'nope' is not a variant of these runs; choose one of: a; b"):
        results.summary(results.load(tmp_path / "g"), baseline="nope")
    with pytest.raises(GptlabError, match="summary compares the variants of one grid"):
        results.summary(results.load(tmp_path))
    assert results.summary(results.load(tmp_path / "g").iloc[:0]).empty


def test_summary_of_the_table_equals_the_reports(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    from_table = results.summary(results.load(grid_dir)).to_dict("records")
    from_records = [row.to_dict() for row in results.summarize_grid(results.load_grid_runs(grid_dir))]
    for a, b in zip(from_table, from_records):
        assert {k: v for k, v in a.items() if v is not None and v == v} == {
            k: v for k, v in b.items() if v is not None and v == v}


def test_curves_are_one_row_per_evaluation(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    curves = results.curves(grid_dir)
    assert list(curves.columns) == results.CURVE_COLUMNS and len(curves) == 8
    first = curves.iloc[0]
    assert (first.grid, first.variant, first.seed, first.step, first.val_loss) == ("g", "a", 1, 0, 4.3)


def test_tables_are_written_once_and_round_trip(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    grid_runs = results.load_grid_runs(grid_dir)
    assert results.write_tables(grid_runs) == [grid_dir / "results.csv", grid_dir / "curves.csv"]
    assert results.write_tables(grid_runs) == []  # unchanged: nothing written
    again = pd.read_csv(grid_dir / "results.csv", dtype={"key": str, "git_commit": str})
    runs = results.load(grid_dir)
    assert again.key.tolist() == runs.key.tolist()
    assert again.final_val_loss.iloc[:3].tolist() == runs.final_val_loss.iloc[:3].tolist()
    assert len(pd.read_csv(grid_dir / "curves.csv")) == 8


def test_tensorboard_event_files_load_in_tensorboards_reader(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gptlab.tensorboard import run_folder, write_events

    _, grid_dir = make_grid(tmp_path)
    for record in (grid_dir / "runs").glob("*.json"):  # fake_record leaves `created` unparseable: give it a time
        record.write_text(record.read_text().replace('"created": "now"', '"created": "2026-01-01T00:00:00+00:00"'))
    grid_runs = results.load_grid_runs(grid_dir)
    assert len(write_events(grid_runs)) == 4
    assert write_events(grid_runs) == []  # written once per run
    events = EventAccumulator(str(run_folder(grid_runs, "a", 2)))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss/train", "loss/val", "lr"}
    val = events.Scalars("loss/val")
    assert [(e.step, round(e.value, 4)) for e in val] == [(0, 4.3), (10, 2.2)]
    assert val[1].wall_time - val[0].wall_time == pytest.approx(1.5)


# -- one source for a grid's words -----------------------------------------------------------------------------


def test_the_grid_file_is_found_as_written_or_beside_the_reports_folder(tmp_path, monkeypatch):
    grid_dir = tmp_path / "project" / "reports" / "g"
    grid_dir.mkdir(parents=True)
    (tmp_path / "project" / "ablations").mkdir()
    beside = tmp_path / "project" / "ablations" / "g.yaml"
    beside.write_text("name: g\n")
    monkeypatch.chdir(tmp_path)
    assert results.grid_file(grid_dir, "") is None
    assert results.grid_file(grid_dir, "ablations/g.yaml") == grid_dir.parent.parent / "ablations/g.yaml"
    assert results.grid_file(grid_dir, str(beside)) == beside
    assert results.grid_file(grid_dir, "ablations/other.yaml") is None
    assert results.grid_file(grid_dir, str(tmp_path / "nowhere.yaml")) is None
    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "g.yaml").write_text("name: g\n")
    assert results.grid_file(grid_dir, "ablations/g.yaml") == Path("ablations/g.yaml")  # from here first
    (tmp_path / "folder.yaml").mkdir()
    assert results.grid_file(grid_dir, "folder.yaml") is None


def test_a_grid_takes_the_words_of_its_file_and_names_each_field_grid_json_says_otherwise(tmp_path):
    grid, grid_dir = make_grid(tmp_path)
    source = tmp_path / "g.yaml"
    assert results.load_grid_runs(grid_dir).stale == ""
    text = source.read_text()
    for edit, fields, verb in (("title: New\n", "title", "differs"), ("insight: Why.\n", "insight", "differs"),
                               ("claims: [{variant: b, is: worse}]\n", "claims", "differ"),
                               ("title: New\ninsight: Why.\n", "title and insight", "differ"),
                               ("title: New\ninsight: Why.\nclaims: [{variant: b, is: worse}]\n",
                                "title and insight and claims", "differ")):
        source.write_text(text + edit)
        runs = results.load_grid_runs(grid_dir)
        assert runs.stale == (f"stale: grid.json's {fields} {verb} from {source.as_posix()}, whose words the report "
                              f"uses; `gptlab ablate {source}` refreshes it (training only runs without a record)")
    assert (runs.grid.title, runs.grid.insight) == ("New", "Why.")
    assert [c.variant for c in runs.grid.claims] == ["b"] and runs.claim_results()[0].claim.kind == "worse"
    assert len(runs.records) == 4 and runs.grid.seeds == grid.seeds  # the runs are grid.json's
    write_manifest(load_grid(source), grid_dir, "cpu", trained=False)  # what `gptlab ablate` does
    assert results.load_grid_runs(grid_dir).stale == ""


def test_a_grid_file_that_cannot_give_the_words_is_named_and_the_snapshot_kept(tmp_path):
    grid, grid_dir = make_grid(tmp_path)
    source = tmp_path / "g.yaml"
    source.write_text(source.read_text() + "claims: [{variant: c, is: worse}]\n")
    runs = results.load_grid_runs(grid_dir)
    assert runs.stale.startswith("its grid file cannot give the report its words: ")
    assert "claims[0].variant: 'c' matches no variant" in runs.stale and runs.grid.claims == []
    source.write_text(source.read_text().replace("{name: a}", "{name: a}, {name: c}"))  # a variant grid.json lacks
    assert f"{source}: claims[0].variant: 'c' matches no variant; choose one of: a; b" in (
        results.load_grid_runs(grid_dir).stale)
    source.unlink()
    assert results.load_grid_runs(grid_dir).stale == ""


def test_a_grid_at_another_scale_takes_the_words_of_that_scale(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nvariants: [{name: a}, {name: b}]\nseeds: [1, 2]\nbaseline: a\ntitle: Small\n"
                    "scales:\n  big:\n    title: Big\n    claims: [{variant: b, is: worse}]\n")
    grid = load_grid(path, scale="big")
    grid_dir = tmp_path / grid.name
    write_manifest(grid, grid_dir, "cpu", trained=True)
    runs = results.load_grid_runs(grid_dir)
    assert runs.stale == "" and runs.grid.title == "Big" and [c.variant for c in runs.grid.claims] == ["b"]


def test_the_missing_runs_count_the_seeds_added_until_settled(tmp_path):
    grid, grid_dir = make_grid(tmp_path)
    runs = results.load_grid_runs(grid_dir)
    assert runs.missing() == []
    runs.grid.seed_counts = {"b": 3}
    assert runs.missing() == ["b (seed 3)"]
