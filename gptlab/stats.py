"""Statistics over seeds: a variant's spread, and whether its gap to the baseline beats seed-to-seed noise.

Lower is better (the metric is a loss); verdicts are sentences built from the numbers, never written ahead.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Sequence

from scipy.stats import ttest_ind

ALPHA = 0.05
METHOD = (f"Welch's t-test (unequal variances) of each variant's final val loss over seeds against the baseline's; "
          f"a difference counts when p < {ALPHA}")


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; nan for one value), min, max and count of some values."""

    n: int
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class Comparison:
    """A variant against the baseline: mean difference (variant - baseline), p-value and the verdict text."""

    delta: float
    p_value: float | None
    significant: bool
    verdict: str


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summarize needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Summary(len(values), statistics.fmean(values), std, min(values), max(values))


def format_p(p: float) -> str:
    return "p<0.0001" if p < 1e-4 else f"p={p:.2g}"


def compare(variant: Sequence[float], baseline: Sequence[float], alpha: float = ALPHA) -> Comparison:
    """Welch's t-test of ``variant`` against ``baseline`` (one value per seed each)."""
    delta = statistics.fmean(variant) - statistics.fmean(baseline)
    if len(variant) < 2 or len(baseline) < 2:
        return Comparison(delta, None, False, "not established: one seed")
    seeds = f"Welch t-test over {len(variant)} vs {len(baseline)} seeds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns on (nearly) constant samples
        p = float(ttest_ind(variant, baseline, equal_var=False).pvalue)
    if math.isnan(p):
        return Comparison(delta, None, False, f"no difference: identical values ({seeds})")
    if p >= alpha:
        return Comparison(delta, p, False, f"not significant ({format_p(p)}, {seeds})")
    direction = "better" if delta < 0 else "worse"
    return Comparison(delta, p, True, f"{direction} than baseline by {abs(delta):.3g} ({format_p(p)}, {seeds})")
