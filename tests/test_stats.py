import math
import warnings

import pytest

from gptlab.stats import (ALPHA, METHOD, compare_to_baseline, format_p, holm, one_sample, seeds_needed, summarize,
                          welch)


def test_summary_of_known_values():
    s = summarize([2.0, 2.2, 2.4])
    assert (s.n, s.min, s.max) == (3, 2.0, 2.4)
    assert s.mean == pytest.approx(2.2)
    assert s.std == pytest.approx(0.2)  # sample std, ddof=1 (population std would be 0.163)


def test_summary_of_two_values_has_a_std():
    assert summarize([1.0, 2.0]).std == pytest.approx(math.sqrt(0.5))


def test_summary_of_one_value_has_no_std():
    s = summarize([1.5])
    assert (s.n, s.mean, s.min, s.max) == (1, 1.5, 1.5, 1.5)
    assert math.isnan(s.std)


def test_summary_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        summarize([])


def test_welch_p_value_matches_a_hand_computation():
    # means 2 and 4, variances 1 and 4 over 3 seeds each: t = -2 / sqrt(5/3) = -1.549, Welch df = 2.941,
    # two-sided p = 0.2209 (Student's pooled test would give df = 4, p = 0.196)
    diff = welch([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert diff.delta == pytest.approx(-2.0) and diff.se == pytest.approx(math.sqrt(5 / 3))
    assert diff.df == pytest.approx(2.941, abs=1e-3)
    assert diff.p_two_sided() == pytest.approx(0.2209, abs=1e-4)
    assert welch([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]).p_two_sided() == pytest.approx(1.0)  # equal means


def test_welch_confidence_interval_and_shifted_tests():
    diff = welch([2.30, 2.31, 2.32], [2.00, 2.01, 2.02])
    low, high = diff.ci()
    assert low < 0.30 < high and high - low == pytest.approx(2 * 2.776 * diff.se, rel=1e-2)  # t(0.975, 4)
    assert diff.p_above(0.2) < 0.001 and diff.p_above(0.4) > 0.999  # clearly above 0.2, clearly not above 0.4
    assert diff.p_two_sided(0.30) == pytest.approx(1.0)


def test_one_seed_gives_no_test():
    assert welch([2.5], [2.0, 2.1]) is None and welch([2.5, 2.6], [2.0]) is None
    assert one_sample([2.5], 2.49) is None


def test_one_sample_against_a_reference():
    diff = one_sample([2.47, 2.48, 2.49, 2.50], 2.49)
    assert diff.delta == pytest.approx(-0.005) and diff.df == 3.0
    assert diff.se == pytest.approx(math.sqrt(((0.015**2 + 0.005**2) * 2) / 3) / 2)


def test_holm_multiplies_by_rank_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == [1.0, 1.0]  # 2 x 0.8 capped at 1, and 0.9 never below a smaller p's
    assert holm([]) == []


def test_seeds_needed_grows_with_noise_and_shrinks_with_the_effect():
    # n = 2 (z_{1-0.025} + z_{0.8})^2 (s / d)^2 = 2 * 7.849 * 1 = 15.7 -> 16 for s = d
    assert seeds_needed(0.1, 0.1, tests=1) == 16
    assert seeds_needed(0.2, 0.1, tests=1) == 4
    assert seeds_needed(0.1, 0.1, tests=1, samples=1) == 8
    assert seeds_needed(0.1, 0.1, tests=3) > 16  # alpha / 3
    assert seeds_needed(0.0, 0.1, tests=1) is None


def test_compare_to_baseline_adjusts_over_the_variants():
    base = [2.00, 2.01, 2.02]
    out = compare_to_baseline({"base": base, "worse": [2.30, 2.31, 2.32], "better": [1.70, 1.71, 1.72, 1.73],
                               "same": [2.00, 2.10, 2.20], "single": [2.5], "none": []}, "base")
    assert set(out) == {"worse", "better", "same", "single"}
    assert out["worse"].significant and out["worse"].verdict.startswith("worse, p")
    assert out["worse"].delta == pytest.approx(0.30)
    assert out["better"].significant and out["better"].verdict.startswith("better, p")
    assert not out["same"].significant and out["same"].verdict.startswith("n.s., p=")
    assert out["single"].verdict == "one seed" and out["single"].p_value is None
    raw = welch([2.30, 2.31, 2.32], base).p_two_sided()
    assert out["worse"].p_value >= raw  # adjusted: three variants were tested


def test_a_p_value_at_alpha_is_not_significant():
    variant, base = [2.0, 2.1, 2.3], [2.2, 2.3, 2.5]
    p = welch(variant, base).p_two_sided()
    assert p > ALPHA and not compare_to_baseline({"b": base, "v": variant}, "b")["v"].significant


def test_identical_results_have_no_p_value_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare_to_baseline({"b": [2.0, 2.0, 2.0], "v": [2.0, 2.0]}, "b")["v"]
    assert out.p_value is None and not out.significant and out.delta == 0 and out.verdict == "identical"


def test_the_method_is_named_with_its_threshold():
    assert "Welch's t-test" in METHOD and "Holm" in METHOD and f"p < {ALPHA}" in METHOD


def test_tiny_p_values_are_bounded():
    assert format_p(1e-9) == "p<0.0001"
    assert format_p(1e-4) == "p=0.0001"
    assert format_p(0.0312) == "p=0.031"
