"""Claims: what a grid file says its runs will show, checked against the runs.

A claim is one of
- ``{variant: A, is: worse|better, than: B, by_at_least: m}``: A's mean val loss is above (below) B's by more
  than m (default 0; B defaults to the baseline);
- ``{variant: A, is: same, than: B, within: m}``: the two means differ by less than m (an equivalence test);
- ``{variant: A, near: r, within: m}``: A's mean is within m of the reference value r (e.g. the lecture's).
An optional ``note`` says why it is expected. Each claim is tested with a t-test over seeds (Welch's for two
variants, one-sample against a reference) and gets a status:
- **holds**: significant in the stated direction, beyond the stated margin (for ``same``/``near``: both
  one-sided tests of the margin are significant, TOST);
- **contradicted**: significant the other way (for ``same``/``near``: significantly further apart than the margin);
- **not established**: neither, or too few seeds; then it says how many seeds would settle it at the effect
  measured.
The p-values of a grid's claims are adjusted together (Holm).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from gptlab.errors import GptlabError, key_text, short
from gptlab.stats import ALPHA, MAX_SEEDS, POWER, Difference, format_p, holm, one_sample, seeds_needed, welch

KINDS = ["worse", "better", "same"]
CLAIM_KEYS = ["variant", "is", "than", "by_at_least", "within", "near", "note"]
HOLDS, CONTRADICTED, OPEN = "holds", "contradicted", "not established"
STATUSES = [HOLDS, CONTRADICTED, OPEN]
METHOD = (f"each claim is a t-test over seeds (Welch's between two variants, one-sample against a reference "
          f"value; two one-sided tests for `same` and `near`), its p-value adjusted over the grid's claims (Holm, "
          f"apart from the table's verdicts, which are adjusted over the variants); a claim holds or is "
          f"contradicted when the adjusted p < {ALPHA}. Seeds to settle: per variant, for {POWER:.0%} power at "
          f"level {ALPHA}/(number of claims), normal approximation, at the measured effect and spread")


@dataclass(frozen=True)
class Claim:
    variant: str
    kind: str | None = None       # worse | better | same; None for a `near` claim
    than: str | None = None       # the other variant (the baseline when None)
    by_at_least: float = 0.0
    within: float | None = None
    near: float | None = None
    note: str = ""

    def text(self, baseline: str) -> str:
        if self.near is not None:
            return f"`{self.variant}` is near {self.near:g} (within {self.within:g})"
        other = self.than or baseline
        if self.kind == "same":
            return f"`{self.variant}` is the same as `{other}` (within {self.within:g})"
        margin = f" by at least {self.by_at_least:g}" if self.by_at_least else ""
        return f"`{self.variant}` is {self.kind} than `{other}`{margin}"

    def to_dict(self) -> dict[str, Any]:
        """The claim as a grid file writes it (``is`` for the kind), without the fields left at their defaults."""
        raw = {"is" if k == "kind" else k: v for k, v in asdict(self).items()}
        return {k: v for k, v in raw.items() if v not in (None, "", 0.0) or k == "variant"}


def parse_claims(raw: Any, variants: list[str], error: Callable[[str, str], GptlabError]) -> list[Claim]:
    """The ``claims`` list of a grid (file or grid.json); ``error(key_path, message)`` makes the one-line error."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise error("claims", f"{short(raw)} is not allowed; expected a list of claims")
    return [parse_claim(item, f"claims[{i}]", variants, error) for i, item in enumerate(raw)]


def parse_claim(item: Any, where: str, variants: list[str],
                error: Callable[[str, str], GptlabError]) -> Claim:
    if not isinstance(item, dict):
        raise error(where, f"{short(item)} is not allowed; expected a mapping like "
                           "{variant: NAME, is: worse} or {variant: NAME, near: 2.49, within: 0.05}")
    unknown = [k for k in item if k not in CLAIM_KEYS]
    if unknown:
        raise error(f"{where}.{key_text(unknown[0])}", f"unknown claim key; allowed: {', '.join(CLAIM_KEYS)}")

    def variant(key: str) -> str:
        name = item.get(key)
        if name not in variants:
            raise error(f"{where}.{key}", f"{short(name)} matches no variant; choose one of: {'; '.join(variants)}")
        return str(name)

    def number(key: str, positive: bool) -> float | None:
        value = item.get(key)
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value
                or abs(value) == float("inf")  # pragma: no mutate (float("INF") is inf too)
                or (value <= 0 if positive else value < 0)):
            raise error(f"{where}.{key}", f"{short(value)} is not allowed; expected a number "
                                          f"{'> 0' if positive else '>= 0'}")
        return float(value)

    note = item.get("note", "")
    if not isinstance(note, str):
        raise error(f"{where}.note", f"{short(note)} is not allowed; expected text")
    within = number("within", positive=True)
    if "near" in item:
        if "is" in item or "than" in item or "by_at_least" in item:
            raise error(where, "a `near` claim takes `within` (and `note`) only, not `is`, `than` or `by_at_least`")
        reference = item.get("near")
        if isinstance(reference, bool) or not isinstance(reference, (int, float)):
            raise error(f"{where}.near", f"{short(reference)} is not allowed; expected a number")
        if within is None:
            raise error(where, "a `near` claim needs `within: MARGIN`, e.g. {variant: bigram, near: 2.49, within: 0.05}")
        return Claim(variant("variant"), near=float(reference), within=within, note=note)
    kind = item.get("is")
    if kind not in KINDS:
        raise error(f"{where}.is", f"{short(kind)} is not allowed; choose one of: {', '.join(KINDS)} (or give `near`)")
    if kind == "same" and within is None:
        raise error(where, "an `is: same` claim needs `within: MARGIN`: how close counts as the same")
    if kind != "same" and within is not None:
        raise error(f"{where}.within", "goes with `is: same` or `near`; for better/worse give `by_at_least`")
    by = number("by_at_least", positive=False)  # pragma: no mutate (None is falsy: the same)
    if kind == "same" and by is not None:
        raise error(f"{where}.by_at_least", "goes with `is: better` or `is: worse`")
    than = variant("than") if "than" in item else None
    claim = Claim(variant("variant"), kind=str(kind), than=than, by_at_least=by or 0.0, within=within, note=note)
    if claim.variant == claim.than:
        raise error(where, f"compares {claim.variant!r} with itself")
    return claim


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    text: str
    status: str
    effect: float | None                # variant mean - other mean (or - reference); None without runs
    ci: tuple[float, float] | None      # its 95% confidence interval
    p_value: float | None               # Holm-adjusted over the grid's claims
    seeds: tuple[int, int]              # finished runs of the variant and of what it is compared with
    seeds_needed: int | None            # per variant, to settle an open claim at the measured effect
    reason: str                         # one line: why this status

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "claim": self.claim.to_dict()}


