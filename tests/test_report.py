import csv
import io
import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from gptlab.cli import app
from gptlab.config import apply_overrides, preset
from gptlab.errors import GptlabError
from gptlab.record import RunRecord, save_record
from gptlab.report import load_grid, reproduce_command, variant_rows, write_grid_report, write_index

SEEDS = [1337, 1338, 1339]
STEPS = [0, 100, 200, 300]
PROMPT = "First Ci"
EVERY_RUN = {"train.max_iters": STEPS[-1]}  # the grid's `set`


def write_grid(folder, name, variants, baseline):
    source = folder.parent.parent / f"{name}.yaml"
    source.write_text(yaml.safe_dump({"name": name, "set": EVERY_RUN, "seeds": SEEDS}))
    spec = {
        "name": name, "title": f"Title of {name}", "insight": f"Why {name} matters.", "preset": "lecture",
        "set": EVERY_RUN, "seeds": SEEDS, "baseline": baseline, "metric": "val_loss",
        "source": source.as_posix(),
        "variants": [{"name": v, "preset": "lecture", "overrides": o} for v, o in variants.items()],
        "gptlab_version": "0.1.0", "git_commit": "abc1234", "device": "cpu", "created": "2025-01-01T00:00:00",
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.json").write_text(json.dumps(spec))
    return spec


def add_run(folder, variant, seed, final, overrides=None, diverged_at=None, tokens_per_sec=50_000.0,
            created="2025-01-01T00:01:00"):
    """A made-up run whose val loss falls from about 4.1 to ``final`` (or stops with NaN at ``diverged_at``)."""
    cfg = apply_overrides(preset("lecture"), {**EVERY_RUN, **(overrides or {}), "train.seed": seed})
    fall = [math.exp(-s / 80) - math.exp(-STEPS[-1] / 80) for s in STEPS]  # from ~1 down to exactly 0
    history = [{"step": s, "train_loss": final - 0.05 + 2.1 * f, "val_loss": final + 2.17 * f,
                "lr": 1e-3, "elapsed": s / 10} for s, f in zip(STEPS, fall)]
    if diverged_at is not None:
        history = [row for row in history if row["step"] < diverged_at]
    t = len(PROMPT)
    attention = {"prompt": PROMPT, "layer": 0, "head": 0,
                 "weights": [[1 / (i + 1) if j <= i else 0.0 for j in range(t)] for i in range(t)]}
    record = RunRecord(
        key=cfg.key(), grid=folder.name, variant=variant, seed=seed, config=cfg.to_dict(),
        status="diverged" if diverged_at is not None else "done",
        final_val_loss=None if diverged_at is not None else history[-1]["val_loss"],
        best_val_loss=None if diverged_at is not None else history[-1]["val_loss"],
        final_train_loss=None if diverged_at is not None else history[-1]["train_loss"],
        diverged_at=diverged_at, history=history, params=42_369, tokens_per_sec=tokens_per_sec, wall_time=30.0,
        device="cpu", torch_version="2.13.0", gptlab_version="0.1.0", git_commit="abc1234",
        sample=f"\n{variant.upper()} {seed}:\nline two\nline three\nline four\nline five\nline six",
        created=created, extra={"attention": attention},
    )
    return save_record(folder / "runs", record)


@pytest.fixture
def residuals(tmp_path):
    """A grid with every case: significant, not significant, one seed (partial), all diverged, half diverged."""
    folder = tmp_path / "reports" / "residuals"
    variants = {"base": {}, "worse": {"model.residual": False}, "noise": {"model.n_layer": 2},
                "lonely": {"model.n_layer": 1}, "exploded": {"train.lr": 10.0}, "shaky": {"train.lr": 0.1}}
    write_grid(folder, "residuals", variants, "base")
    for seed, base, worse, noise, shaky in zip(SEEDS, [2.00, 2.01, 2.02], [2.30, 2.31, 2.32], [1.95, 2.05, 2.10],
                                              [2.5, 2.6, None]):
        add_run(folder, "base", seed, base)
        add_run(folder, "worse", seed, worse, variants["worse"])
        add_run(folder, "noise", seed, noise, variants["noise"])
        add_run(folder, "exploded", seed, 0.0, variants["exploded"], diverged_at=200)
        add_run(folder, "shaky", seed, shaky or 0.0, variants["shaky"], diverged_at=None if shaky else 300)
    add_run(folder, "lonely", SEEDS[0], 2.4, variants["lonely"])
    return folder


@pytest.fixture
def masking(tmp_path):
    folder = tmp_path / "reports" / "masking"
    variants = {"after": {"model.mask": "after"}, "before": {"model.mask": "before"},
                "peek": {"model.mask": "none"}}  # the leak is found from the config, not from the name
    write_grid(folder, "masking", variants, "after")
    for seed, loss in zip(SEEDS, [2.05, 2.06, 2.07]):
        add_run(folder, "after", seed, loss, variants["after"], tokens_per_sec=80_000)
        add_run(folder, "before", seed, loss + 0.001, variants["before"], tokens_per_sec=40_000)
        add_run(folder, "peek", seed, loss - 1.5, variants["peek"], tokens_per_sec=81_000)
    return folder


def rows_by_name(folder):
    return {row["variant"]: row for row in variant_rows(load_grid(folder))}


def test_rows_carry_known_numbers_and_verdicts(residuals):
    rows = rows_by_name(residuals)
    base, worse, noise = rows["base"], rows["worse"], rows["noise"]
    assert base["mean_val_loss"] == pytest.approx(2.01) and base["std_val_loss"] == pytest.approx(0.01)
    assert base["verdict"] == "baseline" and base["delta_vs_baseline"] is None
    assert worse["delta_vs_baseline"] == pytest.approx(0.30) and worse["significant"]
    assert worse["verdict"].startswith("worse than baseline by 0.3 (p<0.0001, Welch t-test over 3 vs 3 seeds")
    assert (worse["min_val_loss"], worse["max_val_loss"]) == pytest.approx((2.30, 2.32))
    assert worse["mean_train_loss"] == pytest.approx(2.26)
    assert not noise["significant"] and noise["verdict"].startswith("not significant (p=")
    assert rows["lonely"]["verdict"] == "not established: one seed" and rows["lonely"]["std_val_loss"] is None
    exploded = rows["exploded"]
    assert exploded["runs"] == 0 and exploded["diverged"] == 3 and exploded["mean_val_loss"] is None
    assert exploded["verdict"] == "diverged in every run"
    shaky = rows["shaky"]
    assert (shaky["runs"], shaky["diverged"], shaky["diverged_at"]) == (2, 1, [300])
    assert shaky["mean_val_loss"] == pytest.approx(2.55)


def test_rows_are_ranked_by_mean_val_loss_with_no_result_last(residuals):
    names = [row["variant"] for row in variant_rows(load_grid(residuals))]
    assert names == ["base", "noise", "worse", "lonely", "shaky", "exploded"]


def test_grid_report_has_table_method_figures_samples_and_missing_runs(residuals):
    path = write_grid_report(residuals)
    text = path.read_text()
    assert path == residuals / "README.md"
    assert text.startswith("# Title of residuals\n\nWhy residuals matters.")
    for line in (f"- Reproduce: `gptlab ablate {residuals.parent.parent}/residuals.yaml` (then",
                 "- Seeds: 1337, 1338, 1339",
                 "- Total compute time: 8 min 0 s (sum of the wall time of 16 runs)", "git commit `abc1234`",
                 "- Device: cpu (torch 2.13.0)", "  - `worse`: `model.residual=false`"):
        assert line in text
    assert "| worse | 2.3100 | 0.0100 | 2.3000–2.3200 | +0.3000 | 2.2600 | 42,369 | 50,000 | — | worse than" in text
    assert "| exploded | diverged at step 200 | — |" in text
    assert "| 1 of 3 (step 300) |" in text
    assert text.count("Welch's t-test") == 1
    assert "## Missing runs (2 of 18)\n\n- lonely (seed 1338)\n- lonely (seed 1339)\n" in text
    assert "**worse** (seed 1337):\n\n```text\nWORSE 1337:\nline two\nline three\nline four\n```" in text
    images = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert images == ["val_loss_curves.png", "final_val_loss.png"]  # no masking/qk/values axis: no more
    for name in images:
        assert (residuals / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_masking_report_flags_the_leak_from_the_config_and_adds_throughput_and_attention(masking):
    rows = rows_by_name(masking)
    assert rows["peek"]["leaks_future"] and not rows["before"]["leaks_future"]
    text = write_grid_report(masking).read_text()
    assert "| peek ⚠ leaks the future |" in text
    assert "model.mask = none): its low loss is not a real result" in text
    assert "![Throughput](throughput.png)" in text and "![Attention pattern](attention.png)" in text
    assert (masking / "throughput.png").is_file() and (masking / "attention.png").is_file()
    # the finding skips the leaking variant although its loss is lowest
    assert ("Finding: the baseline `after` has the lowest val loss, 2.060; the next, `before`, is not significant "
            "(p=0.9") in text


def test_index_lists_every_grid_with_finding_and_link(residuals, masking):
    index = write_index(residuals.parent).read_text()
    assert "- **[Title of masking](masking/README.md)** (9 of 9 runs, cpu): the baseline `after` has" in index
    assert ("- **[Title of residuals](residuals/README.md)** (16 of 18 runs, cpu): the baseline `base` has the lowest "
            "val loss, 2.010; the next, `noise`, is not significant (p=") in index
    assert "1 of 3 variants tested differ significantly from the baseline; partial: 2 of 18 runs missing" in index


def test_unusable_files_are_listed_not_fatal(residuals):
    runs = residuals / "runs"
    (runs / "halfwritten.json").write_text('{"key": "abc", "grid": ')
    old = json.loads(sorted(runs.glob("*.json"))[0].read_text())
    (runs / "old.json").write_text(json.dumps({**old, "schema": 0}))
    (runs / "stranger.json").write_text(json.dumps({**old, "variant": "gone"}))
    (runs / "lacking.json").write_text(json.dumps({"schema": 1, "key": "x"}))
    grid = load_grid(residuals)
    assert len(grid.records) == 16
    skipped = "\n".join(grid.skipped)
    assert "runs/halfwritten.json: not valid JSON (half-written or corrupt); skipped (`gptlab ablate" in skipped
    assert "runs/old.json: a run record of schema 0 (older gptlab); this gptlab reads schema 1; skipped" in skipped
    assert f"runs/stranger.json: 'gone' seed {old['seed']} with a config that grid.json does not describe" in skipped
    assert "runs/lacking.json: " in skipped and "lacks" in skipped
    assert "## Skipped files" in write_grid_report(residuals).read_text()


def test_runs_of_an_earlier_config_are_left_out(residuals):
    add_run(residuals, "base", SEEDS[0], 1.0, {"train.lr": 0.5})  # e.g. an earlier `ablate --set train.lr=0.5`
    grid = load_grid(residuals)
    assert rows_by_name(residuals)["base"]["min_val_loss"] == pytest.approx(2.00)
    assert any("'base' seed 1337 with a config that grid.json does not describe" in line for line in grid.skipped)


def test_without_expandable_grid_json_the_newest_run_of_a_variant_and_seed_counts(residuals):
    spec = json.loads((residuals / "grid.json").read_text())
    del spec["metric"]  # an older grid.json: the current keys cannot be computed
    (residuals / "grid.json").write_text(json.dumps(spec))
    add_run(residuals, "base", SEEDS[0], 1.0, {"train.lr": 0.5}, created="2025-02-01T00:00:00")
    grid = load_grid(residuals)
    assert rows_by_name(residuals)["base"]["min_val_loss"] == pytest.approx(1.0)
    assert any("an older run of 'base' seed 1337; skipped" in line for line in grid.skipped)


def test_grid_without_runs_renders_a_clear_line(tmp_path):
    folder = tmp_path / "empty"
    write_grid(folder, "empty", {"a": {}, "b": {"model.n_layer": 2}}, "a")
    text = write_grid_report(folder).read_text()
    assert "No finished runs yet." in text and "## Missing runs (6 of 6)" in text and "![" not in text


@pytest.mark.parametrize("content, message", [(None, "grid.json: missing"), ("{", "grid.json: not valid JSON"),
                                              ('{"name": "x"}', "grid.json: lacks variants, seeds, baseline")])
def test_broken_grid_json_is_one_clear_error(tmp_path, content, message):
    folder = tmp_path / "broken"
    (folder / "runs").mkdir(parents=True)
    if content is not None:
        (folder / "grid.json").write_text(content)
    with pytest.raises(GptlabError, match=message):
        load_grid(folder)


runner = CliRunner()


def test_report_command_prints_tables_and_writes_markdown(residuals, masking):
    result = runner.invoke(app, ["report", str(residuals.parent)])
    assert result.exit_code == 0, result.output
    assert "Title of residuals" in result.output and "Title of masking" in result.output
    assert "residuals: 2 runs missing: lonely (seed 1338), lonely (seed 1339)" in result.output
    assert (residuals.parent / "README.md").is_file() and (masking / "README.md").is_file()


def test_report_command_machine_formats(residuals, masking):
    as_csv = runner.invoke(app, ["report", str(residuals.parent), "--format", "csv"])
    assert as_csv.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 9 and {r["grid"] for r in rows} == {"residuals", "masking"}
    as_json = runner.invoke(app, ["report", str(residuals.parent), "--format", "json", "--open", "masking"])
    grids = json.loads(as_json.stdout)
    assert [g["name"] for g in grids] == ["masking"]
    assert grids[0]["rows"][0]["variant"] == "peek" and grids[0]["rows"][0]["leaks_future"] is True
    as_markdown = runner.invoke(app, ["report", str(masking), "--format", "markdown"])
    assert as_markdown.stdout.startswith("# Title of masking")


@pytest.mark.parametrize("args, message", [
    ([".", "--open", "nope"], "--open = 'nope' is not allowed; choose one of: masking, residuals"),
    ([".", "--format", "xml"], "--format = 'xml' is not allowed; choose one of: rich, markdown, csv, json"),
    (["nothing"], "nothing: no grid folders here"),
    (["missing"], "missing: no such folder"),
])
def test_report_command_bad_input_exits_2(residuals, masking, monkeypatch, args, message):
    monkeypatch.chdir(residuals.parent)
    (residuals.parent / "nothing").mkdir()
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ") and "Traceback" not in result.output


def test_a_broken_grid_is_one_line_and_the_others_still_render(residuals, masking):
    (masking / "grid.json").write_text("{")
    result = runner.invoke(app, ["report", str(residuals.parent), "--format", "json"])
    assert result.exit_code == 2
    assert "masking/grid.json: not valid JSON" in result.output.replace("\n", "")
    assert [g["name"] for g in json.loads(result.stdout)] == ["residuals"]


def test_reproduce_command_adds_what_the_command_line_changed(residuals):
    spec = json.loads((residuals / "grid.json").read_text())
    source = spec["source"]
    assert reproduce_command(spec) == f"gptlab ablate {source}"
    changed = {**spec, "set": {**spec["set"], "train.lr": 0.01, "model.residual": False}, "seeds": [1337]}
    expected = f"gptlab ablate {source} --set train.lr=0.01 --set model.residual=false --seeds 1"
    assert reproduce_command(changed) == expected
