"""Reports of ablation grids: read a grid folder's runs, rank the variants, write README.md + PNGs, and an index.

Every sentence about a result is computed from the run records; unreadable or missing runs are listed, not fatal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gptlab import plots, results
from gptlab.errors import GptlabError
from gptlab.grid import format_value
from gptlab.record import SCHEMA, RunRecord, load_record, write_atomic
from gptlab.runner import SAMPLE_PROMPT, SAMPLE_SEED
from gptlab.stats import METHOD, compare, summarize

ATTENTION_KEYS = {"model.qk", "model.values", "model.mask"}
THROUGHPUT_KEYS = {"model.mask"}
LEAK_NOTE = "sees the future (model.mask = none): its low loss is not a real result"
SAMPLE_LINES = 4
COLUMNS = ["variant", "val loss", "std", "min–max", "Δ vs baseline", "train loss", "params", "tokens/s",
           "diverged", "verdict"]


@dataclass
class Grid:
    """One grid folder: its grid.json, the readable run records, and a line for every file that was skipped."""

    folder: Path
    spec: dict[str, Any]
    records: list[RunRecord]
    skipped: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.folder.name)

    @property
    def title(self) -> str:
        return str(self.spec.get("title") or self.name)

    @property
    def variants(self) -> list[dict[str, Any]]:
        return self.spec["variants"]

    @property
    def variant_names(self) -> list[str]:
        return [v["name"] for v in self.variants]

    @property
    def baseline(self) -> str:
        return self.spec["baseline"]

    def runs_of(self, variant: str) -> list[RunRecord]:
        return sorted((r for r in self.records if r.variant == variant), key=lambda r: r.seed)

    def missing(self) -> list[str]:
        done = {(r.variant, r.seed) for r in self.records}
        return [f"{name} (seed {seed})" for name in self.variant_names for seed in self.spec["seeds"]
                if (name, seed) not in done]

    def varied_keys(self) -> set[str]:
        """Dotted keys whose value differs between variants."""
        keys = {k for v in self.variants for k in v.get("overrides", {})}
        return {k for k in keys if len({json.dumps(v.get("overrides", {}).get(k)) for v in self.variants}) > 1}

    def leaks_future(self, variant: str) -> bool:
        """From the config (not the name): a variant whose attention has no causal mask sees the next characters."""
        runs = self.runs_of(variant)
        if runs:
            return any(r.config.get("model", {}).get("mask") == "none" for r in runs)
        spec = next(v for v in self.variants if v["name"] == variant)
        return {**self.spec.get("set", {}), **spec.get("overrides", {})}.get("model.mask") == "none"


def find_grids(path: Path) -> list[Path]:
    """``path`` itself if it is a grid folder, else its sub-folders that are (sorted by name)."""
    if not path.is_dir():
        raise GptlabError(f"{path}: no such folder; give a reports folder or one grid folder (reports/<name>)")
    return results.grid_dirs(path)


def is_grid_dir(path: Path) -> bool:
    return results.grid_dirs(path) == [path]


def load_spec(folder: Path) -> dict[str, Any]:
    path = folder / "grid.json"
    if not path.is_file():
        raise GptlabError(f"{path}: missing; a grid folder is written by `gptlab ablate <grid.yaml>`")
    try:
        spec = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GptlabError(f"{path}: not valid JSON ({err}); rerun `gptlab ablate` for this grid") from err
    lacking = [k for k in ("variants", "seeds", "baseline") if not isinstance(spec, dict) or k not in spec]
    if lacking:
        raise GptlabError(f"{path}: lacks {', '.join(lacking)}; rerun `gptlab ablate` for this grid")
    return spec


def read_run(path: Path) -> RunRecord:
    """One run record; raises ValueError with the reason it cannot be used."""
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError("not valid JSON (half-written or corrupt)") from err
    schema = raw.get("schema") if isinstance(raw, dict) else None
    if schema != SCHEMA:
        raise ValueError(f"a run record of schema {schema} (older gptlab); this gptlab reads schema {SCHEMA}")
    return load_record(path)


def load_grid(folder: Path) -> Grid:
    """Read grid.json and the runs it describes under runs/; any other file becomes one line in ``skipped``."""
    spec = load_spec(folder)
    grid = Grid(folder, spec, [])
    names, seeds = set(grid.variant_names), set(spec["seeds"])
    current = results.current_keys(folder)  # None when grid.json cannot be expanded: then the newest run counts
    chosen: dict[tuple[str, int], tuple[RunRecord, Path]] = {}
    rerun = f"`gptlab ablate {spec.get('source', '<grid.yaml>')}` reruns it"
    for path in sorted((folder / "runs").glob("*.json")):
        where = path.relative_to(folder)
        try:
            record = read_run(path)
        except (OSError, ValueError) as err:
            grid.skipped.append(f"{where}: {err}; skipped ({rerun})")
            continue
        if record.variant not in names or record.seed not in seeds or (current and record.key not in current):
            grid.skipped.append(f"{where}: {record.variant!r} seed {record.seed} with a config that grid.json does "
                                "not describe (an earlier `gptlab ablate` of this folder); skipped")
            continue
        slot = (record.variant, record.seed)
        if slot in chosen:
            (_, older), kept = sorted([(record, where), chosen[slot]], key=lambda pair: pair[0].created)
            grid.skipped.append(f"{older}: an older run of {record.variant!r} seed {record.seed}; skipped")
            chosen[slot] = kept
        else:
            chosen[slot] = (record, where)
    grid.records = [record for record, _ in chosen.values()]
    return grid


def finished(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status != "diverged" and r.final_val_loss is not None]


def nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def variant_rows(grid: Grid) -> list[dict[str, Any]]:
    """The results table as records: one dict per variant, ranked by mean final val loss (no result last)."""
    base_losses = [r.final_val_loss for r in finished(grid.runs_of(grid.baseline))]
    rows = []
    for name in grid.variant_names:
        runs = grid.runs_of(name)
        done = finished(runs)
        losses = [r.final_val_loss for r in done]
        row: dict[str, Any] = {
            "variant": name, "baseline": name == grid.baseline, "leaks_future": grid.leaks_future(name),
            "runs": len(done), "diverged": len(runs) - len(done),
            "diverged_at": sorted(r.diverged_at for r in runs if r.diverged_at is not None),
            "mean_val_loss": None, "std_val_loss": None, "min_val_loss": None, "max_val_loss": None,
            "delta_vs_baseline": None, "p_value": None, "significant": False,
            "mean_train_loss": None, "params": runs[0].params if runs else None,
            "tokens_per_sec": None, "verdict": verdict_without_numbers(name, grid, runs, base_losses),
        }
        if done:
            s = summarize(losses)
            row.update(mean_val_loss=s.mean, std_val_loss=nan_to_none(s.std), min_val_loss=s.min, max_val_loss=s.max,
                       mean_train_loss=summarize([r.final_train_loss for r in done]).mean,
                       tokens_per_sec=summarize([r.tokens_per_sec for r in done]).mean)
        if done and base_losses and name != grid.baseline:
            c = compare(losses, base_losses)
            row.update(delta_vs_baseline=c.delta, p_value=c.p_value, significant=c.significant, verdict=c.verdict)
            if row["leaks_future"]:  # its gap is real but means nothing: it reads the characters it predicts
                row.update(p_value=None, significant=False, verdict="not comparable: " + LEAK_NOTE)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["mean_val_loss"] is None, r["mean_val_loss"] or 0.0))


def verdict_without_numbers(name: str, grid: Grid, runs: list[RunRecord], base_losses: list[float]) -> str:
    if name == grid.baseline:
        return "baseline"
    if not runs:
        return "not run yet"
    if not finished(runs):
        return "diverged in every run"
    if not base_losses:
        return "not established: the baseline has no finished run"
    return ""


def signed(value: float | None, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, "+" + fmt).replace("-", "−")


def number(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table_cells(row: dict[str, Any]) -> list[str]:
    """A row's text, in COLUMNS order (shared by the markdown and the terminal table)."""
    name = row["variant"] + (" (baseline)" if row["baseline"] else "")
    name += " ⚠ leaks the future" if row["leaks_future"] else ""
    diverged = "—" if not row["diverged"] else f"{row['diverged']} of {row['diverged'] + row['runs']}"
    steps = ", ".join(map(str, sorted(set(row["diverged_at"]))))
    if steps:
        diverged += f" (step {steps})"
    if row["runs"] == 0 and row["diverged"]:
        mean = f"diverged at step {steps}"
    else:
        mean = number(row["mean_val_loss"], ".4f")
    spread = "—" if row["min_val_loss"] is None else f"{row['min_val_loss']:.4f}–{row['max_val_loss']:.4f}"
    return [name, mean, number(row["std_val_loss"], ".4f"), spread, signed(row["delta_vs_baseline"]),
            number(row["mean_train_loss"], ".4f"), number(row["params"], ","), number(row["tokens_per_sec"], ",.0f"),
            diverged, row["verdict"]]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def distinct(values: list[Any], fallback: Any) -> str:
    found = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(found) if found else str(fallback or "unknown")


