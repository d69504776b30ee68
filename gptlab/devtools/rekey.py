"""Re-key run records written by gptlab 0.1, whose keys hashed every config field (so any new field re-keyed
every record). Since 0.2 a key hashes only the fields that differ from their defaults; this renames each old
record to its new key, without retraining anything:

    python -m gptlab.devtools.rekey reports/           # every grid folder under reports/
    python -m gptlab.devtools.rekey reports/ --dry-run # only say what would change
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gptlab.config import RunConfig
from gptlab.errors import GptlabError
from gptlab.files import write_atomic


def rekey(runs_dir: Path, dry_run: bool = False) -> list[tuple[str, str]]:
    """Rename every record in ``runs_dir`` whose key is not its config's; returns (old, new) pairs."""
    renamed = []
    for path in sorted(runs_dir.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            new = RunConfig.from_dict(raw["config"]).key()
        except (OSError, ValueError, KeyError, TypeError, AttributeError, GptlabError):
            continue  # not a record this tool can read: left as it is
        if new == raw.get("key") and path.stem == new:
            continue
        renamed.append((path.stem, new))
        if not dry_run:
            raw["key"] = new
            write_atomic(runs_dir / f"{new}.json", json.dumps(raw, indent=1))
            if path.stem != new:
                path.unlink()
    return renamed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a reports folder or one grid's folder")
    parser.add_argument("--dry-run", action="store_true", help="print what would be renamed, change nothing")
    args = parser.parse_args(argv)
    folders = sorted({p.parent for p in args.folder.glob("**/runs/*.json")})
    total = 0
    for runs_dir in folders:
        pairs = rekey(runs_dir, args.dry_run)
        total += len(pairs)
        for old, new in pairs:
            print(f"{runs_dir}: {old} -> {new}")
    print(f"{total} records {'would be ' if args.dry_run else ''}re-keyed in {len(folders)} folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
