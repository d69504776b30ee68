"""Run records as a pandas DataFrame (one row per run), and the per-variant summary across seeds.

``load("reports/residuals")`` or ``load("reports")`` is the one way in, for the CLI, the reports and notebooks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gptlab.errors import GptlabError
from gptlab.grid import Grid
from gptlab.record import load_record, write_atomic

COLUMNS = [
    "grid", "variant", "seed", "key", "status", "final_val_loss", "best_val_loss", "final_train_loss", "diverged_at",
    "params", "tokens_per_sec", "wall_time", "device", "torch_version", "gptlab_version", "git_commit",
]
SUMMARY_COLUMNS = [
    "variant", "runs", "mean", "std", "min", "max", "delta", "diverged", "train_loss", "params", "tokens_per_sec",
]


def grid_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is one grid's folder, else every grid folder inside it."""
    if (path / "runs").is_dir() or (path / "grid.json").is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / "runs").is_dir())


def current_keys(grid_dir: Path) -> set[str] | None:
    """The keys of the runs grid.json describes (the last ``ablate`` of this folder); None without one."""
    try:
        grid = Grid.from_manifest(json.loads((grid_dir / "grid.json").read_text()))
        return {spec.key for spec in grid.runs()}
    except (OSError, ValueError, KeyError, TypeError, GptlabError):
        return None


def grid_rows(grid_dir: Path, current_only: bool) -> list[dict]:
    keys = current_keys(grid_dir) if current_only else None
    rows = []
    for path in sorted((grid_dir / "runs").glob("*.json")):
        try:
            record = load_record(path)
        except (OSError, ValueError, TypeError):
            continue
        if keys is None or record.key in keys:
            rows.append({column: getattr(record, column) for column in COLUMNS})
    return rows


def load(path: str | Path, current_only: bool = True) -> pd.DataFrame:
    """One row per finished run under ``path`` (a grid folder or a folder of grids), columns ``COLUMNS``.

    With ``current_only`` a grid's rows are the runs its grid.json describes; records left from an earlier
    invocation (another ``--set``, seeds or variants) stay on disk but are left out. Unreadable files are skipped.
    """
    path = Path(path)
    if not path.is_dir():
        raise GptlabError(f"{path}: no such folder of results")
    rows = [row for d in grid_dirs(path) for row in grid_rows(d, current_only)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["grid", "variant", "seed"], kind="stable", ignore_index=True)


def summary(runs: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """One row per variant, ranked by mean final val loss: spread across seeds and delta vs ``baseline``.

    Diverged runs count in ``runs`` and ``diverged`` but not in the loss statistics.
    """
    if runs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    grouped = runs.groupby("variant", sort=False)
    loss = grouped["final_val_loss"]
    table = pd.DataFrame({
        "runs": grouped.size(),
        "mean": loss.mean(),
        "std": loss.std(),
        "min": loss.min(),
        "max": loss.max(),
        "diverged": grouped["status"].apply(lambda s: int((s == "diverged").sum())),
        "train_loss": grouped["final_train_loss"].mean(),
        "params": grouped["params"].max(),
        "tokens_per_sec": grouped["tokens_per_sec"].mean(),
    })
    reference = table["mean"].get(baseline, float("nan")) if baseline is not None else float("nan")
    table["delta"] = table["mean"] - reference
    table = table.sort_values("mean", na_position="last", kind="stable").reset_index(names="variant")
    return table[SUMMARY_COLUMNS]


def write_csv(runs: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    write_atomic(path, runs.to_csv(index=False))
    return path
