"""Mutation score of the core: run mutmut, read its CI/CD stats, list the survivors by module.

Score = killed / (total - skipped); the command exits 1 when the score is under ``--min-score``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

from gptlab.files import PROJECT_ROOT

MUTANTS_DIR = PROJECT_ROOT / "mutants"
STATS_FILE = MUTANTS_DIR / "mutmut-cicd-stats.json"
COUNTS = ("total", "killed", "survived", "timeout", "no_tests", "skipped")


@dataclass(frozen=True)
class MutationStats:
    """The counts of ``mutants/mutmut-cicd-stats.json`` that the score and the report use."""

    total: int
    killed: int
    survived: int
    timeout: int
    no_tests: int
    skipped: int

    @classmethod
    def from_json(cls, raw: dict[str, int]) -> MutationStats:
        return cls(**{name: int(raw.get(name, 0)) for name in COUNTS})

    @property
    def score(self) -> float:
        """Killed over every mutant that was tested; 0 when none was."""
        tested = self.total - self.skipped
        return self.killed / tested if tested else 0.0


def module_of(mutant: str) -> str:
    """``gptlab.config.x_validate__mutmut_3`` -> ``gptlab.config`` (the mangled function name has no dot)."""
    return mutant.rpartition(".")[0]


def parse_results(text: str) -> dict[str, list[tuple[str, str]]]:
    """``mutmut results`` lines (``    NAME: STATUS``) -> {module: [(name, status), ...]}, skipped ones left out."""
    by_module: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in text.splitlines():
        name, sep, status = line.strip().partition(": ")
        if sep and status != "skipped":
            by_module[module_of(name)].append((name, status))
    return dict(sorted(by_module.items()))


def format_report(stats: MutationStats, survivors: dict[str, list[tuple[str, str]]], seconds: float) -> str:
    lines = [", ".join(f"{name} {getattr(stats, name)}" for name in COUNTS)]
    lines.append(f"score {stats.score:.3f} = killed / (total - skipped)   time {seconds:.0f} s")
    for module, mutants in survivors.items():
        lines.append(f"{module}: {len(mutants)} not killed")
        lines.extend(f"    {name}: {status}" for name, status in mutants)
    return "\n".join(lines)


def mutmut(*args: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one mutmut command in the project root, torch on one thread (forked workers hang otherwise)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.PIPE if capture else None
    return subprocess.run([sys.executable, "-m", "mutmut", *args], env=env, text=True, stdout=out, cwd=PROJECT_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptlab.devtools.mutation", description=__doc__)
    parser.add_argument("--min-score", type=float, default=0.90, help="fail under this score (default 0.90)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="parallel mutant workers")
    parser.add_argument("--fresh", action="store_true", help="delete mutants/ first: a full run, not incremental")
    args = parser.parse_args(argv)
    if not 0 <= args.min_score <= 1:
        parser.error(f"--min-score = {args.min_score} is not allowed; must be in [0, 1]")
    if args.fresh:
        shutil.rmtree(MUTANTS_DIR, ignore_errors=True)
    start = time.perf_counter()
    STATS_FILE.unlink(missing_ok=True)
    run = mutmut("run", "--max-children", str(args.max_children), capture=False)
    seconds = time.perf_counter() - start
    if run.returncode != 0 or mutmut("export-cicd-stats").returncode != 0 or not STATS_FILE.is_file():
        print(f"mutmut run failed (exit code {run.returncode}); see its output above", file=sys.stderr)
        return 2
    stats = MutationStats.from_json(json.loads(STATS_FILE.read_text()))
    print(format_report(stats, parse_results(mutmut("results").stdout), seconds))
    if stats.score < args.min_score:
        print(f"FAIL: mutation score {stats.score:.3f} < {args.min_score:.2f}")
        return 1
    print(f"OK: mutation score {stats.score:.3f} >= {args.min_score:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