def overrides_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={format_value(v)}`" for k, v in overrides.items())


def reproduce_command(spec: dict[str, Any]) -> str:
    """``gptlab ablate <source>``, plus the ``--set``/``--seeds`` the runs had beyond the grid file (if it is here)."""
    source = spec.get("source") or "<grid.yaml>"
    command = f"gptlab ablate {source}"
    try:
        raw = yaml.safe_load(Path(source).read_text())
    except (OSError, yaml.YAMLError):
        return command
    raw = raw if isinstance(raw, dict) else {}
    in_file = raw.get("set") or {}
    extra = {k: v for k, v in spec.get("set", {}).items() if in_file.get(k) != v}
    command += "".join(f" --set {k}={format_value(v)}" for k, v in extra.items())
    file_seeds = raw.get("seeds")
    if file_seeds is not None and list(file_seeds) != list(spec["seeds"]):
        command += f" --seeds {len(spec['seeds'])}"
    return command


def what_was_run(grid: Grid) -> list[str]:
    spec, records = grid.spec, grid.records
    lines = [
        f"- Reproduce: `{reproduce_command(spec)}` (then `gptlab report {grid.folder.as_posix()}`)",
        f"- Preset: `{spec.get('preset', 'unknown')}`; overrides for every run: "
        f"{overrides_text(spec.get('set', {})) or 'none'}",
        f"- Seeds: {', '.join(map(str, spec['seeds']))}",
        f"- Device: {distinct([r.device for r in records], spec.get('device'))}"
        f" (torch {distinct([r.torch_version for r in records], None)})",
        f"- Total compute time: {duration(sum(r.wall_time for r in records))} (sum of the wall time of "
        f"{len(records)} runs)",
        f"- gptlab {distinct([r.gptlab_version for r in records], spec.get('gptlab_version'))}, "
        f"git commit `{distinct([r.git_commit for r in records], spec.get('git_commit'))}`",
        "- Variants:",
    ]
    for v in grid.variants:
        parts = [f"preset `{v['preset']}`"] if v.get("preset") and v["preset"] != spec.get("preset") else []
        parts += [overrides_text(v.get("overrides", {}))] if v.get("overrides") else []
        lines.append(f"  - `{v['name']}`: {'; '.join(parts) or 'the preset unchanged'}")
    return lines


def figure_labels(rows: list[dict[str, Any]], seeds: int) -> dict[str, str]:
    return {r["variant"]: r["variant"] + (" (baseline)" if r["baseline"] else "")
            + (" (leaks the future)" if r["leaks_future"] else "")
            + (f" ({r['runs']} of {seeds} seeds)" if r["runs"] < seeds else "") for r in rows}


def draw_figures(grid: Grid, rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Write the grid's PNGs next to its README; returns (caption, file name) pairs."""
    ranked = [r["variant"] for r in rows if r["runs"]]
    if not ranked:
        return []
    colors, labels = plots.variant_colors(grid.variant_names), figure_labels(rows, len(grid.spec["seeds"]))
    done = {name: finished(grid.runs_of(name)) for name in grid.variant_names if name in ranked}
    leaking = {r["variant"] for r in rows if r["leaks_future"]}
    figures = [
        ("Validation loss curves", plots.loss_curves(done, colors, labels, grid.baseline, leaking,
                                                     grid.folder / "val_loss_curves.png")),
        ("Final validation loss", plots.final_loss_bars(
            [(n, summarize([r.final_val_loss for r in done[n]])) for n in ranked], colors, labels,
            grid.folder / "final_val_loss.png")),
    ]
    varied = grid.varied_keys()
    if varied & THROUGHPUT_KEYS:
        speeds = sorted(((n, summarize([r.tokens_per_sec for r in runs])) for n, runs in done.items()),
                        key=lambda item: -item[1].mean)
        figures.append(("Throughput", plots.throughput_bars(speeds, colors, labels, grid.folder / "throughput.png")))
    maps = [(n, runs[0].extra["attention"]) for n, runs in done.items() if "attention" in runs[0].extra]
    if varied & ATTENTION_KEYS and maps:
        figures.append(("Attention pattern", plots.attention_grid(maps, labels, grid.folder / "attention.png")))
    return [(caption, path.name) for caption, path in figures]


def fenced(text: str) -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}text\n{text}\n{fence}"


def samples(grid: Grid) -> list[str]:
    lines = []
    for name in grid.variant_names:
        runs = grid.runs_of(name)
        if runs and runs[0].sample:
            first = "\n".join(runs[0].sample.strip("\n").splitlines()[:SAMPLE_LINES])
            lines += [f"**{name}** (seed {runs[0].seed}):", "", fenced(first), ""]
    return lines


def grid_markdown(grid: Grid, rows: list[dict[str, Any]], figures: list[tuple[str, str]]) -> str:
    lines = [f"# {grid.title}", ""]
    if grid.spec.get("insight"):
        lines += [str(grid.spec["insight"]).strip(), ""]
    lines += ["## What was run", "", *what_was_run(grid), "", "## Results", ""]
    if not grid.records:
        lines += ["No finished runs yet.", ""]
    else:
        lines += [f"Finding: {finding(grid, rows)}.", "", markdown_table(rows), "",
                  f"Ranked by mean final validation loss over seeds (lower is better); std over seeds (ddof=1); "
                  f"Δ = variant mean − baseline mean. Verdicts: {METHOD}."]
        leaking = [f"`{r['variant']}`" for r in rows if r["leaks_future"]]
        if leaking:
            lines += ["", f"⚠ leaks the future: {', '.join(leaking)} {LEAK_NOTE}."]
        lines.append("")
    missing = grid.missing()
    if missing:
        lines += [f"## Missing runs ({len(missing)} of {len(grid.variants) * len(grid.spec['seeds'])})", "",
                  *[f"- {m}" for m in missing], ""]
    if grid.skipped:
        lines += ["## Skipped files", "", *[f"- {s}" for s in grid.skipped], ""]
    if figures:
        lines += ["## Figures", ""]
        for caption, name in figures:
            lines += [f"![{caption}]({name})", ""]
    sample_lines = samples(grid)
    if sample_lines:
        lines += ["## Samples", "", f"The first {SAMPLE_LINES} lines of each variant's generated text (its first "
                  f"seed, prompt {SAMPLE_PROMPT!r}, sampling seed {SAMPLE_SEED}).", "", *sample_lines]
    return "\n".join(lines).rstrip() + "\n"


def finding(grid: Grid, rows: list[dict[str, Any]]) -> str:
    """One line from the numbers: the best honest variant and how it compares with the baseline."""
    honest = [r for r in rows if r["runs"] and not r["leaks_future"]]
    if not honest:
        return "no finished runs yet" if not any(r["runs"] for r in rows) else "only variants that leak the future ran"
    best = honest[0]
    if best["baseline"]:
        text = f"the baseline `{best['variant']}` has the lowest val loss, {best['mean_val_loss']:.3f}"
        others = [r for r in honest if not r["baseline"]]
        if others:
            text += f"; the next, `{others[0]['variant']}`, is {others[0]['verdict']}"
    else:
        text = (f"`{best['variant']}` has the lowest val loss, {best['mean_val_loss']:.3f}; against the baseline "
                f"`{grid.baseline}` it is {best['verdict']}")
    compared = [r for r in rows if r["p_value"] is not None]
    if len(compared) > 1:
        text += (f"; {sum(r['significant'] for r in compared)} of {len(compared)} variants tested differ "
                 "significantly from the baseline")
    if grid.varied_keys() & THROUGHPUT_KEYS and len(honest) > 1:
        fastest, slowest = max(honest, key=speed), min(honest, key=speed)
        text += (f"; `{fastest['variant']}` trains fastest, {speed(fastest):,.0f} tokens/s, "
                 f"{speed(fastest) / speed(slowest):.2f}x `{slowest['variant']}`")
    missing = grid.missing()
    if missing:
        text += f"; partial: {len(missing)} of {len(grid.variants) * len(grid.spec['seeds'])} runs missing"
    return text


def speed(row: dict[str, Any]) -> float:
    return row["tokens_per_sec"]


def grid_summary(grid: Grid, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A grid's results as plain data (for JSON): the ranked rows, the finding, missing runs and skipped files."""
    return {"name": grid.name, "title": grid.title, "folder": grid.folder.as_posix(),
            "finding": finding(grid, rows), "rows": rows, "missing": grid.missing(), "skipped": grid.skipped}


def render_grid(grid: Grid) -> tuple[Path, list[dict[str, Any]]]:
    """Write ``<grid>/README.md`` and its PNGs; returns the path and the table rows."""
    rows = variant_rows(grid)
    path = grid.folder / "README.md"
    write_atomic(path, grid_markdown(grid, rows, draw_figures(grid, rows)))
    return path, rows


def write_grid_report(grid_dir: Path) -> Path:
    return render_grid(load_grid(Path(grid_dir)))[0]


def write_index(reports_dir: Path) -> Path:
    """``reports/README.md``: every grid's title, its one-line finding and a link to its report."""
    reports_dir = Path(reports_dir)
    folders = find_grids(reports_dir)
    if is_grid_dir(reports_dir):
        raise GptlabError(f"{reports_dir}: is one grid's folder; the index belongs in the folder above it")
    lines = ["# Ablation reports", "", "Generated by `gptlab report` from the run records in each folder; "
             "each report says how and where its runs were produced.", ""]
    for folder in folders:
        link = f"{folder.relative_to(reports_dir).as_posix()}/README.md"
        try:
            grid = load_grid(folder)
        except GptlabError as err:
            lines.append(f"- **{folder.name}**: cannot be read: {err}")
            continue
        runs = f"{len(grid.records)} of {len(grid.variants) * len(grid.spec['seeds'])} runs"
        devices = distinct([r.device for r in grid.records], grid.spec.get("device"))
        lines.append(f"- **[{grid.title}]({link})** ({runs}, {devices}): {finding(grid, variant_rows(grid))}.")
    path = reports_dir / "README.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path
