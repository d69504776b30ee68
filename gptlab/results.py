"""The results of grids: one loader of a grid folder's run records, one per-variant summary (for the terminal
table, the reports and notebooks), and the tidy tables other tools read (results.csv, curves.csv).

In a notebook::

    from gptlab import results
    runs = results.load("reports/residuals")     # one row per run, with the config values as columns
    results.summary(runs)                        # per variant: mean, std, min, max, delta, p-value, verdict
    results.curves("reports/residuals")          # one row per evaluation of every run
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from gptlab.claims import ClaimResult, evaluate, parse_claims
from gptlab.config import RunConfig
from gptlab.errors import GptlabError
from gptlab.files import write_if_changed
from gptlab.grid import Grid, GridSource
from gptlab.record import RecordError, RunRecord, load_record
from gptlab.sequential import Design, Settlement, settle
from gptlab.stats import compare_to_baseline, summarize

if TYPE_CHECKING:
    import pandas as pd

RUN_COLUMNS = [
    "grid", "scale", "variant", "is_baseline", "leaks_future", "seed", "key", "status", "final_val_loss", "best_val_loss",
    "final_train_loss", "diverged_at", "params", "tokens_per_sec", "wall_time", "device", "torch_version",
    "gptlab_version", "git_commit", "git_dirty", "created",
]
CURVE_COLUMNS = ["grid", "scale", "variant", "seed", "key", "step", "train_loss", "val_loss", "lr", "elapsed"]


@dataclass
class GridRuns:
    """One grid folder: what grid.json says was run, the records of those runs, and every file not used."""

    folder: Path
    grid: Grid
    provenance: dict[str, Any]      # grid.json's gptlab_version, git_commit, device, created
    records: list[RunRecord]        # one per (variant, seed) of the grid, as far as finished
    skipped: list[str] = field(default_factory=list)  # "<file>: <why it was not used>"
    stale: str = ""                 # one line when grid.json's words disagree with the grid file they came from

    def runs_of(self, variant: str) -> list[RunRecord]:
        return sorted((r for r in self.records if r.variant == variant), key=lambda r: r.seed)

    def missing(self) -> list[str]:
        done = {(r.variant, r.seed) for r in self.records}
        return [f"{name} (seed {seed})" for name in self.grid.variant_names for seed in self.grid.seeds_of(name)
                if (name, seed) not in done]

    def finished_losses(self) -> dict[str, list[float]]:
        """variant -> the final val losses of its finished runs, in the order of its seeds."""
        out = {}
        for name in self.grid.variant_names:
            order = {seed: i for i, seed in enumerate(self.grid.seeds_of(name))}
            runs = sorted(finished(self.runs_of(name)), key=lambda r: order[r.seed])
            out[name] = [r.final_val_loss for r in runs if r.final_val_loss is not None]
        return out

    def varied_keys(self) -> set[str]:
        """Dotted keys whose value differs between variants."""
        variants = self.grid.variants
        keys = {k for v in variants for k in v.overrides}
        return {k for k in keys if len({json.dumps(v.overrides.get(k)) for v in variants}) > 1}

    def leaks_future(self, variant: str) -> bool:
        """From the config (not the name): a component variant that lets a position read later tokens."""
        chosen = next(v for v in self.grid.variants if v.name == variant)
        return leaks_future(self.grid.config(chosen, self.grid.seeds[0]).model)  # pragma: no mutate (a seed: any, the model is the same)

    def leaking(self) -> set[str]:
        return {name for name in self.grid.variant_names if self.leaks_future(name)}

    def claim_results(self) -> list[ClaimResult]:
        """Each claim's status: one test of all the seeds, or with seeds added until settled, the looks replayed."""
        if self.grid.design is not None:
            return self.settlement(self.grid.design).results
        return evaluate(self.grid.claims, self.finished_losses(), self.grid.baseline)

    def settlement(self, design: Design) -> Settlement:
        """The claims replayed look by look over ``design``'s planned looks."""
        return settle(self.grid.claims, self.finished_losses(), self.grid.baseline, design)


def leaks_future(model_cfg: Any) -> bool:
    from gptlab.components import REGISTRIES

    return any(registry.get(getattr(model_cfg, name)).leaks_future for name, registry in REGISTRIES.items())


