"""Reports of ablation grids: a grid folder's README.md (claims, what was run, the ranked table, figures,
samples) and the index of all grids, rendered from ``results.load_grid_runs``.

Every number comes from the run records and every sentence about a result from a checked claim or a
computed verdict. Files are written only when their content changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from gptlab import plots
from gptlab.claims import METHOD as CLAIMS_METHOD
from gptlab.claims import ClaimResult, counts
from gptlab.errors import GptlabError
from gptlab.files import write_if_changed
from gptlab.grid import DEFAULT_SCALE, format_value
from gptlab.results import GridRuns, VariantRow, finished, grid_folders, load_grid_runs, summarize_grid
from gptlab.record import SAMPLE_SEED
from gptlab.sequential import METHOD as SEQUENTIAL_METHOD
from gptlab.sequential import involved
from gptlab.stats import METHOD, summarize

ATTENTION_KEYS = {"model.qk", "model.values", "model.mask"}
THROUGHPUT_KEYS = {"model.mask"}
LEAK_NOTE = "sees the future (no causal mask): its low loss is not a real result"
SAMPLE_LINES = 4
COLUMNS = ["variant", "val loss", "std", "min–max", "Δ vs baseline", "verdict", "train loss", "params", "tokens/s",
           "seeds"]
STATUS_MARK = {"holds": "✅ holds", "contradicted": "❌ contradicted", "not established": "➖ not established"}


def signed(value: float | None, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, "+" + fmt).replace("-", "−")


def number(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table_cells(row: VariantRow) -> list[str]:
    """A row of the markdown table, in COLUMNS order."""
    name = f"`{row.variant}`" + (" (baseline)" if row.is_baseline else "") + (" ⚠" if row.leaks_future else "")
    seeds = f"{row.runs} of {row.seeds}"
    if row.diverged:
        seeds += f", {row.diverged} diverged (step {', '.join(map(str, sorted(set(row.diverged_at))))})"
    spread = "—" if row.min is None else f"{row.min:.4f}–{row.max:.4f}"
    return [name, number(row.mean, ".4f"), number(row.std, ".4f"), spread, signed(row.delta), row.verdict,
            number(row.train_loss, ".4f"), number(row.params, ","), number(row.tokens_per_sec, ",.0f"), seeds]


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def distinct(values: list[Any]) -> str:
    found = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(found) if found else "unknown"


def overrides_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={format_value(v)}`" for k, v in overrides.items())


def reproduce_command(grid_runs: GridRuns) -> str:
    """``gptlab ablate <source>`` plus what the runs had beyond the grid file (``--scale``, ``--set``, ``--seeds``,
    ``--out``), as far as the file is here to compare with."""
    grid = grid_runs.grid
    source = grid.source or "<grid.yaml>"
    command = f"gptlab ablate {source}"
    if grid.scale != DEFAULT_SCALE:
        command += f" --scale {grid.scale}"
    try:
        raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raw = None
    if isinstance(raw, dict):
        in_file = {**(raw.get("set") or {}), **((raw.get("scales") or {}).get(grid.scale, {}).get("set") or {})}
        extra = {k: v for k, v in grid.set.items() if in_file.get(k) != v}
        command += "".join(f" --set {k}={format_value(v)}" for k, v in extra.items())
        scale = (raw.get("scales") or {}).get(grid.scale, {}) if grid.scale != DEFAULT_SCALE else {}
        file_seeds = scale.get("seeds", raw.get("seeds"))
        if file_seeds is not None and list(file_seeds) != list(grid.seeds):
            command += f" --seeds {len(grid.seeds)}"
    if grid.design is not None:
        command += f" --until-settled --max-seeds {grid.design.max_seeds}"
    out = grid_runs.folder.parent.as_posix()
    if out not in ("reports", "."):
        command += f" --out {out}"
    return command


def provenance_lines(grid_runs: GridRuns) -> list[str]:
    records = grid_runs.records
    by_commit: dict[str, int] = {}
    for r in records:
        state = r.git_commit + (" with uncommitted changes" if r.git_dirty else "" if r.git_dirty is False
                                else " (tree state not recorded)")
        by_commit[state] = by_commit.get(state, 0) + 1
    commits = "; ".join(f"`{c.split(' ')[0]}`{c[len(c.split(' ')[0]):]} ({n} runs)" for c, n in sorted(by_commit.items()))
    return [
        f"- Device: {distinct([r.device for r in records])} (torch {distinct([r.torch_version for r in records])})",
        f"- Total compute time: {duration(sum(r.wall_time for r in records))} (sum of the wall time of "
        f"{len(records)} runs)",
        f"- Code: gptlab {distinct([r.gptlab_version for r in records])}, git commit {commits or 'unknown'}",
    ]


def what_was_run(grid_runs: GridRuns) -> list[str]:
    grid = grid_runs.grid
    lines = [
        f"- Reproduce: `{reproduce_command(grid_runs)}` (then `gptlab report {grid_runs.folder.as_posix()}`)",
        f"- Scale: `{grid.scale}`" + (f" (the grid file's scales: {', '.join(grid.scales)}; "
                                       f"`--scale NAME` picks one)" if len(grid.scales) > 1 else ""),
        f"- Preset: `{grid.preset}`; overrides for every run: {overrides_text(grid.set) or 'none'}",
        f"- Seeds: {', '.join(map(str, grid.seeds))}",
        *seeds_until_settled(grid_runs),
        *provenance_lines(grid_runs),
        "- Variants:",
    ]
    for v in grid.variants:
        parts = [f"preset `{v.preset}`"] if v.preset != grid.preset else []
        parts += [overrides_text(v.overrides)] if v.overrides else []
        lines.append(f"  - `{v.name}`: {'; '.join(parts) or 'the preset unchanged'}")
    return lines


def seeds_until_settled(grid_runs: GridRuns) -> list[str]:
    """With seeds added until settled: the planned looks, and how many seeds each variant got and why."""
    grid = grid_runs.grid
    if grid.design is None:
        return []
    looks = grid.design.looks()
    settlement = grid_runs.settlement(grid.design)
    lines = [f"- Seeds until settled: looks planned at {', '.join(map(str, looks))} seeds per variant, "
             f"{settlement.looks_taken} taken; each variant's seeds (the grid's, then counting on from the largest):"]
    for name in grid.variant_names:
        claims = [i for i, c in enumerate(grid.claims) if name in involved(c, grid.baseline)]
        why = "; ".join(f"claim {i + 1} " + (f"settled at look {settlement.settled_at[i]}"
                                             if settlement.settled_at[i] else "open")
                        for i in claims) or "no claim"
        lines.append(f"  - `{name}`: {len(grid.seeds_of(name))} ({why})")
    return lines


def claim_lines(results: list[ClaimResult], sequential: bool = False) -> list[str]:
    if not results:
        return []
    rows = []
    for r in results:
        effect = "—" if r.effect is None else f"{signed(r.effect)} [{signed(r.ci[0])}, {signed(r.ci[1])}]" if r.ci else signed(r.effect)
        seeds = f"{r.seeds[0]}" + (f" vs {r.seeds[1]}" if r.claim.near is None else "")
        text = r.text + (f" — {r.claim.note}" if r.claim.note else "")
        rows.append([text, STATUS_MARK[r.status], effect, seeds, r.reason])
    tally = counts(results)
    return ["## Claims", "",
            f"{tally['holds']} hold, {tally['contradicted']} contradicted, {tally['not established']} not established "
            f"(of {len(results)}).", "",
            markdown_table(["claim", "status", "effect [95% CI]", "seeds", "test"], rows), "",
            f"Effect: difference of mean final val loss (variant − other, or − the reference value). Method: "
            f"{CLAIMS_METHOD}" + (f"; {SEQUENTIAL_METHOD}" if sequential else "") + ".", ""]


def figure_labels(rows: list[VariantRow]) -> dict[str, str]:
    return {r.variant: r.variant + (" (baseline)" if r.is_baseline else "")
            + (" (leaks the future)" if r.leaks_future else "")
            + (f" ({r.runs} of {r.seeds} seeds)" if r.runs < r.seeds else "") for r in rows}


def figure_list(grid_runs: GridRuns) -> list[tuple[str, str]]:
    """The (caption, file name) pairs of the figures a report shows, without drawing them."""
    return draw_figures(grid_runs, summarize_grid(grid_runs), draw=False)


def draw_figures(grid_runs: GridRuns, rows: list[VariantRow], draw: bool = True) -> list[tuple[str, str]]:
    """Write the grid's PNGs next to its README (unless ``draw`` is False); returns (caption, file name) pairs."""
    grid = grid_runs.grid
    finished_names = {r.variant for r in rows if r.runs}
    ranked = [name for name in grid.variant_names if name in finished_names]  # the grid's own order
    if not ranked:
        return []
    folder = grid_runs.folder
    colors, labels = plots.variant_colors(grid.variant_names), figure_labels(rows)
    done = {name: finished(grid_runs.runs_of(name)) for name in grid.variant_names if name in ranked}
    leaking = {r.variant for r in rows if r.leaks_future}
    figures: list[tuple[str, str, Callable[[Path], Path]]] = [
        ("Validation loss curves", "val_loss_curves.png",
         lambda path: plots.loss_curves(done, colors, labels, grid.baseline, leaking, path)),
        ("Final validation loss", "final_val_loss.png", lambda path: plots.final_loss_bars(
            [(n, summarize([r.final_val_loss for r in done[n] if r.final_val_loss is not None])) for n in ranked],
            colors, labels, path)),
    ]
    varied = grid_runs.varied_keys()
    if varied & THROUGHPUT_KEYS:
        speeds = [(n, summarize([r.tokens_per_sec for r in runs])) for n, runs in done.items()]
        figures.append(("Throughput", "throughput.png", lambda path: plots.throughput_bars(speeds, colors, labels, path)))
    maps = [(n, runs[0].extra["attention"]) for n, runs in done.items() if "attention" in runs[0].extra]
    if varied & ATTENTION_KEYS and maps:
        figures.append(("Attention pattern", "attention.png", lambda path: plots.attention_grid(maps, labels, path)))
    if draw:
        for _, name, draw_one in figures:
            draw_one(folder / name)
    return [(caption, name) for caption, name, _ in figures]


