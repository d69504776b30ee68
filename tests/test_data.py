import hashlib

import pytest
import torch

from gptlab.data import Batches, CharTokenizer, Corpus, fixed_windows, read_text
from gptlab.errors import GptlabError
from tests.conftest import DATA


def test_shipped_corpus_is_tiny_shakespeare():
    raw = open(DATA, "rb").read()
    assert hashlib.md5(raw).hexdigest() == "6fb458f1232090904fb40fe944165e91"
    text = read_text(DATA)
    assert len(text) == 1_115_394
    assert CharTokenizer(text).vocab_size == 65


def test_tokenizer_round_trip_and_sorted_vocab():
    tok = CharTokenizer("hello world")
    assert tok.chars == " dehlorw"
    ids = tok.encode("hello world")
    assert ids[:5] == [3, 2, 4, 4, 5]
    assert tok.decode(ids) == "hello world"


def test_tokenizer_rejects_unknown_characters():
    with pytest.raises(GptlabError, match="outside the vocabulary"):
        CharTokenizer("abc").encode("abz")


def test_split_is_90_10(corpus):
    assert len(corpus.train) == int(0.9 * 1_115_394)
    assert len(corpus.train) + len(corpus.val) == 1_115_394
    assert corpus.tokenizer.decode(corpus.train[:14].tolist()) == "First Citizen:"


CPU = torch.device("cpu")


def test_batches_shapes_and_shift():
    data = torch.arange(1000)  # every window is unique: row = start, start + 1, ...
    x, y = Batches(data, 8, 32, seed=0, steps=1, device=CPU).batch(0)
    assert x.shape == y.shape == (32, 8)
    assert torch.equal(y, x + 1)
    assert torch.equal(x - x[:, :1], torch.arange(8).expand(32, 8))
    assert x.min() >= 0 and y.max() <= 999
    assert len(set(x[:, 0].tolist())) > 16  # random starts, not one window repeated


def test_batches_depend_on_the_seed_and_change_every_step(corpus):
    a, b, c = (Batches(corpus.train, 8, 4, seed, 2, CPU) for seed in (1, 1, 2))
    first = a.batch(0)[0]
    assert torch.equal(first, b.batch(0)[0]) and not torch.equal(first, c.batch(0)[0])
    assert not torch.equal(a.batch(1)[0], first)


def test_batches_drawn_up_front_are_the_ones_drawn_step_by_step(corpus):
    """The GPU path draws every step's indices at the start; they must be the CPU path's, step for step."""
    stepwise = Batches(corpus.train, 8, 4, 7, 3, CPU, up_front=False)
    up_front = Batches(corpus.train, 8, 4, 7, 3, CPU, up_front=True)
    assert stepwise.drawn is None and up_front.drawn is not None and up_front.drawn.shape == (3, 4)
    for step in range(3):
        assert all(torch.equal(a, b) for a, b in zip(stepwise.batch(step), up_front.batch(step)))
    assert Batches(corpus.train, 8, 4, 7, 3, torch.device("meta")).drawn is not None  # off the CPU: up front


def test_fixed_windows_are_deterministic_and_span_the_split(corpus):
    x, y = fixed_windows(corpus.val, 8, 100)
    x2, _ = fixed_windows(corpus.val, 8, 100)
    assert x.shape == (100, 8) and torch.equal(x, x2)
    assert torch.equal(x[0], corpus.val[:8])
    assert torch.equal(y[-1], corpus.val[-8:])
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_fixed_windows_never_exceed_available(corpus):
    data = torch.arange(20)
    x, _ = fixed_windows(data, 4, 1000)
    assert len(x) == 16


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(GptlabError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(GptlabError, match="empty"):
        read_text(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"abc\xff\xfe")
    with pytest.raises(GptlabError, match="not UTF-8"):
        read_text(binary)


def test_short_corpus_rejected_for_block_size():
    corpus = Corpus.from_text("abcdefghijklmnopqrstuvwxyz" * 2)
    corpus.check_block_size(4)
    with pytest.raises(GptlabError, match="block_size = 8 is too long: the val split"):
        corpus.check_block_size(8)


def test_default_corpus_is_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert len(read_text("data/tinyshakespeare.txt")) == 1_115_394
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text("local copy")
    assert read_text("data/tinyshakespeare.txt") == "local copy"  # the working directory wins
