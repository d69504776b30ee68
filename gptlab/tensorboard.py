"""A grid's loss curves as TensorBoard event files, so a grid opens in TensorBoard next to other runs:

    gptlab ablate residuals --tensorboard      # or: gptlab report reports/residuals --tensorboard
    tensorboard --logdir reports/residuals/tensorboard

One folder per run (``<variant>/seed-<seed>``), written once from its record: train and val loss and the learning
rate at every evaluation, at the run's own elapsed time. Needs the ``tensorboard`` package
(``pip install 'gptlab[tensorboard]'``).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from gptlab.errors import GptlabError
from gptlab.results import GridRuns

FOLDER = "tensorboard"


def run_folder(grid_runs: GridRuns, variant: str, seed: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", variant)
    return grid_runs.folder / FOLDER / safe / f"seed-{seed}"


def write_events(grid_runs: GridRuns) -> list[Path]:
    """Event files for every finished run that has none yet; returns the folders written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GptlabError("--tensorboard needs the tensorboard package: pip install 'gptlab[tensorboard]'") from None
    written = []
    for record in grid_runs.records:
        folder = run_folder(grid_runs, record.variant, record.seed)
        if folder.is_dir() and any(folder.glob("events.out.tfevents.*")):
            continue
        start = datetime.fromisoformat(record.created).timestamp() - record.wall_time
        writer = SummaryWriter(log_dir=str(folder))
        for row in record.history:
            for tag, name in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("lr", "lr")):
                if row.get(name) is not None:
                    writer.add_scalar(tag, row[name], row["step"], walltime=start + (row.get("elapsed") or 0.0))
        writer.close()
        written.append(folder)
    return written