def fenced(text: str) -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}text\n{text}\n{fence}"


def samples(grid_runs: GridRuns) -> list[str]:
    lines = []
    for name in grid_runs.grid.variant_names:
        runs = grid_runs.runs_of(name)
        if runs and runs[0].sample:
            first = "\n".join(runs[0].sample.strip("\n").splitlines()[:SAMPLE_LINES])
            lines += [f"**{name}** (seed {runs[0].seed}):", "", fenced(first), ""]
    return lines


def grid_markdown(grid_runs: GridRuns, rows: list[VariantRow], claims: list[ClaimResult],
                  figures: list[tuple[str, str]]) -> str:
    grid = grid_runs.grid
    lines = [f"# {grid.title}", "", f"Scale: `{grid.scale}`.", ""]
    if grid.insight:
        lines += [grid.insight, ""]
    lines += claim_lines(claims, sequential=grid.design is not None)
    lines += ["## Results", ""]
    if not grid_runs.records:
        lines += ["No finished runs yet.", ""]
    else:
        lines += [markdown_table(COLUMNS, [table_cells(r) for r in rows]), "",
                  f"Ranked by mean final validation loss over seeds (lower is better); std over seeds (ddof=1); "
                  f"Δ = variant mean − baseline mean. Verdicts: {METHOD}."]
        leaking = [f"`{r.variant}`" for r in rows if r.leaks_future]
        if leaking:
            lines += ["", f"⚠ {', '.join(leaking)} {LEAK_NOTE}; it is not compared with the baseline."]
        lines.append("")
    missing = grid_runs.missing()
    if missing:
        lines += [f"## Missing runs ({len(missing)} of {grid.run_count})", "",
                  *[f"- {m}" for m in missing], ""]
    if grid_runs.skipped:
        lines += ["## Skipped files", "", *[f"- {s}" for s in grid_runs.skipped], ""]
    lines += ["## What was run", "", *what_was_run(grid_runs), ""]
    if figures:
        lines += ["## Figures", ""]
        for caption, name in figures:
            lines += [f"![{caption}]({name})", ""]
    sample_lines = samples(grid_runs)
    if sample_lines:
        lines += ["## Samples", "", f"The first {SAMPLE_LINES} lines of each variant's generated text (its first "
                  f"seed, prompt '\\n', sampling seed {SAMPLE_SEED}).", "", *sample_lines]
    return "\n".join(lines).rstrip() + "\n"


