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
from gptlab.report import reproduce_command, render, write_index
from gptlab.results import load_grid_runs, summarize_grid

SEEDS = [1337, 1338, 1339]
STEPS = [0, 100, 200, 300]
PROMPT = "First Ci"
EVERY_RUN = {"train.max_iters": STEPS[-1]}  # the grid's `set`


def write_grid(folder, name, variants, baseline, claims=()):
    source = folder.parent.parent / f"{name}.yaml"
    source.write_text(yaml.safe_dump({
        "name": name, "title": f"Title of {name}", "insight": f"Why {name} matters.", "set": EVERY_RUN,
        "seeds": SEEDS, "baseline": baseline, "claims": list(claims),
        "variants": [{"name": v, "set": o} for v, o in variants.items()]}, sort_keys=False))
    spec = {
        "name": name, "title": f"Title of {name}", "insight": f"Why {name} matters.", "preset": "lecture",
        "set": EVERY_RUN, "seeds": SEEDS, "baseline": baseline, "metric": "val_loss",
        "source": source.as_posix(), "claims": list(claims),
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
        device="cpu", torch_version="2.13.0", gptlab_version="0.1.0", git_commit="abc1234", git_dirty=False,
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
    claims = [{"variant": "worse", "is": "worse", "by_at_least": 0.2}, {"variant": "noise", "is": "better"},
              {"variant": "worse", "is": "better", "note": "a planted contradiction"}]
    write_grid(folder, "residuals", variants, "base", claims)
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
    write_grid(folder, "masking", variants, "after", [{"variant": "before", "is": "same", "within": 0.05}])
    for seed, loss in zip(SEEDS, [2.05, 2.06, 2.07]):
        add_run(folder, "after", seed, loss, variants["after"], tokens_per_sec=80_000)
        add_run(folder, "before", seed, loss + 0.001, variants["before"], tokens_per_sec=40_000)
        add_run(folder, "peek", seed, loss - 1.5, variants["peek"], tokens_per_sec=81_000)
    return folder


def rows_by_name(folder):
    return {row.variant: row for row in summarize_grid(load_grid_runs(folder))}


def test_rows_carry_known_numbers_and_verdicts(residuals):
    rows = rows_by_name(residuals)
    base, worse, noise = rows["base"], rows["worse"], rows["noise"]
    assert base.mean == pytest.approx(2.01) and base.std == pytest.approx(0.01)
    assert base.verdict == "baseline" and base.delta is None
    assert worse.delta == pytest.approx(0.30) and worse.significant
    assert worse.verdict.startswith("worse, p") and worse.p_value < 0.05
    assert (worse.min, worse.max) == pytest.approx((2.30, 2.32))
    assert worse.train_loss == pytest.approx(2.26)
    assert not noise.significant and noise.verdict.startswith("n.s., p=")
    assert rows["lonely"].verdict == "one seed" and rows["lonely"].std is None
    exploded = rows["exploded"]
    assert exploded.runs == 0 and exploded.diverged == 3 and exploded.mean is None
    assert exploded.verdict == "diverged"
    shaky = rows["shaky"]
    assert (shaky.runs, shaky.diverged, shaky.diverged_at) == (2, 1, [300])
    assert shaky.mean == pytest.approx(2.55)


def test_rows_are_ranked_by_mean_val_loss_with_no_result_last(residuals):
    names = [row.variant for row in summarize_grid(load_grid_runs(residuals))]
    assert names == ["base", "noise", "worse", "lonely", "shaky", "exploded"]


def test_grid_report_has_claims_table_method_figures_samples_and_missing_runs(residuals):
    path, _, claims = render(load_grid_runs(residuals))
    text = path.read_text()
    assert path == residuals / "README.md"
    assert text.startswith("# Title of residuals\n\nScale: `cpu`.\n\nWhy residuals matters.\n\n## Claims")
    assert [c.status for c in claims] == ["holds", "not established", "contradicted"]
    assert "1 hold, 1 contradicted, 1 not established (of 3)." in text
    assert "| `worse` is worse than `base` by at least 0.2 | ✅ holds | +0.3000 [" in text
    assert "| `worse` is better than `base` — a planted contradiction | ❌ contradicted |" in text
    for line in (f"- Reproduce: `gptlab ablate {residuals.parent.parent}/residuals.yaml --out ",
                 "- Seeds: 1337, 1338, 1339",
                 "- Total compute time: 8 min 0 s (sum of the wall time of 16 runs)", "git commit `abc1234` (16 runs)",
                 "- Device: cpu (torch 2.13.0)", "  - `worse`: `model.residual=false`"):
        assert line in text
    assert "| `worse` | 2.3100 | 0.0100 | 2.3000–2.3200 | +0.3000 | worse, p" in text
    assert "| `exploded` | — | — | — | — | diverged |" in text and "0 of 3, 3 diverged (step 200)" in text
    assert "| 2 of 3, 1 diverged (step 300) |" in text
    assert text.count("Welch's t-test") == 1
    assert "## Missing runs (2 of 18)\n\n- lonely (seed 1338)\n- lonely (seed 1339)\n" in text
    assert "**worse** (seed 1337):\n\n```text\nWORSE 1337:\nline two\nline three\nline four\n```" in text
    images = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert images == ["val_loss_curves.png", "final_val_loss.png"]  # no masking/qk/values axis: no more
    for name in images:
        assert (residuals / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rendering_twice_writes_nothing_the_second_time(residuals):
    render(load_grid_runs(residuals))
    stamps = {p: p.stat().st_mtime_ns for p in residuals.iterdir() if p.is_file()}
    render(load_grid_runs(residuals))
    assert {p: p.stat().st_mtime_ns for p in residuals.iterdir() if p.is_file()} == stamps


def test_masking_report_flags_the_leak_from_the_config_and_adds_throughput_and_attention(masking):
    rows = rows_by_name(masking)
    assert rows["peek"].leaks_future and not rows["before"].leaks_future
    assert rows["peek"].verdict == "leaks the future" and rows["peek"].p_value is None
    text = render(load_grid_runs(masking))[0].read_text()
    assert "| `peek` ⚠ |" in text and "sees the future (no causal mask): its low loss is not a real result" in text
    assert "![Throughput](throughput.png)" in text and "![Attention pattern](attention.png)" in text
    assert (masking / "throughput.png").is_file() and (masking / "attention.png").is_file()


def test_index_lists_every_grid_with_claim_counts_and_link(residuals, masking):
    index = write_index(residuals.parent).read_text()
    assert "| [Title of masking](masking/README.md) | `cpu` | 9 of 9 | 1 / 0 / 0 | cpu |" in index
    assert "| [Title of residuals](residuals/README.md) | `cpu` | 16 of 18 | 1 / 1 / 1 | cpu |" in index


def test_unusable_files_are_listed_not_fatal(residuals):
    runs = residuals / "runs"
    (runs / "halfwritten.json").write_text('{"key": "abc", "grid": ')
    first = sorted(runs.glob("*.json"))[0]
    old = json.loads(first.read_text())
    (runs / "old.json").write_text(json.dumps({**old, "schema": 0}))
    (runs / f"{old['key']}.json").write_text(json.dumps({**old, "variant": "gone"}))
    (runs / "lacking.json").write_text(json.dumps({"schema": 1, "key": "x"}))
    (runs / "typed.json").write_text(json.dumps({**old, "final_val_loss": "abc"}))
    (runs / "history.json").write_text(json.dumps({**old, "history": 5}))
    grid_runs = load_grid_runs(residuals)
    assert len(grid_runs.records) == 15
    skipped = "\n".join(grid_runs.skipped)
    assert "runs/halfwritten.json: not valid JSON (half-written or corrupt); skipped" in skipped
    assert "runs/old.json: not a gptlab run record of schema 1 (schema 0); skipped" in skipped
    assert f"runs/{old['key']}.json: names 'residuals' 'gone' seed {old['seed']}, where this grid has" in skipped
    assert "runs/lacking.json: lacks " in skipped
    assert "runs/typed.json: field final_val_loss = 'abc' is not a int/float" in skipped
    assert "runs/history.json: field history = 5 is not a list" in skipped
    assert "## Skipped files" in render(grid_runs)[0].read_text()


def test_runs_of_an_earlier_config_are_left_out(residuals):
    add_run(residuals, "base", SEEDS[0], 1.0, {"train.lr": 0.5})  # e.g. an earlier `ablate --set train.lr=0.5`
    grid_runs = load_grid_runs(residuals)
    assert rows_by_name(residuals)["base"].min == pytest.approx(2.00)
    assert any("'base' seed 1337, a config grid.json does not describe" in line for line in grid_runs.skipped)


def test_grid_without_runs_renders_a_clear_line(tmp_path):
    folder = tmp_path / "empty"
    write_grid(folder, "empty", {"a": {}, "b": {"model.n_layer": 2}}, "a")
    text = render(load_grid_runs(folder))[0].read_text()
    assert "No finished runs yet." in text and "## Missing runs (6 of 6)" in text and "![" not in text


@pytest.mark.parametrize("content, message", [
    (None, "grid.json: missing"), ("{", "grid.json: not valid JSON"),
    ('{"name": "x"}', "grid.json: lacks variants, seeds, baseline, preset"),
    ('{"name": "x", "variants": 5, "seeds": [1], "baseline": "a", "preset": "lecture"}',
     "grid.json: variants: must be a non-empty list"),
])
def test_broken_grid_json_is_one_clear_error(tmp_path, content, message):
    folder = tmp_path / "broken"
    (folder / "runs").mkdir(parents=True)
    if content is not None:
        (folder / "grid.json").write_text(content)
    with pytest.raises(GptlabError, match=message):
        load_grid_runs(folder)


runner = CliRunner()


def test_report_command_prints_tables_and_writes_markdown(residuals, masking):
    result = runner.invoke(app, ["report", str(residuals.parent)])
    assert result.exit_code == 0, result.output
    assert "Title of residuals" in result.output and "Title of masking" in result.output
    assert "residuals: 2 runs missing" in result.output
    assert (residuals.parent / "README.md").is_file() and (masking / "README.md").is_file()
    assert (masking / "results.csv").is_file() and (masking / "curves.csv").is_file()


def test_report_exports_write_nothing(residuals, masking):
    before = sorted(p for p in residuals.parent.rglob("*"))
    as_csv = runner.invoke(app, ["report", str(residuals.parent), "--format", "csv"])
    assert as_csv.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 25 and {r["grid"] for r in rows} == {"residuals", "masking"}
    assert {"model.residual", "train.lr", "model.mask"} <= set(rows[0])  # the config values as columns
    as_json = runner.invoke(app, ["report", str(residuals.parent), "--format", "json", "--grid", "masking"])
    grids = json.loads(as_json.stdout)
    assert [g["name"] for g in grids] == ["masking"]
    assert grids[0]["rows"][0]["variant"] == "peek" and grids[0]["rows"][0]["leaks_future"] is True
    assert grids[0]["claims"][0]["status"] == "holds"
    as_markdown = runner.invoke(app, ["report", str(masking), "--format", "markdown"])
    assert as_markdown.stdout.startswith("# Title of masking")
    assert sorted(p for p in residuals.parent.rglob("*")) == before


def test_report_check_exits_1_on_a_contradicted_claim(residuals, masking):
    before = sorted(p for p in residuals.parent.rglob("*"))
    result = runner.invoke(app, ["report", str(residuals.parent), "--check"])
    assert result.exit_code == 1, result.output
    assert "residuals: 1 hold, 1 contradicted, 1 not established" in result.output
    assert "contradicted: `worse` is better than `base`" in result.output
    assert runner.invoke(app, ["report", str(masking), "--check"]).exit_code == 0
    assert sorted(p for p in residuals.parent.rglob("*")) == before


def shipped_copy(tmp_path, name):
    """A copy of a shipped grid's file and its committed reports folder, as a learner's clone has them."""
    import shutil

    from gptlab.files import PROJECT_ROOT

    (tmp_path / "ablations").mkdir()
    shutil.copy(PROJECT_ROOT / "ablations" / f"{name}.yaml", tmp_path / "ablations")
    shutil.copytree(PROJECT_ROOT / "reports" / name, tmp_path / "reports" / name,
                    ignore=shutil.ignore_patterns("*.png", "*.csv"))
    return tmp_path / "ablations" / f"{name}.yaml"


def test_report_check_fails_on_an_edited_grid_file_without_ablate(tmp_path, monkeypatch):
    grid_file = shipped_copy(tmp_path, "residuals")
    monkeypatch.chdir(tmp_path)
    before = runner.invoke(app, ["report", "reports", "--check"])
    assert before.exit_code == 0, before.output
    assert "residuals: 5 hold, 0 contradicted, 0 not established" in before.output and "stale" not in before.output
    text = grid_file.read_text()
    grid_file.write_text(text.replace("is: worse", "is: better", 1))
    after = runner.invoke(app, ["report", "reports", "--check"])
    assert after.exit_code == 1, after.output
    assert "residuals: 4 hold, 1 contradicted, 0 not established" in after.output  # the file's claims, checked
    assert ("reports/residuals: stale: grid.json's claims differ from ablations/residuals.yaml, whose words the "
            "report uses") in after.output.replace("\n", " ")


def test_a_report_takes_its_words_from_the_grid_file_and_names_the_fields_that_drifted(tmp_path, monkeypatch):
    grid_file = shipped_copy(tmp_path, "heads")
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(grid_file.read_text())
    raw["title"], raw["insight"] = "A new title", "A new insight."
    grid_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    grid_runs = load_grid_runs("reports/heads")
    assert (grid_runs.grid.title, grid_runs.grid.insight) == ("A new title", "A new insight.")
    assert grid_runs.stale.startswith("stale: grid.json's title and insight differ from ablations/heads.yaml")
    assert grid_runs.grid.claims and "claims" not in grid_runs.stale
    result = runner.invoke(app, ["report", "reports", "--check"])
    assert result.exit_code == 1 and "stale" in result.output
    assert render(grid_runs)[0].read_text().startswith("# A new title\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the file is found next to the reports folder, from anywhere
    assert load_grid_runs(tmp_path / "reports" / "heads").grid.title == "A new title"
    raw["claims"] = [{"variant": "n_head=16", "is": "worse"}]
    grid_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    broken = load_grid_runs(tmp_path / "reports" / "heads")
    assert broken.grid.title != "A new title" and "its grid file cannot give the report its words" in broken.stale
    assert "'n_head=16' matches no variant" in broken.stale
    grid_file.unlink()
    gone = load_grid_runs(tmp_path / "reports" / "heads")
    assert gone.stale == "" and gone.grid.title.startswith("Multi-head attention")  # no file: the snapshot's words


@pytest.mark.parametrize("args, message", [
    ([".", "--grid", "nope"], "--grid = 'nope' is not allowed; choose one of: masking, residuals"),
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
    grid_runs = load_grid_runs(residuals)
    source = grid_runs.grid.source
    out = residuals.parent.as_posix()
    assert reproduce_command(grid_runs) == f"gptlab ablate {source} --out {out}"
    grid_runs.grid.set = {**grid_runs.grid.set, "train.lr": 0.01, "model.residual": False}
    grid_runs.grid.seeds = [1337]
    expected = f"gptlab ablate {source} --set train.lr=0.01 --set model.residual=false --seeds 1 --out {out}"
    assert reproduce_command(grid_runs) == expected
