"""gptlab: build a character-level GPT from swappable parts, train it, and measure what each part is worth.

\b
  gptlab train --preset lecture    train one model, then sample it:
  gptlab sample out/lecture/ckpt.pt
  gptlab list                      presets and every component to swap
  gptlab ablate residuals          run a grid: ablations/residuals.yaml
  gptlab report                    render the reports under reports/
  gptlab check my_gpt.py           check your own model for a learner's bugs
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

from gptlab import __version__
from gptlab.config import PRESET_INFO, PRESETS, RunConfig, apply_overrides, parse_set_args, preset, validate
from gptlab.display import console, err_console, results_table, rows_table
from gptlab.errors import GptlabError, choice_error

if TYPE_CHECKING:
    from gptlab.grid import Grid
    from gptlab.results import GridRuns
    from gptlab.runner import GridOutcome, Round
    from gptlab.sequential import Design

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)

SetOption = typer.Option(None, "--set", help="Override a config field, e.g. --set model.n_layer=4 (repeatable).")
DeviceOption = typer.Option(None, "--device", help="auto (CUDA, then Apple's MPS, then the CPU), cpu, cuda or mps.")
PluginOption = typer.Option(None, "--plugin", help="A .py file that registers variants (repeatable); all of it runs, "
                                                   "like an import.")
SLOW_RUN_S = 120  # warn before a CPU run estimated to take longer than this
UTILISATION = 0.2  # of the matmul peak, for the estimate (the `full` preset's evaluations reach less)


def fail(err: GptlabError) -> None:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


def guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except GptlabError as err:
        fail(err)


def load_plugins(paths: list[Path] | None) -> list[tuple[str, str]]:
    """Load each ``--plugin`` file; the (field, name) of every variant they register."""
    from gptlab.learner import load_plugin

    return [entry for path in paths or [] for entry in load_plugin(path)]


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"gptlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """gptlab: build a character-level GPT from swappable parts, train it, and measure what each part is worth."""


def build_config(preset_name: str, sets: list[str] | None, device: str | None) -> RunConfig:
    overrides = parse_set_args(sets or [])
    if device is not None:
        overrides["train.device"] = device
    return validate(apply_overrides(preset(preset_name), overrides))


def slow_run_warning(cfg: RunConfig, n_params: int, peak_flops: float) -> str | None:
    """The warning for a CPU run estimated at more than SLOW_RUN_S: training and evaluation FLOPs over a fifth
    of the machine's measured matmul peak (small and evaluation-heavy runs rarely do better)."""
    from gptlab.flops import run_flops

    train_flops, eval_flops = run_flops(cfg, n_params)
    rate = UTILISATION * peak_flops
    seconds = (train_flops + eval_flops) / rate
    if seconds < SLOW_RUN_S:
        return None
    t = cfg.train
    evaluations = t.max_iters // t.eval_interval + 1 + (t.max_iters % t.eval_interval > 0)
    return (f"this run on CPU: about {seconds / 60:,.0f} minutes ({train_flops / rate / 60:,.0f} training, "
            f"{eval_flops / rate / 60:,.0f} evaluating {t.eval_windows} windows of each split {evaluations} times), "
            f"estimated at {UTILISATION:.0%} of this CPU's measured matmul peak. Use a GPU (--device cuda); for a "
            "quick look: --set train.max_iters=100 --set train.eval_interval=100 --set train.eval_windows=16")


