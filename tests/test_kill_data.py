"""Exact edges of the data layer: block-size limits per split, the train fraction, unknown characters."""

from pathlib import Path

import pytest
import torch

from gptlab.data import CharTokenizer, Corpus
from gptlab.files import resolve_path
from gptlab.errors import GptlabError
from tests.conftest import DATA


def test_unknown_characters_are_named_together():
    with pytest.raises(GptlabError) as exc:
        CharTokenizer("abc").encode("zabyz")
    assert str(exc.value) == "text has characters outside the vocabulary: 'yz'"


def test_a_path_found_nowhere_is_returned_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("no/such/file.txt") == Path("no/such/file.txt")


def test_from_file_uses_the_train_fraction():
    corpus = Corpus.from_file(DATA, 0.5)
    assert len(corpus.train) == 1_115_394 // 2 and len(corpus.val) == 1_115_394 - 1_115_394 // 2


def test_each_split_needs_exactly_block_size_plus_one_tokens():
    tok = CharTokenizer("ab")
    corpus = Corpus(tok, train=torch.zeros(5, dtype=torch.long), val=torch.zeros(50, dtype=torch.long))
    corpus.check_block_size(4)  # 5 tokens = one window of 4 inputs + 1 target
    with pytest.raises(GptlabError) as exc:
        corpus.check_block_size(5)
    assert str(exc.value) == (
        "model.block_size = 5 is too long: the train split has 5 characters and needs at least block_size + 1")
