"""Small rules the numbers and messages rest on, each at its boundary: a t statistic without spread, the fewest
values a test takes, Holm over variants that cannot be tested, the fewest seeds to ask for, how error keys and
exceptions are printed, which windows score a model, and a sample's prompt."""

import math

import pytest
import torch

from gptlab.data import Batches, CharTokenizer, Corpus, fixed_windows, read_text
from gptlab.errors import GptlabError, did_you_mean, key_text, one_line, short
from gptlab.sampling import generate_text, sample_prompt, stream_text
from gptlab.stats import Comparison, Difference, compare_to_baseline, one_sample, seeds_needed, summarize, welch


def test_summary_of_nothing_says_so():
    with pytest.raises(ValueError) as exc:
        summarize([])
    assert str(exc.value) == "summarize needs at least one value"


def test_t_without_spread_is_zero_or_infinite():
    assert Difference(0.5, 0.0, 3).t_of(0.5) == 0.0
    assert Difference(0.5, 0.0, 3).t_of(0.0) == math.inf and Difference(-0.5, 0.0, 3).t_of(0.0) == -math.inf
    assert Difference(0.5, 1.0, 3).t_of(0.0) == 0.5 and Difference(1.5, 0.5, 3).t_of(1.0) == 1.0


def test_two_values_a_side_are_enough_for_a_test():
    assert welch([1.0, 2.0], [3.0, 4.0]) == Difference(-2.0, pytest.approx(0.5**0.5), 2.0)
    assert welch([1.0, 2.0, 3.0], [2.0]) is None and welch([1.0], [2.0, 3.0]) is None
    assert welch([1.0, 1.0, 1.0], [2.0, 2.0]) == Difference(-1.0, 0.0, 2.0)  # no spread: df is n - 1
    assert one_sample([1.0, 3.0], 1.0) == Difference(1.0, 1.0, 1.0) and one_sample([1.0], 1.0) is None


def test_at_least_two_seeds_are_asked_for():
    assert seeds_needed(1.0, 0.01, 1) == 2 and seeds_needed(1.0, 0.01, 1, samples=1) == 2
    assert seeds_needed(0.0, 1.0, 1) is None


def test_variants_without_spread_are_not_counted_by_holm():
    losses = {"base": [2.0, 2.0, 2.0], "flat": [2.5, 2.5, 2.5], "twin": [2.0, 2.0, 2.0], "a": [1.0, 1.2, 1.1],
              "one": [1.5]}
    out = compare_to_baseline(losses, "base")
    alone = compare_to_baseline({"base": losses["base"], "a": losses["a"]}, "base")
    assert out["a"] == alone["a"]  # Holm over the variants tested: not 'flat', 'twin' (no spread), 'one' (one seed)
    assert out["twin"] == Comparison(0.0, None, False, "identical")
    assert out["one"] == Comparison(pytest.approx(-0.5), None, False, "one seed")
    assert out["flat"] == Comparison(pytest.approx(0.5), None, False, "no spread")
    same = compare_to_baseline({"base": [2.0, 2.1, 2.2], "same": [2.0, 2.1, 2.2]}, "base")
    assert same == {"same": Comparison(0.0, 1.0, False, "n.s., p=1")}


# -- messages --------------------------------------------------------------------------------------------------


def test_keys_are_printed_as_written_up_to_40_characters():
    assert key_text("a" * 40) == "a" * 40
    assert key_text("a" * 41) == short("a" * 41) and short("a" * 41) != "a" * 41
    assert key_text(3) == "3" and key_text(None) == "None"


def test_a_near_miss_suggests_the_closest_choice():
    assert did_you_mean("layrnorm", ["rmsnorm", "layernorm", "batchnorm"]) == " (did you mean 'layernorm'?)"
    assert did_you_mean("xyz", ["layernorm"]) == ""


def test_an_exception_in_one_line():
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(ValueError()) == "ValueError" and one_line(KeyError("  ")) == "KeyError: '  '"


# -- data and samples ----------------------------------------------------------------------------------------


def test_a_folder_as_data_is_named(tmp_path):
    with pytest.raises(GptlabError) as exc:
        read_text(tmp_path)
    assert str(exc.value) == f"data.path = '{tmp_path}': a folder; give a text file"


def test_fixed_windows_are_evenly_spaced_from_the_first_to_the_last():
    data = torch.arange(20)
    x, y = fixed_windows(data, 4, 4)  # 16 windows of 5 tokens: starts 0, 5, 10, 15
    assert x[:, 0].tolist() == [0, 5, 10, 15] and torch.equal(y, x + 1)
    assert fixed_windows(data, 4, 100)[0][:, 0].tolist() == list(range(16))


def test_a_cpu_run_draws_its_batches_as_it_goes():
    data = torch.arange(100)
    assert Batches(data, 4, 2, 1, 10, torch.device("cpu")).drawn is None
    ahead = Batches(data, 4, 2, 1, 3, torch.device("cpu"), up_front=True)
    assert ahead.drawn is not None and ahead.drawn.shape == (3, 2)


def test_a_sample_starts_at_a_newline_or_else_the_first_character():
    assert sample_prompt(CharTokenizer("ab\nc")) == "\n" and sample_prompt(CharTokenizer("cab")) == "a"
    assert sample_prompt(CharTokenizer("a\tb\n")) == "\n"  # not the first character, a tab


def test_sample_lengths_are_checked_at_both_ends():
    from gptlab.model import Bigram
    from gptlab.config import ModelConfig

    corpus = Corpus.from_text("abcabcabc\n")
    model = Bigram(ModelConfig(arch="bigram", vocab_size=corpus.tokenizer.vocab_size))
    assert len(generate_text(model, corpus.tokenizer, "a", 1, seed=0)) == 2
    assert next(stream_text(model, corpus.tokenizer, "a", 100_000, seed=0)) == "a"  # checked, then the prompt
    for tokens in (0, 100_001):
        with pytest.raises(GptlabError) as exc:
            generate_text(model, corpus.tokenizer, "a", tokens, seed=0)
        assert str(exc.value) == f"tokens = {tokens} is not allowed; must be in 1..100,000"