@dataclass(frozen=True)
class _Test:
    """What one claim's test needs: the difference, the margin to clear, and the one p-value Holm adjusts."""

    diff: Difference
    p: float
    holds_if_significant: bool  # the p-value above tests the claim's own direction (False: its contrary)
    gap: float                  # how far the effect is from the boundary the test must clear
    spread: float
    samples: int


def _test(claim: Claim, diff: Difference, spread: float, samples: int) -> _Test:
    if claim.kind in ("worse", "better"):
        sign = 1.0 if claim.kind == "worse" else -1.0
        directed = Difference(sign * diff.delta, diff.se, diff.df)
        p = directed.p_two_sided(claim.by_at_least)
        clears = directed.delta > claim.by_at_least  # pragma: no mutate (>=: at delta == margin p = 1, never significant)
        return _Test(diff, p, clears, directed.delta - claim.by_at_least, spread, samples)
    margin = claim.within or 0.0  # pragma: no mutate (`same` and `near` claims always have `within`)
    inside = max(diff.p_above(-margin), Difference(-diff.delta, diff.se, diff.df).p_above(-margin))  # TOST
    beyond = Difference(abs(diff.delta), diff.se, diff.df).p_above(margin)
    gap = margin - abs(diff.delta)
    holds = inside <= beyond  # pragma: no mutate (<: they tie only at |delta| = margin, where p = 0.5)
    return _Test(diff, min(inside, beyond), holds, gap, spread, samples)


def evaluate(claims: Sequence[Claim], losses: dict[str, list[float]], baseline: str,
             level: float = ALPHA) -> list[ClaimResult]:
    """Each claim's status from the finished runs' final val losses (variant -> one value per seed): it holds or
    is contradicted when its adjusted p-value is below ``level`` (one look's, in a sequential design)."""
    prepared: list[tuple[Claim, _Test | None, str, tuple[int, int]]] = []
    for claim in claims:
        own = losses.get(claim.variant, [])
        if claim.near is not None:
            other_name, other = f"{claim.near:g}", [claim.near]
            diff = one_sample(own, claim.near)
            spread = 0.0  # pragma: no mutate (read only with 2 seeds or more, where the next line sets it)
            if len(own) > 1:
                spread = statistics.stdev(own)
            samples, seeds = 1, (len(own), 0)
        else:
            other_name = claim.than or baseline
            other = losses.get(other_name, [])
            diff = welch(own, other)
            spread = 0.0  # pragma: no mutate (read only when there is a difference, where the next line sets it)
            if diff:
                spread = statistics.fmean([statistics.stdev(v) for v in (own, other)])
            samples, seeds = 2, (len(own), len(other))
        if not own or not other:
            missing = claim.variant if not own else other_name
            prepared.append((claim, None, f"no finished run of `{missing}`", seeds))
        elif diff is None:
            prepared.append((claim, None, "one seed: no spread to test against (run more seeds)", seeds))
        else:
            prepared.append((claim, _test(claim, diff, spread, samples), "", seeds))  # pragma: no mutate (reason: set below)
    tested = [test for _, test, _, _ in prepared if test is not None]
    adjusted = iter(holm([test.p for test in tested]))
    results = []
    for claim, test, reason, seeds in prepared:
        text = claim.text(baseline)
        if test is None:
            results.append(ClaimResult(claim, text, OPEN, None, None, None, seeds, None, reason))
            continue
        p = next(adjusted)
        if p < level:  # pragma: no mutate (<=: a p-value exactly at the level)
            status = HOLDS if test.holds_if_significant else CONTRADICTED
            needed, why = None, f"adjusted {format_p(p)}"
        else:
            status = OPEN
            needed = seeds_needed(test.gap, test.spread, len(tested), test.samples)
            settle = ("no number of seeds settles it: the effect sits on the margin" if needed is None else
                      f"about {needed if needed <= MAX_SEEDS else f'more than {MAX_SEEDS}'} seeds per variant "
                      "would settle it at this effect")
            why = f"adjusted {format_p(p)}; {settle}"
        results.append(ClaimResult(claim, text, status, test.diff.delta, test.diff.ci(), p, seeds,
                                   needed if status == OPEN else None,  # pragma: no mutate (needed is None but when open)
                                   why))
    return results


def counts(results: Sequence[ClaimResult]) -> dict[str, int]:
    return {status: sum(r.status == status for r in results) for status in STATUSES}
