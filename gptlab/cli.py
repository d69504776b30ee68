"""The ``gptlab`` command line (Typer): parses arguments, calls the library, prints with rich."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
import typer
from rich import box
from rich.table import Table

from gptlab import checkpoint, results
from gptlab import report as reports
from gptlab.components import REGISTRIES
from gptlab.config import PRESET_INFO, PRESETS, RunConfig, apply_overrides, parse_set_args, preset, validate
from gptlab.data import Corpus
from gptlab.device import resolve_device
from gptlab.display import console, err_console, progress_bar
from gptlab.errors import GptlabError, choice_error
from gptlab.flops import flops_per_token, matmul_peak_flops
from gptlab.grid import Grid, RunSpec, load_grid, plan_rows
from gptlab.model import build_model
from gptlab.runner import LiveProgress, LocalProcessExecutor, to_run, write_manifest
from gptlab.sampling import generate_text
from gptlab.train import Progress, train as run_training

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

LONG_RUN_FLOPS = 1e15  # about an hour or more on a laptop-class CPU
SetOption = typer.Option(None, "--set", help="Override a config field, e.g. --set model.n_layer=4 (repeatable).")
DeviceOption = typer.Option(None, "--device", help="auto (CUDA when present), cpu or cuda.")


def fail(err: GptlabError) -> None:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def build_config(preset_name: str, sets: list[str] | None, device: str | None) -> RunConfig:
    overrides = parse_set_args(sets or [])
    if device is not None:
        overrides["train.device"] = device
    return validate(apply_overrides(preset(preset_name), overrides))


def loss_text(p: Progress, last_val: list[float]) -> str:
    if p.val_loss is not None:
        last_val[0] = p.val_loss
    parts = []
    if p.train_loss is not None:
        parts.append(f"train {p.train_loss:.3f}")
    if last_val[0] == last_val[0]:
        parts.append(f"val {last_val[0]:.3f}")
    return "  ".join(parts)


def warn_if_slow(cfg: RunConfig) -> None:
    """On CPU, warn before a run of hours: its FLOPs over this machine's measured matmul peak."""
    if resolve_device(cfg.train.device).type != "cpu":
        return
    n_params = build_model(cfg.model).num_params()
    tokens = cfg.train.max_iters * cfg.train.batch_size * cfg.model.block_size
    total_flops = flops_per_token(cfg.model, n_params) * tokens
    if total_flops < LONG_RUN_FLOPS:
        return
    utilisation = 0.3
    hours = total_flops / (utilisation * matmul_peak_flops()) / 3600
    err_console.print(
        f"[yellow]warning:[/] this run on CPU: about {hours:.1f} hours (estimated at {utilisation:.0%} of this "
        "CPU's measured matmul peak); use a GPU (--device cuda) or fewer iterations (--set train.max_iters=...)"
    )


def guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except GptlabError as err:
        fail(err)


@app.command()
def train(
    preset_name: str = typer.Option("lecture", "--preset", help=f"One of: {', '.join(PRESETS)}."),
    sets: Optional[list[str]] = SetOption,
    device: Optional[str] = DeviceOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Any UTF-8 text file (default: tiny Shakespeare)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: out/<preset>)."),
    sample_tokens: int = typer.Option(300, "--sample-tokens", help="Characters to sample at the end (0: none)."),
) -> None:
    """Train a preset; writes a checkpoint and the loss curve, prints a sample."""

    def run() -> None:
        extra = list(sets or []) + ([f"data.path={data}"] if data else [])
        cfg = build_config(preset_name, extra, device)
        corpus = Corpus.from_file(cfg.data.path, cfg.data.train_fraction)
        corpus.check_block_size(cfg.model.block_size)
        warn_if_slow(cfg)
        out_dir = out or Path("out") / preset_name
        out_dir.mkdir(parents=True, exist_ok=True)
        last_val = [float("nan")]
        with progress_bar() as bar:
            task = bar.add_task(f"train {preset_name}", total=cfg.train.max_iters, losses="")

            def on_progress(p: Progress) -> None:
                bar.update(task, completed=p.step, losses=loss_text(p, last_val))

            result = run_training(cfg, corpus, on_progress)
        cfg.model.vocab_size = corpus.tokenizer.vocab_size
        checkpoint.save(out_dir / "ckpt.pt", result.model, cfg, corpus.tokenizer)
        write_history(out_dir, result.history)
        summary = {
            "preset": preset_name,
            "final_val_loss": result.final_val_loss,
            "final_train_loss": result.final_train_loss,
            "best_val_loss": result.best_val_loss,
            "diverged_at": result.diverged_at,
            "wall_time_s": round(result.wall_time, 2),
            "tokens_per_sec": round(result.tokens_per_sec),
            "params": result.model.num_params(),
            "device": result.device,
            "config": cfg.to_dict(),
        }
        (out_dir / "result.json").write_text(json.dumps(summary, indent=2))
        if result.diverged_at is not None:
            console.print(f"[red]diverged[/] (non-finite loss) at step {result.diverged_at}")
        console.print(
            f"val loss [bold]{result.final_val_loss:.4f}[/]  train loss {result.final_train_loss:.4f}  "
            f"{result.wall_time:.1f} s  {result.tokens_per_sec:,.0f} tokens/s  {summary['params']:,} params  "
            f"on {result.device}"
        )
        console.print(f"wrote {out_dir / 'ckpt.pt'}, {out_dir / 'history.csv'}, {out_dir / 'result.json'}")
        if sample_tokens:
            console.rule("sample")
            console.print(generate_text(result.model, corpus.tokenizer, "\n", sample_tokens, cfg.train.seed),
                          highlight=False, markup=False)

    guarded(run)