def finished(runs: Sequence[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status == "done" and r.final_val_loss is not None]


def is_grid_folder(path: Path) -> bool:
    return (path / "grid.json").is_file()


def grid_folders(path: Path) -> list[Path]:
    """``path`` itself when it is one grid's folder, else every grid folder inside it (sorted by name)."""
    if not path.is_dir():
        raise GptlabError(f"{path}: no such folder of results")
    if is_grid_folder(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and is_grid_folder(p))


def read_manifest(folder: Path) -> tuple[Grid, dict[str, Any]]:
    path = folder / "grid.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))  # pragma: no mutate (ASCII JSON: any codec reads it)
    except FileNotFoundError:
        raise GptlabError(f"{path}: missing; a grid folder is written by `gptlab ablate <grid.yaml>`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GptlabError(f"{path}: not valid JSON ({err}); rerun `gptlab ablate` for this grid") from None
    grid = Grid.from_manifest(raw, str(path))
    provenance = {k: raw.get(k) for k in ("gptlab_version", "git_commit", "git_dirty", "device", "created")}
    return grid, provenance


WORDS = ("title", "insight", "claims")  # what a report says about a grid, taken from its grid file when at hand


def grid_file(folder: Path, source: str) -> Path | None:
    """The grid file a folder's grid.json came from: its ``source`` as written, from here or from the project
    that holds the reports folder (``<project>/reports/<grid>``); None when neither is a file."""
    if not source:
        return None
    path = Path(source)
    candidates = [path, folder.parent.parent / path]  # an absolute path joins as itself
    return next((p for p in candidates if p.is_file()), None)


def with_file_words(grid: Grid, folder: Path) -> tuple[Grid, str]:
    """The grid with the title, insight and claims of its grid file (the one source of a grid's words), and a
    line naming what grid.json's snapshot says otherwise ("" when they agree, or no file is at hand)."""
    from gptlab.grid import load_grid

    path = grid_file(folder, grid.source)
    if path is None:
        return grid, ""
    try:
        current = load_grid(path, scale=grid.scale)
        claims = parse_claims([c.to_dict() for c in current.claims], grid.variant_names,
                              GridSource(str(path)).error)
    except GptlabError as err:
        return grid, f"its grid file cannot give the report its words: {err}"
    fresh = replace(grid, title=current.title, insight=current.insight, claims=claims)
    differ = [name for name in WORDS if getattr(grid, name) != getattr(fresh, name)]
    if not differ:
        return grid, ""
    verb = "differ" if differ == ["claims"] or len(differ) > 1 else "differs"
    return fresh, (f"stale: grid.json's {' and '.join(differ)} {verb} from {path.as_posix()}, whose words the report "
                   f"uses; `gptlab ablate {grid.source}` refreshes it (training only runs without a record)")


def load_grid_runs(folder: str | Path) -> GridRuns:
    """Read a grid folder: grid.json and the records of the runs it describes, with the words (title, insight,
    claims) of the grid file it came from when that file is at hand (``stale`` says when grid.json disagrees). A
    record that cannot be used (corrupt, another schema, another grid's or variant's, an earlier invocation's)
    becomes one line in ``skipped``; a grid.json that cannot be read is a one-line GptlabError."""
    folder = Path(folder)
    snapshot, provenance = read_manifest(folder)
    grid, stale = with_file_words(snapshot, folder)
    expected = {spec.key: spec for spec in grid.runs()}
    runs = GridRuns(folder, grid, provenance, [], stale=stale)
    for path in sorted((folder / "runs").glob("*.json")):
        where = path.relative_to(folder).as_posix()
        try:
            record = load_record(path)
        except (OSError, RecordError) as err:
            runs.skipped.append(f"{where}: {err}; skipped")
            continue
        spec = expected.get(record.key)
        if spec is None:
            runs.skipped.append(f"{where}: {record.variant!r} seed {record.seed}, a config grid.json does not "
                                "describe (an earlier `gptlab ablate` of this folder); skipped")
        elif (record.grid, record.variant, record.seed) != (spec.grid, spec.variant, spec.seed):
            runs.skipped.append(f"{where}: names {record.grid!r} {record.variant!r} seed {record.seed}, where this "
                                f"grid has {spec.variant!r} seed {spec.seed}; skipped")
        else:
            runs.records.append(record)
    return runs


@dataclass(frozen=True)
class VariantRow:
    """One variant's line of the results table: its runs over seeds against the baseline."""

    variant: str
    is_baseline: bool
    leaks_future: bool
    runs: int                 # finished runs (diverged ones are counted apart)
    seeds: int                # seeds the grid asks of this variant
    diverged: int
    diverged_at: list[int]
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    delta: float | None       # mean - baseline mean
    p_value: float | None     # Holm-adjusted over the variants compared
    significant: bool
    verdict: str
    train_loss: float | None
    params: int | None
    tokens_per_sec: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunNumbers:
    """What the summary needs of one run (from a record or a row of ``load``'s table)."""

    status: str
    final_val_loss: float | None
    final_train_loss: float | None
    tokens_per_sec: float
    params: int
    diverged_at: int | None


def none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def variant_rows(runs_by_variant: dict[str, list[RunNumbers]], baseline: str, seeds: dict[str, int],
                 leaking: set[str]) -> list[VariantRow]:
    """The one per-variant summary, ranked by mean final val loss (variants without a finished run last).
    A variant that leaks the future is not compared: its low loss is not a result."""
    done = {name: [r for r in runs if r.status == "done" and r.final_val_loss is not None]
            for name, runs in runs_by_variant.items()}
    losses = {name: [r.final_val_loss for r in runs if r.final_val_loss is not None] for name, runs in done.items()}
    compared = compare_to_baseline({n: v for n, v in losses.items() if n not in leaking}, baseline)
    rows = []
    for name, runs in runs_by_variant.items():
        fin = done[name]
        stats = summarize(losses[name]) if fin else None
        comparison = compared.get(name)
        rows.append(VariantRow(
            variant=name, is_baseline=name == baseline, leaks_future=name in leaking, runs=len(fin), seeds=seeds[name],
            diverged=len(runs) - len(fin), diverged_at=sorted(r.diverged_at for r in runs if r.diverged_at is not None),
            mean=stats.mean if stats else None, std=none_if_nan(stats.std) if stats else None,
            min=stats.min if stats else None, max=stats.max if stats else None,
            delta=comparison.delta if comparison else None,
            p_value=comparison.p_value if comparison else None,
            significant=comparison.significant if comparison else False,
            verdict=verdict(name, baseline, runs, fin, losses.get(baseline), leaking, comparison),
            train_loss=summarize([r.final_train_loss for r in fin if r.final_train_loss is not None]).mean
            if fin else None,
            params=runs[0].params if runs else None,
            tokens_per_sec=summarize([r.tokens_per_sec for r in fin]).mean if fin else None,
        ))
    return sorted(rows, key=lambda r: (r.mean is None, r.mean or 0.0))  # pragma: no mutate (or 1.0: only rows without a mean, all last)


def verdict(name: str, baseline: str, runs: list[RunNumbers], done: list[RunNumbers],
            base_losses: list[float] | None, leaking: set[str], comparison: Any) -> str:
    if name == baseline:
        return "baseline"
    if name in leaking:
        return "leaks the future"
    if not runs:
        return "not run yet"
    if not done:
        return "diverged"
    if not base_losses:
        return "baseline not run"
    return str(comparison.verdict)


def summarize_grid(grid_runs: GridRuns) -> list[VariantRow]:
    """The ranked table of a grid folder."""
    grid = grid_runs.grid
    runs = {name: [numbers(r) for r in grid_runs.runs_of(name)] for name in grid.variant_names}
    return variant_rows(runs, grid.baseline, {name: len(grid.seeds_of(name)) for name in grid.variant_names},
                        grid_runs.leaking())


def numbers(record: RunRecord) -> RunNumbers:
    return RunNumbers(record.status, record.final_val_loss, record.final_train_loss, record.tokens_per_sec,
                      record.params, record.diverged_at)


# -- pandas tables -------------------------------------------------------------------------------------------


def config_columns(record: RunRecord) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in record.config.items() for key, value in values.items()}


def run_row(grid_runs: GridRuns, record: RunRecord) -> dict[str, Any]:
    row = {column: getattr(record, column, None) for column in RUN_COLUMNS}
    row.update(grid=grid_runs.grid.name, scale=grid_runs.grid.scale,  # pragma: no mutate (grid: the record's is the same)
               is_baseline=record.variant == grid_runs.grid.baseline,
               leaks_future=leaks_future(RunConfig.from_dict(record.config).model))
    return {**row, **config_columns(record)}


def load(path: str | Path, current_only: bool = True) -> pd.DataFrame:
    """One row per finished run under ``path`` (a grid folder or a folder of grids): ``RUN_COLUMNS``, then
    every config field as a column (``model.n_layer``, ...).

    With ``current_only`` a grid's rows are the runs its grid.json describes; with ``current_only=False`` every
    readable record in its runs/ folder (earlier invocations' too). Unreadable files are left out.
    """
    import pandas as pd

    frames = []
    for folder in grid_folders(Path(path)):
        grid_runs = load_grid_runs(folder)
        frames.append(runs_table(grid_runs, grid_runs.records if current_only else readable_records(folder)))
    if not frames:
        return pd.DataFrame(columns=RUN_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(["grid", "variant", "seed"], kind="stable",  # pragma: no mutate (kind: pandas ignores it for several columns; the sort resets the index)
                                                            ignore_index=True)


def runs_table(grid_runs: GridRuns, records: Sequence[RunRecord] | None = None) -> pd.DataFrame:
    """One row per run of one grid folder (its current runs unless ``records`` are given)."""
    import pandas as pd

    rows = [run_row(grid_runs, record) for record in (grid_runs.records if records is None else records)]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=RUN_COLUMNS)


def readable_records(folder: Path) -> list[RunRecord]:
    records = []
    for path in sorted((folder / "runs").glob("*.json")):
        try:
            records.append(load_record(path))
        except (OSError, RecordError):
            continue
    return records


def summary(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Per variant of one grid's runs (``load``'s table): the same numbers and verdicts as the reports.

    The baseline is the grid's own unless named; a name that is no variant of these runs is an error.
    """
    import pandas as pd

    columns = [f.name for f in VariantRow.__dataclass_fields__.values()]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    if runs["grid"].nunique() > 1:
        raise GptlabError(f"summary compares the variants of one grid; these runs come from "
                          f"{', '.join(sorted(runs['grid'].unique()))} (select one: runs[runs.grid == NAME])")
    variants = list(dict.fromkeys(runs["variant"]))
    if baseline is None:
        marked = sorted(set(runs.loc[runs["is_baseline"].astype(bool), "variant"]))
        if len(marked) != 1:
            raise GptlabError("these runs do not name one baseline; give summary(runs, baseline=VARIANT)")
        baseline = marked[0]
    if baseline not in variants:
        raise GptlabError(f"baseline {baseline!r} is not a variant of these runs; choose one of: {'; '.join(variants)}")
    by_variant = {name: [RunNumbers(r.status, none_if_nan(r.final_val_loss), none_if_nan(r.final_train_loss),
                                    r.tokens_per_sec, int(r.params), none_if_nan(r.diverged_at))
                         for r in runs[runs["variant"] == name].itertuples()] for name in variants}
    most = int(runs.groupby("variant")["seed"].nunique().max())
    seeds = {name: most for name in variants}
    leaking = set(runs.loc[runs["leaks_future"].astype(bool), "variant"])
    return pd.DataFrame([row.to_dict() for row in variant_rows(by_variant, baseline, seeds, leaking)], columns=columns)  # pragma: no mutate (rows here: their keys are these columns)


def curves(path: str | Path) -> pd.DataFrame:
    """Every evaluation of every current run under ``path``: one row per (run, step), ``CURVE_COLUMNS``."""
    import pandas as pd

    rows = [row for folder in grid_folders(Path(path)) for row in curve_rows(load_grid_runs(folder))]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def write_tables(grid_runs: GridRuns) -> list[Path]:
    """``results.csv`` (one row per run, config values as columns) and ``curves.csv`` (one row per evaluation)
    in the grid's folder, each written only when its content changes; returns the files written."""
    import pandas as pd

    tables = {"results.csv": runs_table(grid_runs),
              "curves.csv": pd.DataFrame(curve_rows(grid_runs), columns=CURVE_COLUMNS)}
    return [grid_runs.folder / name for name, table in tables.items()
            if write_if_changed(grid_runs.folder / name, table.to_csv(index=False))  # pragma: no mutate (index=None: no index either)
            ]


def curve_rows(grid_runs: GridRuns) -> list[dict[str, Any]]:
    grid = grid_runs.grid
    rows = []
    for record in sorted(grid_runs.records, key=lambda r: (grid.variant_names.index(r.variant), r.seed)):
        for point in record.history:
            rows.append({"grid": grid.name, "scale": grid.scale, "variant": record.variant, "seed": record.seed,
                         "key": record.key, **{k: point.get(k) for k in CURVE_COLUMNS[5:]}})
    return rows
