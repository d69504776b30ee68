"""Writing files safely: atomically (a killed process never leaves half a file) and only when they change.

The one writer for run records, grid.json, reports, CSV exports and checkpoints.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gptlab.errors import GptlabError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """A relative path is looked up in the working directory, then in the project (where ``data/`` ships)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p if (PROJECT_ROOT / p).exists() else p


def _umask() -> int:
    mask = os.umask(0)  # pragma: no mutate (any value: the old mask is read, then put back)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename; the file gets the
    permissions of any new file (0666 less the umask), not the temp file's 0600."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        in_the_way = next((p for p in [path.parent, *path.parent.parents] if p.is_file()), path.parent)
        raise GptlabError(f"{path}: cannot write there: {in_the_way} is a file, not a folder") from None
    except PermissionError:
        raise GptlabError(f"{path}: cannot write there: no permission to write in {path.parent}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)  # pragma: no mutate (UTF-8 is utf-8)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """Write (atomically) only when the content differs, so a re-render of the same results leaves the checkout
    clean; returns whether it wrote."""
    raw = data.encode("utf-8") if isinstance(data, str) else data  # pragma: no mutate (UTF-8 is utf-8)
    try:
        if path.read_bytes() == raw:
            return False
    except OSError:
        pass
    write_atomic(path, raw)
    return True