@app.command()
def train(
    preset_name: str = typer.Option("lecture", "--preset", help=f"One of: {', '.join(PRESETS)}."),
    sets: Optional[list[str]] = SetOption,
    device: Optional[str] = DeviceOption,
    data: Optional[Path] = typer.Option(None, "--data", help="Any UTF-8 text file (default: tiny Shakespeare)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: out/<preset>)."),
    sample_tokens: int = typer.Option(300, "--sample-tokens", help="Characters to sample at the end (0: none)."),
    plugins: Optional[list[Path]] = PluginOption,
) -> None:
    """Train a preset; writes a checkpoint, the loss curve and a summary, prints a sample.

    --set model.arch=PATH.py trains your own model file."""

    def run() -> None:
        load_plugins(plugins)
        from gptlab import session as training
        from gptlab.device import resolve_device
        from gptlab.display import progress_bar
        from gptlab.flops import matmul_peak_flops
        from gptlab.sampling import MAX_SAMPLE_TOKENS
        from gptlab.train import Progress

        if not 0 <= sample_tokens <= MAX_SAMPLE_TOKENS:
            raise GptlabError(f"--sample-tokens = {sample_tokens} is not allowed; must be in 0..{MAX_SAMPLE_TOKENS:,}")
        extra = list(sets or []) + ([f"data.path={data}"] if data else [])
        cfg = build_config(preset_name, extra, device)
        out_dir = out or Path("out") / preset_name
        session = training.prepare(cfg, out_dir)
        if resolve_device(cfg.train.device).type == "cpu":
            warning = slow_run_warning(cfg, session.params, matmul_peak_flops())
            if warning:
                err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        last_val: list[float | None] = [None]
        with progress_bar() as bar:
            task = bar.add_task(f"train {preset_name}", total=cfg.train.max_iters, losses="")

            def on_progress(p: Progress) -> None:
                last_val[0] = p.val_loss if p.val_loss is not None else last_val[0]
                losses = [f"train {p.train_loss:.3f}"] if p.train_loss is not None else []
                losses += [f"val {last_val[0]:.3f}"] if last_val[0] is not None else []
                bar.update(task, completed=p.step, losses="  ".join(losses))

            result = training.train_and_save(session, preset_name, on_progress)
        if result.diverged_at is not None:
            console.print(f"[red]diverged[/] (non-finite loss) at step {result.diverged_at}; no sample")
        else:
            console.print(f"val loss [bold]{result.final_val_loss:.4f}[/]  train loss {result.final_train_loss:.4f}  "
                          f"{result.wall_time:.1f} s  {result.tokens_per_sec:,.0f} tokens/s  {session.params:,} params"
                          f"  on {result.device}")
        console.print(f"wrote {out_dir / 'ckpt.pt'}, {out_dir / 'history.csv'}, {out_dir / 'result.json'}",
                      highlight=False)
        if sample_tokens and result.diverged_at is None:
            console.rule("sample")
            for text in training.sample(session, result, sample_tokens):
                console.print(text, end="", highlight=False, markup=False, soft_wrap=True)
            console.print()

    guarded(run)


@app.command()
def sample(
    ckpt: Path = typer.Argument(..., help="A checkpoint written by `gptlab train` (ckpt.pt)."),
    tokens: int = typer.Option(500, "--tokens", help="How many characters to generate (at most 100,000)."),
    prompt: str = typer.Option("\n", "--prompt", show_default="a newline",
                               help="Text to continue (characters of the training corpus)."),
    seed: int = typer.Option(1337, "--seed", help="Sampling seed."),
) -> None:
    """Generate text from a checkpoint, printed as it is generated."""

    def run() -> None:
        from gptlab import checkpoint
        from gptlab.sampling import stream_text

        if not prompt:
            raise GptlabError("--prompt = '' is not allowed; give at least one character")
        model, _, tokenizer = checkpoint.load(ckpt)
        for text in stream_text(model, tokenizer, prompt, tokens, seed):
            console.print(text, end="", highlight=False, markup=False, soft_wrap=True)
        console.print()

    guarded(run)


@app.command("list")
def list_components(plugins: Optional[list[Path]] = PluginOption) -> None:
    """Presets and every component registry with its choices and insight."""
    from gptlab.files import PROJECT_ROOT
    from gptlab.registry import declared

    added: list[tuple[str, str]] = []
    try:
        added = load_plugins(plugins)
    except GptlabError as err:
        fail(err)

    width = console.width
    console.print(rows_table("presets (gptlab train --preset NAME)", ["preset", "what"],
                             [[name, PRESET_INFO[name]] for name in PRESETS], width, wraps=lambda h: h == "what"))
    rows = []
    for registry in declared(PROJECT_ROOT / "gptlab" / "components"):
        rows.append([registry.field, "", registry.insight])
        rows += [["", name, insight] for name, insight in registry.entries]
        rows += [["", f"{name} (plugin)", plugin_insight(registry.field, name)]
                 for field, name in added if f"model.{field}" == registry.field]
    rows.append(["model.n_head", "1..n_embd", "several smaller heads vs one big one (must divide n_embd)"])
    console.print(rows_table("components (--set model.FIELD=CHOICE, or model.FIELD in a grid)",
                             ["field", "choice", "insight"], rows, width, wraps=lambda h: h == "insight"))


