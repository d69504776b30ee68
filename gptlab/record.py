"""The run record: everything one training run (variant x seed) leaves behind, as one JSON file.

``save_record`` writes it atomically; ``load_record`` is the one reader: it checks the schema, every field's
type, and that the record is the one its file name and config say it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlab.config import RunConfig
from gptlab.errors import GptlabError
from gptlab.files import write_atomic

SCHEMA = 1
STATUSES = ("done", "diverged")
SAMPLE_PROMPT, SAMPLE_TOKENS, SAMPLE_SEED = "\n", 300, 1337  # the sample a record keeps of its model


@dataclass
class RunRecord:
    key: str                       # RunConfig.key() of ``config``: the hash of its non-default fields
    grid: str                      # the grid's name
    variant: str                   # the variant's name within the grid
    seed: int
    config: dict[str, Any]         # RunConfig.to_dict()
    status: str                    # "done" or "diverged"
    final_val_loss: float | None
    best_val_loss: float | None
    final_train_loss: float | None
    diverged_at: int | None
    history: list[dict[str, Any]]  # rows: step, train_loss, val_loss, lr, elapsed (None for a non-finite value)
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
    git_dirty: bool | None = None  # the checkout had uncommitted changes (None: not recorded, before gptlab 0.2)


class RecordError(ValueError):
    """A file that is not a usable run record; the message says why."""


NUMBER, INTEGER, TEXT = (int, float), (int,), (str,)
FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # field -> (allowed types, may be null)
    "key": (TEXT, False), "grid": (TEXT, False), "variant": (TEXT, False), "seed": (INTEGER, False),
    "config": ((dict,), False), "status": (TEXT, False), "final_val_loss": (NUMBER, True),
    "best_val_loss": (NUMBER, True), "final_train_loss": (NUMBER, True), "diverged_at": (INTEGER, True),
    "history": ((list,), False), "params": (INTEGER, False), "tokens_per_sec": (NUMBER, False),
    "wall_time": (NUMBER, False), "device": (TEXT, False), "torch_version": (TEXT, False),
    "gptlab_version": (TEXT, False), "git_commit": (TEXT, False), "sample": (TEXT, False), "created": (TEXT, False),
    "extra": ((dict,), False), "schema": (INTEGER, False), "git_dirty": ((bool,), True),
}
OPTIONAL = {"extra", "git_dirty"}


def save_record(folder: Path, record: RunRecord) -> Path:
    return write_atomic(folder / f"{record.key}.json", json.dumps(dataclasses.asdict(record), indent=1))


def check_types(raw: dict[str, Any]) -> None:
    for name, (types, nullable) in FIELD_TYPES.items():
        value = raw.get(name)
        if value is None and (nullable or name in OPTIONAL):
            continue
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise RecordError(f"field {name} = {value!r:.40} is not a {'/'.join(t.__name__ for t in types)}")
    if raw["status"] not in STATUSES:
        raise RecordError(f"field status = {raw['status']!r} is not one of {', '.join(STATUSES)}")
    if raw["status"] == "done" and not (raw["final_val_loss"] is not None and math.isfinite(raw["final_val_loss"])):
        raise RecordError("a finished run without a finite final_val_loss")
    for row in raw["history"]:
        if not isinstance(row, dict) or not all(isinstance(v, NUMBER) or v is None for v in row.values()) \
                or not isinstance(row.get("step"), int):
            raise RecordError(f"a history row {row!r:.60} is not a mapping of step and losses to numbers")


def load_record(path: Path) -> RunRecord:
    """Read one record; raises RecordError with the reason a file cannot be used."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))  # pragma: no mutate (ASCII JSON: any codec reads it)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RecordError("not valid JSON (half-written or corrupt)") from None
    schema = raw.get("schema") if isinstance(raw, dict) else None
    if schema != SCHEMA:
        raise RecordError(f"not a gptlab run record of schema {SCHEMA} (schema {schema!r})")
    names = {f.name for f in dataclasses.fields(RunRecord)}
    missing = names - set(raw) - OPTIONAL
    if missing:
        raise RecordError(f"lacks {', '.join(sorted(missing))}")
    check_types(raw)
    record = RunRecord(**{k: v for k, v in raw.items() if k in names})
    try:
        key = RunConfig.from_dict(record.config).key()
    except (GptlabError, AttributeError) as err:
        raise RecordError(f"its config cannot be read ({err})") from None
    if key != record.key:
        raise RecordError(f"its key {record.key!r} is not its config's {key!r} (a record of gptlab 0.1? "
                          "`python -m gptlab.devtools.rekey FOLDER` renames those)")
    if Path(path).stem != record.key:
        raise RecordError(f"holds the run {record.key!r} under another name")
    return record
