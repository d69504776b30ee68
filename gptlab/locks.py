"""Run locks: before training a run, a process claims it with an exclusive ``runs/<key>.lock`` file naming its
host and pid, so two ``gptlab ablate`` processes (or two machines sharing the folder) split a grid instead of
both training it. A lock whose owner is gone (a dead pid on this host, or no heartbeat for ``STALE_S``) is
taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

STALE_S = 600.0  # a lock not touched for this long belongs to a process that is gone
HEARTBEAT_S = 30.0


def lock_path(runs_dir: Path, key: str) -> Path:
    return runs_dir / f"{key}.lock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # pragma: no mutate (signal 0 only asks; another number would send that signal)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(path: Path) -> str:
    """Who holds a lock, e.g. ``pid 4242 on host-a``."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))  # pragma: no mutate (ASCII JSON: any codec reads it)
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def stale(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))  # pragma: no mutate (ASCII JSON: any codec reads it)
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return True  # unreadable: a half-written lock of a process that died while writing it
    if not isinstance(owner, dict):
        return True
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not pid_alive(owner["pid"])
    return age > STALE_S  # pragma: no mutate (>=: a float age equal to STALE_S)


class Locks:
    """The locks this process holds in one runs folder."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.held: set[str] = set()
        self.token = uuid.uuid4().hex
        self.last_beat = time.monotonic()

    def owner(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def acquire(self, key: str) -> bool:
        """Claim ``key``; False when a live process holds it."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        path = lock_path(self.runs_dir, key)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not stale(path):
                return False
            tmp = path.with_suffix(f".{self.token}.tmp")
            tmp.write_text(self.owner(), encoding="utf-8")  # pragma: no mutate (ASCII JSON: any codec writes it)
            os.replace(tmp, path)  # take the stale lock over; if two processes race, the last rename wins
            if self.token not in path.read_text(encoding="utf-8"):  # pragma: no mutate (ASCII JSON: any codec)
                return False
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:  # pragma: no mutate (ASCII JSON: any codec writes it)
                f.write(self.owner())
        self.held.add(key)
        return True

    def release(self, key: str) -> None:
        if key in self.held:
            self.held.discard(key)
            lock_path(self.runs_dir, key).unlink(missing_ok=True)

    def release_all(self) -> None:
        for key in list(self.held):
            self.release(key)

    def heartbeat(self) -> None:
        """Touch the held locks (at most every HEARTBEAT_S), so other hosts see they are alive."""
        since = time.monotonic() - self.last_beat
        if since < HEARTBEAT_S:  # pragma: no mutate (<=: a float equal to HEARTBEAT_S)
            return
        self.last_beat = time.monotonic()
        for key in self.held:
            try:
                os.utime(lock_path(self.runs_dir, key))
            except OSError:
                pass
