"""Claims, exactly: each bad claim's whole one-line message (the key path, the value, what is allowed), the
text a report prints for each kind of claim, what a claim writes back, and the numbers behind each status."""

import pytest

from gptlab.claims import HOLDS, OPEN, Claim, evaluate, parse_claims
from gptlab.errors import GptlabError
from tests.test_claims import LOSSES, VARIANTS


def error(key_path, message):
    return GptlabError(f"{key_path}: {message}")


@pytest.mark.parametrize("raw, message", [
    ('nope',
     "claims: 'nope' is not allowed; expected a list of claims"),
    (['x'],
     "claims[0]: 'x' is not allowed; expected a mapping like {variant: NAME, is: worse} or "
     "{variant: NAME, near: 2.49, within: 0.05}"),
    ([{'variant': 'ghost', 'is': 'worse'}],
     "claims[0].variant: 'ghost' matches no variant; choose one of: base; worse; better; same; noisy"),
    ([{'variant': 'worse', 'is': 'bigger'}],
     "claims[0].is: 'bigger' is not allowed; choose one of: worse, better, same (or give `near`)"),
    ([{'variant': 'worse', 'is': 'same'}],
     'claims[0]: an `is: same` claim needs `within: MARGIN`: how close counts as the same'),
    ([{'variant': 'worse', 'near': 2.5}],
     'claims[0]: a `near` claim needs `within: MARGIN`, e.g. {variant: bigram, near: 2.49, within: 0.05}'),
    ([{'variant': 'worse', 'near': 2.5, 'within': 0.1, 'is': 'worse'}],
     'claims[0]: a `near` claim takes `within` (and `note`) only, not `is`, `than` or `by_at_least`'),
    ([{'variant': 'worse', 'near': 2.5, 'within': 0.1, 'than': 'base'}],
     'claims[0]: a `near` claim takes `within` (and `note`) only, not `is`, `than` or `by_at_least`'),
    ([{'variant': 'worse', 'near': 2.5, 'within': 0.1, 'by_at_least': 0.1}],
     'claims[0]: a `near` claim takes `within` (and `note`) only, not `is`, `than` or `by_at_least`'),
    ([{'variant': 'worse', 'near': '2.5', 'within': 0.1}],
     "claims[0].near: '2.5' is not allowed; expected a number"),
    ([{'variant': 'worse', 'near': True, 'within': 0.1}],
     'claims[0].near: True is not allowed; expected a number'),
    ([{'variant': 'worse', 'is': 'worse', 'by_at_least': -1}],
     'claims[0].by_at_least: -1 is not allowed; expected a number >= 0'),
    ([{'variant': 'worse', 'is': 'same', 'within': 0}],
     'claims[0].within: 0 is not allowed; expected a number > 0'),
    ([{'variant': 'worse', 'is': 'same', 'within': float('nan')}],
     'claims[0].within: nan is not allowed; expected a number > 0'),
    ([{'variant': 'worse', 'is': 'same', 'within': float('-inf')}],
     'claims[0].within: -inf is not allowed; expected a number > 0'),
    ([{'variant': 'worse', 'is': 'same', 'within': True}],
     'claims[0].within: True is not allowed; expected a number > 0'),
    ([{'variant': 'worse', 'is': 'same', 'within': '1'}],
     "claims[0].within: '1' is not allowed; expected a number > 0"),
    ([{'variant': 'worse', 'is': 'worse', 'within': 0.1}],
     'claims[0].within: goes with `is: same` or `near`; for better/worse give `by_at_least`'),
    ([{'variant': 'worse', 'is': 'same', 'within': 0.1, 'by_at_least': 0}],
     'claims[0].by_at_least: goes with `is: better` or `is: worse`'),
    ([{'variant': 'worse', 'is': 'worse', 'than': 'worse'}],
     "claims[0]: compares 'worse' with itself"),
    ([{'variant': 'worse', 'is': 'worse', 'typo': 1}],
     'claims[0].typo: unknown claim key; allowed: variant, is, than, by_at_least, within, near, note'),
    ([{'variant': 'worse', 'is': 'worse', 'note': 3}],
     'claims[0].note: 3 is not allowed; expected text'),
    ([{'variant': 'worse', 'is': 'worse', 'than': 'ghost'}],
     "claims[0].than: 'ghost' matches no variant; choose one of: base; worse; better; same; noisy"),
    ([{'is': 'worse'}],
     'claims[0].variant: None matches no variant; choose one of: base; worse; better; same; noisy'),])
def test_each_bad_claim_has_its_exact_message(raw, message):
    with pytest.raises(GptlabError) as exc:
        parse_claims(raw, VARIANTS, error)
    assert str(exc.value) == message


# -- what a claim says and writes ------------------------------------------------------------------------------

def claims(*raw):
    return parse_claims(list(raw), VARIANTS, error)


def test_the_text_of_each_kind_of_claim():
    parsed = claims({"variant": "worse", "is": "worse"},
                    {"variant": "better", "is": "better", "than": "worse", "by_at_least": 0.25},
                    {"variant": "same", "is": "same", "within": 0.02},
                    {"variant": "same", "is": "same", "than": "noisy", "within": 0.1},
                    {"variant": "noisy", "near": 2.05, "within": 0.05})
    assert [c.text("base") for c in parsed] == [
        "`worse` is worse than `base`", "`better` is better than `worse` by at least 0.25",
        "`same` is the same as `base` (within 0.02)", "`same` is the same as `noisy` (within 0.1)",
        "`noisy` is near 2.05 (within 0.05)"]


