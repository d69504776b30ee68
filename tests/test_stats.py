import math
import warnings

import pytest

from gptlab.stats import ALPHA, METHOD, compare, format_p, summarize


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


def test_clear_gap_is_significant_and_says_which_way():
    baseline = [2.00, 2.01, 2.02]
    worse = compare([2.30, 2.31, 2.32], baseline)
    assert worse.significant and worse.p_value < ALPHA
    assert worse.delta == pytest.approx(0.30)
    assert worse.verdict.startswith("worse than baseline by 0.3 (p<0.0001, ")
    assert worse.verdict.endswith("Welch t-test over 3 vs 3 seeds)")
    better = compare([1.70, 1.71, 1.72, 1.73], baseline)
    assert better.significant and better.delta < 0
    assert better.verdict.startswith("better than baseline by 0.295")
    assert "over 4 vs 3 seeds" in better.verdict


def test_gap_inside_the_noise_is_not_significant():
    c = compare([2.00, 2.10, 2.20], [2.02, 2.12, 2.22])
    assert not c.significant
    assert c.p_value > 0.5
    assert c.delta == pytest.approx(-0.02)
    assert c.verdict.startswith(f"not significant ({format_p(c.p_value)}")


def test_welch_p_value_matches_a_hand_computation():
    # means 2 and 4, variances 1 and 4 over 3 seeds each: t = -2 / sqrt(5/3) = -1.549, Welch df = 2.941,
    # two-sided p = 0.2209 (Student's pooled test would give df = 4, p = 0.196)
    c = compare([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert c.p_value == pytest.approx(0.2209, abs=1e-4)
    assert compare([1.0, 2.0, 3.0], [0.0, 2.0, 4.0]).p_value == pytest.approx(1.0)  # equal means


def test_one_seed_is_not_established():
    for variant, baseline in (([2.5], [2.0, 2.1]), ([2.5, 2.6], [2.0])):
        c = compare(variant, baseline)
        assert c.verdict == "not established: one seed"
        assert c.p_value is None and not c.significant


def test_identical_results_have_no_p_value_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = compare([2.0, 2.0], [2.0, 2.0, 2.0])
    assert c.p_value is None and not c.significant and c.delta == 0
    assert c.verdict.startswith("no difference")


def test_a_p_value_equal_to_alpha_is_not_significant():
    variant, baseline = [2.0, 2.1, 2.3], [2.2, 2.3, 2.5]
    p = compare(variant, baseline).p_value
    assert not compare(variant, baseline, alpha=p).significant
    assert compare(variant, baseline, alpha=p * 1.001).significant


def test_the_method_is_named_with_its_threshold():
    assert "Welch's t-test" in METHOD and f"p < {ALPHA}" in METHOD


def test_tiny_p_values_are_bounded():
    assert format_p(1e-9) == "p<0.0001"
    assert format_p(1e-4) == "p=0.0001"
    assert format_p(0.0312) == "p=0.031"
