"""Statistics over seeds: a variant's spread, Welch's t-test between two variants, Holm's correction for testing
several at once, and how many seeds a test would need to settle.

Lower is better (the metric is a loss); every verdict and claim status is computed from these numbers.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from scipy.stats import norm, t

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # a test that needs more seeds than this is reported as "more than 1000"
METHOD = (f"Welch's t-test (unequal variances) of each variant's final val loss over seeds against the baseline's, "
          f"p-values adjusted for the number of variants tested (Holm); a difference counts when the adjusted "
          f"p < {ALPHA}")


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; nan for one value), min, max and count of some values."""

    n: int
    mean: float
    std: float
    min: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summarize needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Summary(len(values), statistics.fmean(values), std, min(values), max(values))


@dataclass(frozen=True)
class Difference:
    """A difference of means (variant - baseline, or a mean - a reference value), its standard error and the
    Welch-Satterthwaite degrees of freedom."""

    delta: float
    se: float
    df: float

    def t_of(self, shift: float) -> float:
        """The t statistic of ``delta - shift`` (inf when the samples have no spread and the gap is not 0)."""
        gap = self.delta - shift
        if self.se == 0:
            return 0.0 if gap == 0 else math.copysign(math.inf, gap)
        return gap / self.se

    def p_two_sided(self, shift: float = 0.0) -> float:
        return float(2 * t.sf(abs(self.t_of(shift)), self.df))

    def p_above(self, shift: float) -> float:
        """One-sided p of ``delta > shift``."""
        return float(t.sf(self.t_of(shift), self.df))

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        half = float(t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.delta - half, self.delta + half


def welch(variant: Sequence[float], baseline: Sequence[float]) -> Difference | None:
    """Welch's t-test set-up for mean(variant) - mean(baseline); None with fewer than 2 values on a side."""
    if len(variant) < 2 or len(baseline) < 2:
        return None
    va, vb = statistics.variance(variant) / len(variant), statistics.variance(baseline) / len(baseline)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(variant) - 1) + vb**2 / (len(baseline) - 1)) if se else len(variant) - 1.0
    return Difference(statistics.fmean(variant) - statistics.fmean(baseline), se, df)


def one_sample(values: Sequence[float], reference: float) -> Difference | None:
    """The t-test set-up for mean(values) - reference; None with fewer than 2 values."""
    if len(values) < 2:
        return None
    se = statistics.stdev(values) / math.sqrt(len(values))
    return Difference(statistics.fmean(values) - reference, se, len(values) - 1.0)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values is multiplied by m - k + 1, kept monotone."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)  # pragma: no mutate (every entry is set below)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def seeds_needed(gap: float, spread: float, tests: int, samples: int = 2) -> int | None:
    """Seeds per variant for a test at level ALPHA / tests to detect ``gap`` with POWER, given the seed-to-seed
    standard deviation ``spread`` (normal approximation; ``samples`` 1 for a mean against a fixed value).
    None when the gap is 0 (no number of seeds settles it)."""
    if gap == 0:
        return None
    z = float(norm.ppf(1 - ALPHA / tests / 2) + norm.ppf(POWER))
    return max(2, math.ceil(samples * (z * spread / abs(gap)) ** 2))


def format_p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline: mean difference (variant - baseline), Holm-adjusted p and verdict."""

    delta: float
    p_value: float | None
    significant: bool
    verdict: str


def compare_to_baseline(losses: dict[str, Sequence[float]], baseline: str) -> dict[str, Comparison]:
    """Each variant (but the baseline) against the baseline, Welch's t-test, Holm-adjusted over the variants.

    Only variants with a finished run are compared; the baseline needs one too.
    """
    base = losses.get(baseline) or []
    others = {name: values for name, values in losses.items() if name != baseline and values}
    if not base:
        return {}
    tests = {name: welch(values, base) for name, values in others.items()}
    tested = [name for name, diff in tests.items() if diff is not None and diff.se > 0]
    adjusted = dict(zip(tested, holm([tests[name].p_two_sided() for name in tested])))  # type: ignore[union-attr]
    out = {}
    for name, values in others.items():
        delta = statistics.fmean(values) - statistics.fmean(base)
        diff = tests[name]
        if diff is None:
            out[name] = Comparison(delta, None, False, "one seed")
        elif diff.se == 0:
            out[name] = Comparison(delta, None, False, "identical" if delta == 0 else "no spread")
        else:
            p = adjusted[name]
            if p < ALPHA:  # pragma: no mutate (<=: a p-value exactly ALPHA)
                out[name] = Comparison(delta, p, True, f"{'better' if delta < 0 else 'worse'}, {format_p(p)}")  # pragma: no mutate (<=: delta 0 is never significant)
            else:
                out[name] = Comparison(delta, p, False, f"n.s., {format_p(p)}")
    return out
