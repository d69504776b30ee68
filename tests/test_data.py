import hashlib

import pytest
import torch

from gptlab.data import CharTokenizer, Corpus, fixed_windows, random_batch, read_text
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


def test_random_batch_shapes_and_shift():
    data = torch.arange(1000)  # every window is unique: row = start, start + 1, ...
    x, y = random_batch(data, 8, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 8)
    assert torch.equal(y, x + 1)
    assert torch.equal(x - x[:, :1], torch.arange(8).expand(32, 8))
    assert x.min() >= 0 and y.max() <= 999
    assert len(set(x[:, 0].tolist())) > 16  # random starts, not one window repeated


def test_random_batch_depends_on_generator_seed(corpus):
    a = random_batch(corpus.train, 8, 4, torch.Generator().manual_seed(1))[0]
    b = random_batch(corpus.train, 8, 4, torch.Generator().manual_seed(1))[0]
    c = random_batch(corpus.train, 8, 4, torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


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
