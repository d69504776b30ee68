"""Mutation score of the core: run mutmut, read its CI/CD stats, list the survivors by module.

Score = killed / (total - skipped); the command exits 1 when the score is under ``--min-score``.

``--catalogue`` checks the catalogue of learners' bugs instead (``gptlab/devtools/catalogue.py``): each bug is
patched into a copy of the project and must be killed by its named test; exit 1 when one is not.
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
    catalogue = parser.add_argument_group("the catalogue of learners' bugs (instead of mutmut)")
    catalogue.add_argument("--catalogue", action="store_true",
                           help="patch each catalogued bug into a copy of the project; its named test must fail")
    catalogue.add_argument("--measure", action="store_true",
                           help="also train the lecture model 1000 steps per bug and report its val loss "
                                "(implies --catalogue)")
    catalogue.add_argument("--markdown", action="store_true", help="with --measure: also print the docs' table")
    catalogue.add_argument("--full", action="store_true",
                           help="run the default test selection (-x) for every entry, not only its named test")
    catalogue.add_argument("--only", default=None, metavar="ID[,ID...]", help="check only these entries")
    catalogue.add_argument("--jobs", type=int, default=2,
                           help="entries checked at once, each on its own copy (default 2)")
    catalogue.add_argument("--no-preload", action="store_true",
                           help="start each pytest run as a new python -m pytest, not forked from a process that has "
                                "imported torch (slower)")
    args = parser.parse_args(argv)
    if not 0 <= args.min_score <= 1:
        parser.error(f"--min-score = {args.min_score} is not allowed; must be in [0, 1]")
    if args.jobs < 1:
        parser.error(f"--jobs = {args.jobs} is not allowed; must be >= 1")
    catalogue_only = [name for name in ("markdown", "full", "only", "no_preload") if getattr(args, name)]
    if args.measure:
        args.catalogue = True
    if catalogue_only and not args.catalogue:
        parser.error(f"--{catalogue_only[0].replace('_', '-')} goes with --catalogue")
    if args.markdown and not args.measure:
        parser.error("--markdown goes with --measure")
    if args.catalogue:
        from gptlab.devtools import catalogue as bugs

        ids = [i.strip() for i in args.only.split(",") if i.strip()] if args.only else None
        try:
            bugs.select(ids)
        except ValueError as err:
            parser.error(str(err))
        return bugs.main(ids, jobs=args.jobs, full=args.full, do_measure=args.measure, markdown=args.markdown,
                         preload=not args.no_preload)
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
