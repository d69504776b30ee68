import math

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
        history=[], params=100, tokens_per_sec=1000.0, wall_time=1.0, device="cpu", torch_version="t",
        gptlab_version="v", git_commit="c", sample="", created="now",
    )


def make_grid(reports, name="g", extra_set=None):
    path = reports / f"{name}.yaml"
    path.write_text(f"name: {name}\nvariants: [{{name: a}}, {{name: b, set: {{model.n_layer: 1}}}}]\nseeds: [1, 2]\n"
                    "baseline: a\n")
    grid = load_grid(path, extra_set)
    grid_dir = reports / name
    write_manifest(grid, grid_dir, "cpu")
    for spec in grid.runs():
        save_record(grid_dir / "runs", fake_record(spec, LOSSES[(spec.variant, spec.seed)]))
    return grid, grid_dir


def test_load_one_grid_gives_one_row_per_run(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    (grid_dir / "runs" / "broken.json").write_text("{not json")
    runs = results.load(grid_dir)
    assert list(runs.columns) == results.COLUMNS
    assert list(zip(runs.variant, runs.seed)) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert runs.final_val_loss.tolist()[:3] == [2.0, 2.2, 1.8] and math.isnan(runs.final_val_loss.iloc[3])
    assert runs.status.tolist() == ["done", "done", "done", "diverged"]


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


def test_summary_ranks_variants_with_spread_and_delta(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    table = results.summary(results.load(grid_dir), baseline="a")
    assert list(table.columns) == results.SUMMARY_COLUMNS
    assert table.variant.tolist() == ["b", "a"]
    b, a = table.iloc[0], table.iloc[1]
    assert a["mean"] == pytest.approx(2.1) and a["std"] == pytest.approx(0.1414, abs=1e-4)
    assert (a["min"], a["max"], a["delta"], a["runs"], a["diverged"]) == (2.0, 2.2, 0.0, 2, 0)
    assert b["mean"] == pytest.approx(1.8) and b["delta"] == pytest.approx(-0.3) and b["diverged"] == 1
    assert math.isnan(b["std"])  # one finished seed: no spread
    assert b["train_loss"] == pytest.approx(1.7)
    assert results.summary(results.load(grid_dir)).delta.isna().all()
    assert results.summary(results.load(grid_dir).iloc[:0]).empty


def test_write_csv_round_trips(tmp_path):
    _, grid_dir = make_grid(tmp_path)
    runs = results.load(grid_dir)
    path = results.write_csv(runs, grid_dir / "results.csv")
    again = pd.read_csv(path, dtype={"key": str, "git_commit": str})
    assert again.key.tolist() == runs.key.tolist()
    assert again.final_val_loss.iloc[:3].tolist() == runs.final_val_loss.iloc[:3].tolist()
