"""The run record: everything one training run (variant x seed) leaves behind, as one JSON file.

Written atomically (temp file, then rename), so a killed process never leaves a half-written record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1


@dataclass
class RunRecord:
    key: str                       # hash of the full resolved config (RunConfig.key())
    grid: str                      # the grid's name
    variant: str                   # the variant's name within the grid
    seed: int
    config: dict[str, Any]         # RunConfig.to_dict()
    status: str                    # "done" or "diverged"
    final_val_loss: float | None
    best_val_loss: float | None
    final_train_loss: float | None
    diverged_at: int | None
    history: list[dict[str, float]]  # rows: step, train_loss, val_loss, lr, elapsed
    params: int
    tokens_per_sec: float
    wall_time: float
    device: str
    torch_version: str
    gptlab_version: str
    git_commit: str
    sample: str
    created: str                   # ISO time the run finished
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_record(folder: Path, record: RunRecord) -> Path:
    path = folder / f"{record.key}.json"
    write_atomic(path, json.dumps(dataclasses.asdict(record), indent=1))  # pragma: no mutate (indent=2: same JSON)
    return path


def load_record(path: Path) -> RunRecord:
    """Read one record; raises ValueError for a file that is not a complete record of this schema."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a gptlab run record of schema {SCHEMA}")
    names = {f.name for f in dataclasses.fields(RunRecord)}
    missing = names - set(raw) - {"extra"}
    if missing:
        raise ValueError(f"{path}: run record lacks {', '.join(sorted(missing))}")
    return RunRecord(**{k: v for k, v in raw.items() if k in names})