def plugin_insight(field: str, name: str) -> str:
    from gptlab.components import REGISTRIES

    return REGISTRIES[field.removeprefix("model.")].get(name).insight


@app.command()
def check(
    file: Path = typer.Argument(..., help="Your model's .py file (the lecture's gpt.py works as it is), or a plugin."),
    model: Optional[str] = typer.Option(None, "--model", help="The class to check, when the file has several."),
    preset_name: str = typer.Option("lecture", "--preset", help=f"The size to build it at: {', '.join(PRESETS)}."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only this check (repeatable)."),
    fmt: str = typer.Option("table", "--format", help="table, or json for a grader."),
    plugins: Optional[list[Path]] = PluginOption,
) -> None:
    """Check your model file by property; each failure names the idea it breaks.

    Runs the file's imports, constants, functions and classes only, never its script. Exit 0: every check
    passes; 1: one fails; 2: the file cannot be used."""
    from gptlab.check import check_file, exit_code

    def run() -> None:
        if fmt not in ("table", "json"):
            raise choice_error("--format", fmt, ["table", "json"])
        if preset_name not in PRESETS:
            raise choice_error("--preset", preset_name, list(PRESETS))
        load_plugins(plugins)
        kind, rows = check_file(str(file), model, preset_name, only)
        if fmt == "json":
            typer.echo(json.dumps({"file": str(file), "kind": kind, "preset": preset_name,
                                   "passed": exit_code(rows) == 0, "checks": [r.to_dict() for r in rows]}, indent=2))
        else:
            show_checks(str(file), kind, preset_name, rows)
        raise typer.Exit(exit_code(rows))

    guarded(run)


def show_checks(file: str, kind: str, preset_name: str, rows: list) -> None:
    from gptlab.display import check_rows

    width = console.width
    title = f"gptlab check {file} ({'plugin: each variant it registers' if kind == 'plugin' else 'model'}, " \
            f"{preset_name} size)"
    console.print(check_rows(title, rows, width))
    failures = [r for r in rows if r.status == "fail"]
    for row in failures:
        console.print(f"[bold red]{row.check}[/] {row.variant} broken: {row.idea}", highlight=False)
        console.print(f"  evidence: {row.evidence}", highlight=False, markup=False)
        if row.bugs:
            same = "; ".join(f"{b['id']} (val {b['val_loss']})" for b in row.bugs)
            console.print(f"  the same symptom in gptlab's catalogue (lecture preset, 1000 steps, unmodified "
                          f"val 2.248): {same}; see {row.bugs[0]['docs'].partition('#')[0]}", highlight=False,
                          markup=False)
    passed = sum(r.status == "pass" for r in rows)
    skipped = sum(r.status == "skipped" for r in rows)
    console.print(f"{passed} passed, {len(failures)} failed, {skipped} skipped in "
                  f"{sum(r.seconds for r in rows):.1f} s", highlight=False)


@app.command()
def ablate(
    grid_file: str = typer.Argument(..., help="A grid file, or a shipped grid's name (residuals, masking, ...)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override a config field for every run (repeatable)."),
    device: Optional[str] = DeviceOption,
    scale: Optional[str] = typer.Option(None, "--scale", help="A scale the grid file declares (default: cpu)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs, how they are grouped, and exit."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="N seeds: the file's first N (more: counting on)."),
    jobs: str = typer.Option("auto", "--jobs",
                             help="Jobs at once, in processes that split the CPU cores; auto: as many as the cores "
                                  "allow at the threads a run uses (and the memory)."),
    group_seeds: Optional[bool] = typer.Option(None, "--group-seeds/--no-group-seeds", show_default="on CUDA",
                                               help="Train a variant's seeds as one stacked model."),
    force: bool = typer.Option(False, "--force", help="Rerun runs that already have a record."),
    until_settled: bool = typer.Option(False, "--until-settled",
                                       help="Add seeds in rounds to the variants of unsettled claims until every "
                                            "claim holds or is contradicted (a group-sequential rule)."),
    max_seeds: Optional[int] = typer.Option(None, "--max-seeds", show_default="40",
                                            help="With --until-settled: the most seeds a variant gets."),
    out: Path = typer.Option(Path("reports"), "--out", help="Results folder; the grid writes OUT/<name>/."),
    max_runs: int = typer.Option(1000, "--max-runs", help="Refuse a grid of more runs than this."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files of the runs."),
    executor_name: str = typer.Option("local", "--executor", help="local (processes here) or ray (docs/ray.md)."),
    address: Optional[str] = typer.Option(None, "--address", show_default="a local Ray instance",
                                          help="Ray cluster: auto, HOST:PORT or ray://HOST:10001."),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", help="Ray: GPUs per run (0.25: four share one)."),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", help="Ray: CPUs per run (and its torch threads)."),
    plugins: Optional[list[Path]] = PluginOption,
) -> None:
    """Run an ablation grid (resumable): every variant x seed, then a ranked table, results.csv and the report."""

    def run() -> None:
        load_plugins(plugins)
        from gptlab import report
        from gptlab.display import LiveProgress
        from gptlab.grid import check_grid, load_grid
        from gptlab.results import load_grid_runs, summarize_grid, write_tables
        from gptlab.runner import DEFAULT_MAX_SEEDS, Round, plan, run_grid, run_until_settled

        from gptlab.capacity import choose_jobs, estimate_line, grid_seconds, parse_jobs

        requested = parse_jobs(jobs)
        if executor_name not in ("local", "ray"):
            raise choice_error("--executor", executor_name, ["local", "ray"])
        executor = None
        if executor_name == "ray":
            from gptlab.ray_executor import RayExecutor

            executor = RayExecutor(address, cpus_per_run, gpus_per_run)  # checks the numbers; imports no Ray
        elif address is not None or gpus_per_run != 0 or cpus_per_run != 1:
            raise GptlabError("--address, --gpus-per-run and --cpus-per-run are for --executor ray")
        if max_seeds is not None and not until_settled:
            raise GptlabError("--max-seeds goes with --until-settled")
        grid = load_grid(grid_file, parse_set_args(sets or []), device, seeds, scale, max_runs)
        check_grid(grid)
        design = settled_before(out / grid.name)
        settling = until_settled or design is not None  # a folder whose seeds were added until settled stays so
        budget = max_seeds or (design.max_seeds if design else DEFAULT_MAX_SEEDS)
        if settling:
            from gptlab.sequential import Design

            Design(len(grid.seeds), len(grid.seeds), budget)  # checks --max-seeds against the grid's seeds
        if design is not None and not until_settled:
            console.print(f"{out / grid.name}: its seeds were added until settled (at most {budget} a variant): "
                          "going on so (its records are replayed; new seeds only where a claim is open)",
                          highlight=False)
        planned = plan(grid, out, force, group_seeds)
        choice = choose_jobs(grid, len(planned.jobs), requested, settling)
        if dry_run:
            show_plan(grid, planned, out)
        console.print(f"[bold]{grid.title}[/] (scale {grid.scale}): {len(planned.specs)} runs "
                      f"({len(grid.variants)} variants x {len(grid.seeds)} seeds), "
                      f"{len(planned.specs) - len(planned.todo)} already done, {len(planned.todo)} to run"
                      + (f" as {len(planned.jobs)} jobs, " + (choice.why if executor is None else
                                                               f"on Ray ({address or 'local instance'})")
                         if planned.todo else "")
                      + (f"; then up to {budget} seeds a variant where a claim is open" if settling else ""),
                      highlight=False)
        if executor is None and planned.todo:
            started = time.perf_counter()
            seconds = grid_seconds(planned.jobs, choice.jobs, choice.threads)
            console.print(estimate_line(seconds, choice.jobs, started) + (", this round" if settling else ""),
                          highlight=False)
        if dry_run:
            return
        if executor is not None and planned.todo:
            from gptlab.ray_executor import require_ray

            require_ray()  # the one-line hint before the progress display starts
        try:
            if settling:
                with LiveProgress(len(planned.todo)) as live:
                    def on_round(done: Round) -> None:
                        if done.added:
                            live.add_runs(sum(map(len, done.added.values())), round_note(done))

                    outcome = run_until_settled(grid, out, budget, choice.jobs, force, group_seeds, executor, live,
                                                on_round)
            elif planned.todo:
                with LiveProgress(len(planned.todo)) as live:
                    outcome = run_grid(grid, out, choice.jobs, force, group_seeds, executor=executor, on_event=live)
            else:
                outcome = run_grid(grid, out, choice.jobs, force, group_seeds, executor=executor)
        except KeyboardInterrupt:
            err_console.print("interrupted: the workers are stopped; finished runs are saved, run the same command "
                              "again to resume")
            raise typer.Exit(130)
        grid_runs = load_grid_runs(out / grid.name)
        failed = [f"{s.variant} (seed {s.seed}): {outcome.failed[s.key]}" for s in outcome.specs
                  if s.key in outcome.failed]
        held = [f"{s.variant} (seed {s.seed}): held by {outcome.held[s.key]}" for s in outcome.specs
                if s.key in outcome.held]
        console.print(results_table(f"{grid.title} ({grid.metric}, ranked)", summarize_grid(grid_runs),
                                    variant_axes(grid), console.width, failed + held))
        written = write_tables(grid_runs)
        if tensorboard:
            write_events_of(grid_runs)
        readme, _, _ = report.render(grid_runs)
        index = report.write_index(out)
        console.print(f"report: {readme} (index {index}); tables: "
                      f"{', '.join(p.name for p in written) or 'results.csv, curves.csv unchanged'}", highlight=False)
        if failed:
            raise typer.Exit(1)

    guarded(run)


def settled_before(folder: Path) -> Design | None:
    """The planned looks of a grid folder whose seeds ``--until-settled`` added (None for any other)."""
    from gptlab.results import read_manifest

    try:
        return read_manifest(folder)[0].design
    except GptlabError:
        return None


def round_note(done: Round) -> str:
    """One line per round of seeds until settled: the look taken, what stays open, the seeds added."""
    settlement = done.settlement
    open_claims = sorted({i for claims in settlement.open_claims.values() for i in claims})
    added = "; ".join(f"{name}: seeds {seeds[0]}-{seeds[-1]}" for name, seeds in done.added.items())
    return (f"look {settlement.looks_taken}: claim{'s' if len(open_claims) > 1 else ''} "
            f"{', '.join(map(str, open_claims))} not settled; adding {added}")


def variant_axes(grid: Grid) -> dict[str, dict[str, str]] | None:
    """variant -> axis label -> value, when every variant sets every varied key (a product grid); else None."""
    from gptlab.grid import axis_labels, format_value

    keys = list(dict.fromkeys(k for v in grid.variants for k in v.overrides))
    varied = [k for k in keys if len({json.dumps(v.overrides.get(k)) for v in grid.variants}) > 1]
    if not varied or not all(all(k in v.overrides for k in varied) for v in grid.variants):
        return None
    labels = axis_labels(varied)
    return {v.name: {labels[k]: format_value(v.overrides[k]) for k in varied} for v in grid.variants}


def show_plan(grid: Grid, planned: GridOutcome, out: Path) -> None:
    """--dry-run: every run, whether it is done, and the job it trains in (a seed group, or alone and why)."""
    job_of = {spec.key: (n, job) for n, job in enumerate(planned.jobs, start=1) for spec in job.specs}
    rows = []
    for s in planned.specs:
        n, job = job_of.get(s.key, (0, None))
        rows.append([s.variant, str(s.seed), s.key, "done" if job is None else f"job {n}: {job.note}"])
    title = (f"{grid.name} (scale {grid.scale}): {len(planned.specs)} runs, {len(planned.todo)} to run in "
             f"{len(planned.jobs)} jobs; baseline {grid.baseline!r}; results in {out / grid.name}")
    console.print(rows_table(title, ["variant", "seed", "key", "state"], rows, console.width,
                             drops={"key": 1}, wraps=lambda h: h in ("variant", "state")))


REPORT_FORMATS = ["rich", "markdown", "csv", "json"]


@app.command("report")
def report_command(
    path: Path = typer.Argument(Path("reports"), help="A reports folder, or one grid's folder (reports/<name>)."),
    fmt: str = typer.Option("rich", "--format",
                            help="rich: render the reports, then show tables; markdown, csv, json: print only."),
    only: Optional[str] = typer.Option(None, "--grid", help="Only this grid (its folder name)."),
    check: bool = typer.Option(False, "--check", help="Check every grid's claims; exit 1 if one is contradicted or a report is stale."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files of the runs."),
) -> None:
    """Render each grid's README.md and figures (and the index) from its run records, or export or check them."""

    def run() -> None:
        from gptlab.results import load_grid_runs

        if fmt not in REPORT_FORMATS:
            raise choice_error("--format", fmt, REPORT_FORMATS)
        folders = report_folders(path, only)
        notes = console if fmt == "rich" and not check else err_console
        loaded, broken = [], 0
        for folder in folders:
            try:
                loaded.append(load_grid_runs(folder))
            except GptlabError as err:
                err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
                broken += 1
        for grid_runs in loaded:
            missing = grid_runs.missing()
            for line in grid_runs.skipped + ([f"{len(missing)} runs missing"] if missing else []):
                notes.print(f"[yellow]{grid_runs.grid.name}:[/] {line}", highlight=False, soft_wrap=True)
        stale = [g for g in loaded if g.stale]
        for grid_runs in stale:
            err_console.print(f"[bold red]{grid_runs.folder.as_posix()}:[/] {grid_runs.stale}", highlight=False,
                              soft_wrap=True)
        if check:
            contradicted = check_claims(loaded)
            raise typer.Exit(1 if contradicted or stale else 2 if broken else 0)
        export(loaded, fmt, path if only is None else None)
        if tensorboard:
            for grid_runs in loaded:
                write_events_of(grid_runs)
        if broken:
            raise typer.Exit(2)

    guarded(run)


def write_events_of(grid_runs: GridRuns) -> None:
    from gptlab.tensorboard import FOLDER, write_events

    written = write_events(grid_runs)
    console.print(f"tensorboard: {len(written)} new runs in {grid_runs.folder / FOLDER} "
                  f"(tensorboard --logdir {grid_runs.folder / FOLDER})", highlight=False)


def report_folders(path: Path, only: str | None) -> list[Path]:
    from gptlab.results import grid_folders

    folders = grid_folders(path)
    if not folders:
        raise GptlabError(f"{path}: no grid folders here (a grid folder holds grid.json and runs/, written by "
                          "`gptlab ablate <grid.yaml>`)")
    if only is None:
        return folders
    chosen = [f for f in folders if f.name == only]
    if not chosen:
        raise choice_error("--grid", only, [f.name for f in folders])
    return chosen


def check_claims(loaded: list[GridRuns]) -> int:
    """Print each grid's claim counts and every contradicted claim; returns how many are contradicted."""
    from gptlab.claims import counts

    contradicted = 0
    for grid_runs in loaded:
        results = grid_runs.claim_results()
        tally = counts(results)
        contradicted += tally["contradicted"]
        console.print(f"{grid_runs.grid.name}: {tally['holds']} hold, {tally['contradicted']} contradicted, "
                      f"{tally['not established']} not established", highlight=False)
        for r in results:
            if r.status == "contradicted":
                console.print(f"  [red]contradicted:[/] {r.text} ({r.reason})", highlight=False, soft_wrap=True)
    return contradicted


def export(loaded: list[GridRuns], fmt: str, index_folder: Path | None) -> None:
    """rich: write each grid's report, tables and (for a folder of grids) the index, then show each table;
    markdown/csv/json: print to stdout and write nothing."""
    from gptlab import report
    from gptlab.results import runs_table, summarize_grid, write_tables

    if fmt == "json":
        typer.echo(json.dumps([report.grid_summary(g) for g in loaded], indent=1))
    elif fmt == "csv":
        import pandas as pd

        tables = [runs_table(g) for g in loaded]
        typer.echo(pd.concat(tables, ignore_index=True).to_csv(index=False) if tables else "", nl=False)
    elif fmt == "markdown":
        for grid_runs in loaded:
            typer.echo(report.grid_markdown(grid_runs, summarize_grid(grid_runs), grid_runs.claim_results(),
                                            report.figure_list(grid_runs)))
    else:
        for grid_runs in loaded:
            write_tables(grid_runs)
            readme, rows, _ = report.render(grid_runs)
            console.print(results_table(f"{grid_runs.grid.title} ({grid_runs.grid.name})", rows,
                                        variant_axes(grid_runs.grid), console.width))
            console.print(f"wrote {readme}", highlight=False)
        if index_folder is not None and not (index_folder / "grid.json").is_file():
            console.print(f"wrote {report.write_index(index_folder)}", highlight=False)


if __name__ == "__main__":
    app()