def render(grid_runs: GridRuns) -> tuple[Path, list[VariantRow], list[ClaimResult]]:
    """Write ``<grid>/README.md`` and its PNGs (each only if changed); returns the path, rows and claim results."""
    rows = summarize_grid(grid_runs)
    claims = grid_runs.claim_results()
    path = grid_runs.folder / "README.md"
    write_if_changed(path, grid_markdown(grid_runs, rows, claims, draw_figures(grid_runs, rows)))
    return path, rows, claims


def grid_summary(grid_runs: GridRuns) -> dict[str, Any]:
    """A grid's results as plain data (for JSON): ranked rows, claims, missing runs and skipped files."""
    return {"name": grid_runs.grid.name, "title": grid_runs.grid.title, "scale": grid_runs.grid.scale,
            "folder": grid_runs.folder.as_posix(), "rows": [r.to_dict() for r in summarize_grid(grid_runs)],
            "claims": [c.to_dict() for c in grid_runs.claim_results()], "missing": grid_runs.missing(),
            "skipped": grid_runs.skipped}


def index_markdown(reports_dir: Path) -> str:
    """``reports/README.md``: every grid with its scale, runs, device and claim counts, linked to its report."""
    header = ["grid", "scale", "runs", "claims: hold / contradicted / not established", "device"]
    rows = []
    for folder in grid_folders(reports_dir):
        link = f"{folder.relative_to(reports_dir).as_posix()}/README.md"
        try:
            grid_runs = load_grid_runs(folder)
        except GptlabError as err:
            rows.append([f"**{folder.name}**", "", "", f"cannot be read: {err}", ""])
            continue
        grid = grid_runs.grid
        tally = counts(grid_runs.claim_results())
        claims = f"{tally['holds']} / {tally['contradicted']} / {tally['not established']}" if grid.claims else "none"
        rows.append([f"[{grid.title}]({link})", f"`{grid.scale}`",
                     f"{len(grid_runs.records)} of {grid.run_count}", claims,
                     distinct([r.device for r in grid_runs.records])])
    return "\n".join(["# Ablation reports", "", "Generated by `gptlab report` from the run records in each folder; "
                      "each report states its claims and whether its runs back them, then how and where the runs "
                      "were produced.", "", markdown_table(header, rows), ""])


def write_index(reports_dir: Path) -> Path:
    reports_dir = Path(reports_dir)
    if (reports_dir / "grid.json").is_file():
        raise GptlabError(f"{reports_dir}: is one grid's folder; the index belongs in the folder above it")
    path = reports_dir / "README.md"
    write_if_changed(path, index_markdown(reports_dir))
    return path