def write_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    with open(out_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


@app.command()
def sample(
    ckpt: Path = typer.Argument(..., help="A checkpoint written by `gptlab train` (ckpt.pt)."),
    tokens: int = typer.Option(500, "--tokens", help="How many characters to generate."),
    prompt: str = typer.Option("\n", "--prompt", help="Text to continue (characters of the training corpus)."),
    seed: int = typer.Option(1337, "--seed", help="Sampling seed."),
) -> None:
    """Generate text from a checkpoint."""

    def run() -> None:
        if tokens < 1:
            raise GptlabError(f"--tokens = {tokens} is not allowed; must be >= 1")
        if not prompt:
            raise GptlabError("--prompt = '' is not allowed; give at least one character")
        model, _, tokenizer = checkpoint.load(ckpt)
        console.print(generate_text(model, tokenizer, prompt, tokens, seed), highlight=False, markup=False)

    guarded(run)


@app.command("list")
def list_components() -> None:
    """Presets and every component registry with its choices and insight."""
    presets = Table(title="presets (gptlab train --preset NAME)")
    presets.add_column("preset", style="bold")
    presets.add_column("what")
    for name in PRESETS:
        presets.add_row(name, PRESET_INFO[name])
    console.print(presets)
    components = Table(title="components (--set model.FIELD=CHOICE, or model.FIELD in a grid)")
    for column in ("field", "choice", "insight"):
        components.add_column(column, style="bold" if column == "field" else None)
    for field, registry in REGISTRIES.items():
        components.add_row(f"model.{field}", "", registry.insight, style="dim")
        for entry in registry.entries():
            components.add_row("", entry.name, entry.insight)
    components.add_row("model.n_head", "1..n_embd", "multi-head: several smaller heads vs one big one (must divide n_embd)")
    console.print(components)


@app.command()
def ablate(
    grid_file: Path = typer.Argument(..., help="A grid file, e.g. ablations/residuals.yaml."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override a config field for every run (repeatable)."),
    device: Optional[str] = DeviceOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded runs as a table and exit."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="N seeds: the file's first N (more: counting on)."),
    jobs: int = typer.Option(1, "--jobs", help="Runs at once, in processes that split the CPU cores."),
    force: bool = typer.Option(False, "--force", help="Rerun runs that already have a record."),
    out: Path = typer.Option(Path("reports"), "--out", help="Results folder; the grid writes OUT/<name>/."),
) -> None:
    """Run an ablation grid (resumable): every variant x seed, then a ranked table, results.csv and the report."""

    def run() -> None:
        if jobs < 1:
            raise GptlabError(f"--jobs = {jobs} is not allowed; must be >= 1")
        grid = load_grid(grid_file, parse_set_args(sets or []), device, seeds)
        specs = grid.runs()
        grid_dir = out / grid.name
        todo = to_run(specs, grid_dir / "runs", force)
        if dry_run:
            console.print(plan_table(grid, specs, {s.key for s in todo}))
            return
        write_manifest(grid, grid_dir, str(resolve_device(specs[0].config.train.device)))
        console.print(f"[bold]{grid.title}[/]: {len(specs)} runs ({len(grid.variants)} variants x "
                      f"{len(grid.seeds)} seeds), {len(specs) - len(todo)} already done, {len(todo)} to run, "
                      f"--jobs {jobs}")
        try:
            with LiveProgress(len(todo)) as live:
                LocalProcessExecutor(jobs).run(todo, grid_dir / "runs", live)
        except KeyboardInterrupt:
            err_console.print("interrupted; finished runs are saved, run the same command again to resume")
            raise typer.Exit(130)
        runs = results.load(grid_dir)
        console.print(results_table(grid, results.summary(runs, grid.baseline), specs, live.failed))
        console.print(f"wrote {results.write_csv(runs, grid_dir / 'results.csv')}")
        console.print(f"wrote {reports.write_grid_report(grid_dir)} and {reports.write_index(out)}")

    guarded(run)


def plan_table(grid: Grid, specs: list[RunSpec], todo: set[str]) -> Table:
    table = Table(title=f"{grid.name}: {len(specs)} runs ({len(todo)} to run), baseline {grid.baseline!r}")
    for column in ("variant", "seed", "preset", "overrides", "key", "state"):
        table.add_column(column)
    for row in plan_rows(grid, specs):
        state = "to run" if row["key"] in todo else "[green]done[/]"
        table.add_row(row["variant"], str(row["seed"]), row["preset"], row["overrides"], row["key"], state)
    return table


def results_table(grid: Grid, summary: pd.DataFrame, specs: list[RunSpec], failed: dict[str, str]) -> Table:
    """Variants ranked by mean val loss, then one line per failed run with its reason."""
    table = Table(title=f"{grid.title} ({grid.metric}, ranked)", box=box.SIMPLE_HEAD)
    for column in ("#", "variant", "mean", "std", "min-max", "n", "delta", "div", "tok/s"):
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=column != "variant")

    def num(value: float, fmt: str = ".4f") -> str:
        return "-" if value != value else format(value, fmt)

    for rank, row in enumerate(summary.itertuples(index=False), start=1):
        delta = "baseline" if row.variant == grid.baseline else num(row.delta, "+.4f")
        table.add_row(str(rank), row.variant, num(row.mean), num(row.std), f"{num(row.min, '.3f')}-{num(row.max, '.3f')}",
                      str(row.runs), delta, str(row.diverged) if row.diverged else "", f"{num(row.tokens_per_sec / 1000, ',.0f')}k")
    by_key = {s.key: s for s in specs}
    for key, reason in failed.items():
        spec = by_key[key]
        table.add_row("", spec.variant, f"[red]failed[/] (seed {spec.seed}): {reason}", *[""] * 6)
    return table


REPORT_FORMATS = ["rich", "markdown", "csv", "json"]


@app.command("report")
def report_command(
    path: Path = typer.Argument(Path("reports"), help="A reports folder, or one grid's folder (reports/<name>)."),
    fmt: str = typer.Option("rich", "--format", help="rich: tables here; markdown, csv or json: to stdout."),
    open_name: Optional[str] = typer.Option(None, "--open", help="Show only this grid (its folder name)."),
) -> None:
    """Write each grid's README.md and figures (and the index), and show each grid's results table."""

    def run() -> None:
        if fmt not in REPORT_FORMATS:
            raise choice_error("--format", fmt, REPORT_FORMATS)
        notes = console if fmt == "rich" else err_console  # machine formats keep stdout for the data
        shown, broken = [], 0
        for folder in report_folders(path, open_name):
            try:
                grid = reports.load_grid(folder)
            except GptlabError as err:
                err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
                broken += 1
                continue
            readme, rows = reports.render_grid(grid)
            shown.append((grid, rows))
            if fmt == "rich":
                console.print(report_table(grid, rows))
            elif fmt == "markdown":
                typer.echo(readme.read_text())
            missing = grid.missing()
            for line in grid.skipped + ([f"{len(missing)} runs missing: {', '.join(missing)}"] if missing else []):
                notes.print(f"[yellow]{grid.name}:[/] {line}", highlight=False, soft_wrap=True)
            notes.print(f"wrote {readme}", highlight=False)
        if open_name is None and not reports.is_grid_dir(path):
            notes.print(f"wrote {reports.write_index(path)}", highlight=False)
        if fmt == "csv":
            typer.echo(report_csv(shown), nl=False)
        elif fmt == "json":
            typer.echo(json.dumps([reports.grid_summary(grid, rows) for grid, rows in shown], indent=1))
        if broken:
            raise typer.Exit(2)

    guarded(run)


def report_folders(path: Path, open_name: str | None) -> list[Path]:
    """The grid folders to render: every one under ``path`` (or ``path`` itself), or only ``--open NAME``."""
    folders = reports.find_grids(path)
    if not folders:
        raise GptlabError(f"{path}: no grid folders here (a grid folder holds grid.json and runs/, written by "
                          "`gptlab ablate <grid.yaml>`)")
    if open_name is None:
        return folders
    chosen = [f for f in folders if f.name == open_name]
    if not chosen:
        raise choice_error("--open", open_name, [f.name for f in folders])
    return chosen


def report_table(grid: reports.Grid, rows: list[dict]) -> Table:
    table = Table(title=f"{grid.title} ({grid.name})", caption=reports.finding(grid, rows))
    for column in reports.COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "verdict") else "right")
    for row in rows:
        table.add_row(*reports.table_cells(row))
    return table


def report_csv(shown: list[tuple[reports.Grid, list[dict]]]) -> str:
    flat = [{"grid": grid.name, **row, "diverged_at": " ".join(map(str, row["diverged_at"]))}
            for grid, rows in shown for row in rows]
    return pd.DataFrame(flat).to_csv(index=False) if flat else ""


if __name__ == "__main__":
    app()