def test_a_claim_writes_what_it_says_and_nothing_left_at_its_default():
    assert claims({"variant": "worse", "is": "worse"}) == [Claim("worse", kind="worse")]  # no note: ""
    assert Claim("worse", kind="worse").to_dict() == {"variant": "worse", "is": "worse"}
    assert claims({"variant": "worse", "near": 2.6, "within": 0.1, "note": "why"}) == [
        Claim("worse", near=2.6, within=0.1, note="why")]
    assert claims({"variant": "worse", "near": 2.6, "within": 0.1}) == [Claim("worse", near=2.6, within=0.1)]
    assert Claim("", near=2.0, within=0.1).to_dict() == {"variant": "", "near": 2.0, "within": 0.1}  # always
    (result,) = evaluate(claims({"variant": "worse", "is": "worse"}), LOSSES, "base")
    written = result.to_dict()
    assert written["claim"] == {"variant": "worse", "is": "worse"} and written["status"] == HOLDS
    assert written["seeds"] == (5, 5) and written["text"] == "`worse` is worse than `base`"


# -- the numbers behind each status ----------------------------------------------------------------------------


def test_a_better_claim_mirrors_the_worse_claim_the_other_way_round():
    for margin in (0.0, 0.18):
        (a,) = evaluate(claims({"variant": "better", "is": "better", "by_at_least": margin}), LOSSES, "base")
        (b,) = evaluate(claims({"variant": "base", "is": "worse", "than": "better", "by_at_least": margin}), LOSSES,
                        "base")
        assert a.status == b.status and a.p_value == pytest.approx(b.p_value, rel=1e-9)
        assert a.effect == pytest.approx(-b.effect)
    assert a.status == HOLDS and a.p_value > 1e-3  # 0.204 better, against a margin of 0.18


def test_runs_missing_on_either_side_are_named():
    losses = {"base": LOSSES["base"], "noisy": LOSSES["noisy"]}  # no entry at all for worse
    results = evaluate(claims({"variant": "worse", "is": "worse"}, {"variant": "noisy", "is": "worse", "than": "worse"},
                              {"variant": "worse", "near": 2.6, "within": 0.1}), losses, "base")
    assert [(r.status, r.reason, r.seeds) for r in results] == [
        (OPEN, "no finished run of `worse`", (0, 5)), (OPEN, "no finished run of `worse`", (5, 0)),
        (OPEN, "no finished run of `worse`", (0, 0))]
    assert [(r.claim, r.text, r.effect, r.ci, r.p_value, r.seeds_needed) for r in results[:1]] == [
        (Claim("worse", kind="worse"), "`worse` is worse than `base`", None, None, None, None)]


def test_one_seed_against_a_reference_is_not_established():
    (result,) = evaluate(claims({"variant": "worse", "near": 2.6, "within": 0.1}), {"worse": [2.6]}, "base")
    assert (result.status, result.seeds, result.reason) == (
        OPEN, (1, 0), "one seed: no spread to test against (run more seeds)")


def test_an_open_claim_needs_the_seeds_of_its_own_test():
    from statistics import fmean, stdev

    from gptlab.stats import format_p, seeds_needed

    two_seeds = {**LOSSES, "pair": [2.0, 2.1]}
    results = evaluate(parse_claims([
        {"variant": "noisy", "is": "better", "by_at_least": 0.01},
        {"variant": "noisy", "is": "same", "within": 0.2},
        {"variant": "noisy", "near": 2.1, "within": 0.01},
        {"variant": "pair", "near": 2.0, "within": 0.01},
    ], VARIANTS + ["pair"], error), two_seeds, "base")
    noisy, base, pair = two_seeds["noisy"], two_seeds["base"], two_seeds["pair"]
    d = fmean(noisy) - fmean(base)
    spread = fmean([stdev(noisy), stdev(base)])
    expected = [seeds_needed(-d - 0.01, spread, 4, 2), seeds_needed(0.2 - abs(d), spread, 4, 2),
                seeds_needed(0.01 - abs(fmean(noisy) - 2.1), stdev(noisy), 4, 1),
                seeds_needed(0.01 - abs(fmean(pair) - 2.0), stdev(pair), 4, 1)]
    assert [r.status for r in results] == [OPEN] * 4
    assert [r.seeds_needed for r in results] == expected and len(set(expected)) == 4
    assert [r.seeds for r in results] == [(5, 5), (5, 5), (5, 0), (2, 0)]
    for r in results:
        shown = r.seeds_needed if r.seeds_needed <= 1000 else "more than 1000"
        assert r.reason == (f"adjusted {format_p(r.p_value)}; about {shown} seeds per variant would settle it "
                            "at this effect")


def test_a_claim_on_its_margin_or_beyond_a_thousand_seeds_says_so():
    from statistics import fmean, stdev

    from gptlab.stats import format_p, seeds_needed

    losses = {"worse": [3.0, 3.5], "base": [2.0, 2.5]}  # exactly 1 apart
    (on,) = evaluate(claims({"variant": "worse", "is": "same", "within": 1.0}), losses, "base")
    assert on.status == OPEN and on.seeds_needed is None
    assert on.reason == f"adjusted {format_p(on.p_value)}; no number of seeds settles it: the effect sits on the margin"
    z_ratio = 7.9795  # 2 * (z * spread / gap)^2 just under 1000 at one claim
    spread = fmean([stdev(losses["worse"]), stdev(losses["base"])])
    for gap, shown in ((spread / z_ratio, "1000"), (spread / 20, "more than 1000")):
        (r,) = evaluate(claims({"variant": "worse", "is": "same", "within": 1.0 + gap}), losses, "base")
        assert r.seeds_needed == seeds_needed(gap, spread, 1, 2)
        assert r.reason == (f"adjusted {format_p(r.p_value)}; about {shown} seeds per variant would settle it "
                            "at this effect")
    assert seeds_needed(spread / z_ratio, spread, 1, 2) == 1000
