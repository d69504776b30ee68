"""Claims: parsed with one-line errors, and each status computed from the numbers (holds, contradicted, not
established), with the Holm adjustment over a grid's claims and a seed count for what is not settled."""

import pytest

from gptlab.claims import CONTRADICTED, HOLDS, OPEN, Claim, counts, evaluate, parse_claims
from gptlab.errors import GptlabError

VARIANTS = ["base", "worse", "better", "same", "noisy"]
LOSSES = {
    "base": [2.00, 2.01, 2.02, 2.01, 2.00],
    "worse": [2.60, 2.61, 2.59, 2.60, 2.62],
    "better": [1.80, 1.81, 1.79, 1.80, 1.82],
    "same": [2.005, 2.015, 2.010, 2.012, 2.003],
    "noisy": [1.9, 2.2, 2.0, 2.1, 2.05],
}


def error(key_path, message):
    return GptlabError(f"grid.yaml: {key_path}: {message}")


def claims(*raw):
    return parse_claims(list(raw), VARIANTS, error)


def status(*raw, losses=LOSSES):
    return [r.status for r in evaluate(claims(*raw), losses, "base")]


def test_directional_claims_hold_or_are_contradicted():
    assert status({"variant": "worse", "is": "worse"}, {"variant": "better", "is": "better"}) == [HOLDS, HOLDS]
    assert status({"variant": "worse", "is": "better"}) == [CONTRADICTED]
    assert status({"variant": "better", "is": "worse"}) == [CONTRADICTED]


def test_a_margin_must_be_cleared():
    assert status({"variant": "worse", "is": "worse", "by_at_least": 0.5}) == [HOLDS]  # +0.6
    assert status({"variant": "worse", "is": "worse", "by_at_least": 0.7}) == [CONTRADICTED]  # surely < 0.7
    assert status({"variant": "worse", "is": "worse", "by_at_least": 0.6}) == [OPEN]  # right on the margin


def test_same_is_an_equivalence_test():
    assert status({"variant": "same", "is": "same", "within": 0.02}) == [HOLDS]
    assert status({"variant": "worse", "is": "same", "within": 0.02}) == [CONTRADICTED]
    assert status({"variant": "noisy", "is": "same", "within": 0.02}) == [OPEN]  # too noisy to tell


def test_near_a_reference_value():
    assert status({"variant": "worse", "near": 2.60, "within": 0.05}) == [HOLDS]
    assert status({"variant": "worse", "near": 2.49, "within": 0.05}) == [CONTRADICTED]
    assert status({"variant": "noisy", "near": 2.05, "within": 0.05}) == [OPEN]


def test_against_another_variant_than_the_baseline():
    assert status({"variant": "better", "is": "better", "than": "worse", "by_at_least": 0.5}) == [HOLDS]


def test_too_few_seeds_or_no_runs_are_not_established_with_the_reason():
    losses = {**LOSSES, "worse": [2.6], "better": []}
    results = evaluate(claims({"variant": "worse", "is": "worse"}, {"variant": "better", "is": "better"}),
                       losses, "base")
    assert [r.status for r in results] == [OPEN, OPEN]
    assert results[0].reason.startswith("one seed") and results[1].reason == "no finished run of `better`"
    assert results[0].effect is None and results[0].p_value is None


def test_open_claims_say_how_many_seeds_would_settle_them():
    (result,) = evaluate(claims({"variant": "noisy", "is": "better"}), LOSSES, "base")
    assert result.status == OPEN and result.seeds_needed is not None and result.seeds_needed > 5
    assert f"about {result.seeds_needed} seeds per variant" in result.reason


def test_holm_adjusts_over_the_grids_claims():
    single = evaluate(claims({"variant": "noisy", "is": "worse"}), LOSSES, "base")[0]
    many = evaluate(claims({"variant": "noisy", "is": "worse"}, {"variant": "worse", "is": "worse"},
                           {"variant": "better", "is": "better"}), LOSSES, "base")[0]
    assert many.p_value >= single.p_value


def test_effect_and_confidence_interval_are_reported():
    (result,) = evaluate(claims({"variant": "worse", "is": "worse"}), LOSSES, "base")
    assert result.effect == pytest.approx(0.596) and result.ci[0] < 0.596 < result.ci[1]
    assert result.seeds == (5, 5) and result.text == "`worse` is worse than `base`"
    assert counts([result]) == {HOLDS: 1, CONTRADICTED: 0, OPEN: 0}


@pytest.mark.parametrize("raw, message", [
    ("nope", "claims: 'nope' is not allowed; expected a list of claims"),
    (["x"], "claims[0]: 'x' is not allowed; expected a mapping"),
    ([{"variant": "ghost", "is": "worse"}], "claims[0].variant: 'ghost' matches no variant"),
    ([{"variant": "worse", "is": "bigger"}], "claims[0].is: 'bigger' is not allowed; choose one of: worse, better, same"),
    ([{"variant": "worse", "is": "same"}], "an `is: same` claim needs `within: MARGIN`"),
    ([{"variant": "worse", "near": 2.5}], "a `near` claim needs `within: MARGIN`"),
    ([{"variant": "worse", "near": 2.5, "within": 0.1, "is": "worse"}], "a `near` claim takes `within`"),
    ([{"variant": "worse", "is": "worse", "by_at_least": -1}], "by_at_least: -1 is not allowed; expected a number >= 0"),
    ([{"variant": "worse", "is": "worse", "within": 0.1}], "claims[0].within: goes with `is: same` or `near`"),
    ([{"variant": "worse", "is": "worse", "than": "worse"}], "compares 'worse' with itself"),
    ([{"variant": "worse", "is": "worse", "typo": 1}], "claims[0].typo: unknown claim key"),
])
def test_bad_claims_are_one_line_errors(raw, message):
    with pytest.raises(GptlabError) as exc:
        parse_claims(raw, VARIANTS, error)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_claims_round_trip_through_their_dict():
    parsed = claims({"variant": "worse", "is": "worse", "by_at_least": 0.5, "note": "why"},
                    {"variant": "same", "near": 2.0, "within": 0.02})
    assert parse_claims([c.to_dict() for c in parsed], VARIANTS, error) == parsed
    assert parsed[0] == Claim("worse", kind="worse", by_at_least=0.5, note="why")
