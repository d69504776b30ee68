"""Seeds until settled: a group-sequential rule that adds seeds in rounds and stops as soon as every claim holds or
is contradicted, without letting the looks inflate the error rates.

Looking at the claims after every round and stopping at the first significant result would, at the level of
one test, find a false verdict far more often than that level (10 looks at 0.05 find one about 19% of the time
when nothing differs). The rule here spends the level over the planned looks instead: look k of K, at
``n_k`` seeds out of a budget of ``N`` per variant, tests at the level spent since the look before,
``spent(n_k / N) - spent(n_{k-1} / N)``, with Lan-DeMets' Pocock-type spending function
``spent(t) = alpha * ln(1 + (e - 1) t)``. The levels of all the looks sum to ``alpha``, so by the union bound the
chance of any false verdict over all the looks is at most ``alpha``, however the looks' statistics depend on one
another (conservative: it ignores their correlation). Within a look the grid's claims are Holm-adjusted together,
as in a fixed design; a claim that settles keeps the verdict of the look where it settled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from gptlab.claims import OPEN, Claim, ClaimResult, evaluate
from gptlab.errors import GptlabError
from gptlab.stats import ALPHA

METHOD = (f"with seeds added in rounds until settled, each look has its own level in place of {ALPHA}: look k of the "
          f"planned looks (at n_k of the budget's N seeds per variant) tests at the level spent since the look before, by Lan-DeMets' Pocock-type alpha spending "
          f"α(t) = {ALPHA}·ln(1 + (e − 1)·t) at t = n_k/N; the looks' levels sum to {ALPHA}, so the chance of any "
          f"false verdict over all the looks is at most {ALPHA} (a union bound: conservative); a claim keeps the "
          f"verdict of the look where it settled")


def spent(fraction: float, alpha: float = ALPHA) -> float:
    """The level spent by information fraction ``fraction`` (seeds so far / budget): Pocock-type, Lan-DeMets."""
    return alpha * math.log(1 + (math.e - 1) * min(1.0, fraction))


@dataclass(frozen=True)
class Design:
    """The planned looks: at ``first`` seeds per variant (the grid's), then every ``step`` more, up to
    ``max_seeds``."""

    first: int
    step: int
    max_seeds: int

    def __post_init__(self) -> None:
        if self.max_seeds < self.first:
            raise GptlabError(f"--max-seeds = {self.max_seeds} is not allowed; must be at least the grid's "
                              f"{self.first} seeds")
        if self.first < 2 or self.step < 1:
            raise GptlabError(f"seeds until settled needs at least 2 seeds at the first look and rounds of at least "
                              f"1 (got {self.first} and {self.step}): give the grid 2 seeds or more")

    def looks(self) -> list[int]:
        """Seeds per variant at each look; the last is the budget."""
        return list(range(self.first, self.max_seeds, self.step)) + [self.max_seeds]

    def levels(self) -> list[float]:
        """The level each look tests at: what the spending function adds since the look before."""
        fractions = [n / self.max_seeds for n in self.looks()]
        return [spent(t) - spent(before) for t, before in zip(fractions, [0.0] + fractions)]

    def to_dict(self) -> dict[str, int]:
        return {"first": self.first, "step": self.step, "max_seeds": self.max_seeds}

    @classmethod
    def from_dict(cls, raw: Any) -> Design:
        if not isinstance(raw, dict) or not all(type(raw.get(k)) is int for k in ("first", "step", "max_seeds")):
            raise GptlabError(f"{raw!r} is not a design of looks; expected {{first, step, max_seeds}} integers")
        return cls(raw["first"], raw["step"], raw["max_seeds"])


def stopping_look(p_values: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """For p-values of shape (looks, ...): the index of the first look whose p-value is below its level, or -1
    where none is (the budget is spent unsettled)."""
    crossed = (np.asarray(p_values).T < np.asarray(levels)).T  # the looks' axis last, against each look's level
    return np.where(crossed.any(axis=0), crossed.argmax(axis=0), -1)


def involved(claim: Claim, baseline: str) -> list[str]:
    """The variants whose seeds a claim's test uses."""
    return [claim.variant] if claim.near is not None else [claim.variant, claim.than or baseline]


@dataclass(frozen=True)
class Settlement:
    """The claims replayed look by look: each claim's result (at the look it settled, or the last look taken),
    the looks taken, and the seeds each variant needs for the next look with the claims that need them."""

    results: list[ClaimResult]
    settled_at: list[int | None]       # per claim, the look (1-based) where it settled; None while open
    looks_taken: int
    wanted: dict[str, int]             # variant -> seeds for the next look (empty: settled, or the budget spent)
    open_claims: dict[str, list[int]]  # variant -> the open claims (1-based) that want its seeds


def settle(claims: Sequence[Claim], losses: dict[str, list[float]], baseline: str, design: Design) -> Settlement:
    """Replay the looks on the finished runs (each variant's losses in its seeds' order): at each look every
    claim is tested on the first ``n_k`` seeds at that look's level; a look is taken only when every variant
    of an open claim has its ``n_k`` seeds."""
    looks, levels = design.looks(), design.levels()
    settled: dict[int, ClaimResult] = {}
    settled_at: dict[int, int] = {}
    latest = [replace(r, status=OPEN, seeds_needed=None, reason=f"the first look needs {looks[0]} seeds of each "
                      "variant") for r in evaluate(claims, losses, baseline)]
    taken = 0
    for k, (seeds, level) in enumerate(zip(looks, levels)):
        needing = {v for i, c in enumerate(claims) if i not in settled for v in involved(c, baseline)}
        if not needing or any(len(losses.get(v, [])) < seeds for v in needing):
            break
        latest = evaluate(claims, {v: values[:seeds] for v, values in losses.items()}, baseline, level=level)
        taken = k + 1
        for i, result in enumerate(latest):
            if i not in settled and result.status != OPEN:
                settled_at[i] = taken
                settled[i] = replace(result, reason=f"look {taken} of {len(looks)} ({seeds} seeds): "
                                                    f"{result.reason} < {level:.2g}, the level spent at this look")
    results = [settled.get(i, replace(r, reason=open_reason(r, taken, looks))) for i, r in enumerate(latest)]
    wanted: dict[str, int] = {}
    why: dict[str, list[int]] = {}
    if taken < len(looks):
        for i, claim in enumerate(claims):
            if i not in settled:
                for variant in involved(claim, baseline):
                    wanted[variant] = looks[taken]
                    why.setdefault(variant, []).append(i + 1)
    return Settlement(results, [settled_at.get(i) for i in range(len(claims))], taken, wanted, why)


def open_reason(result: ClaimResult, taken: int, looks: list[int]) -> str:
    if result.status != OPEN or taken == 0:
        return result.reason
    where = f"look {taken} of {len(looks)} ({looks[taken - 1]} seeds)"
    then = "the budget is spent" if taken == len(looks) else f"the next look is at {looks[taken]} seeds"
    return f"{where}: {result.reason.split(';')[0]}; {then}"
