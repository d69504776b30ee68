"""Characters in, windows out: a char tokenizer, a 90/10 split and batches of ``block_size`` windows.

Validation uses one fixed set of evenly spaced windows, so every variant and seed is scored on the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.errors import GptlabError


class CharTokenizer:
    """Vocabulary = the sorted set of characters of the corpus; one id per character."""

    def __init__(self, chars: str) -> None:
        self.chars = "".join(sorted(set(chars)))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise GptlabError(f"text has characters outside the vocabulary: {''.join(unknown)!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """A relative path is looked up in the working directory, then in the project (where ``data/`` ships)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p if (PROJECT_ROOT / p).exists() else p


def read_text(path: str | Path) -> str:
    """The file's UTF-8 text, or a one-line error for a missing, empty or non-UTF-8 file."""
    p = resolve_path(path)
    if not p.is_file():
        raise GptlabError(f"data.path = '{path}': no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise GptlabError(f"data.path = '{path}': not UTF-8 text (byte {err.start})") from None
    if not text:
        raise GptlabError(f"data.path = '{path}': the file is empty")
    return text


@dataclass
class Corpus:
    tokenizer: CharTokenizer
    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def from_text(cls, text: str, train_fraction: float = 0.9) -> Corpus:
        tokenizer = CharTokenizer(text)
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # pragma: no mutate (ints are int64 already)
        n = int(train_fraction * len(ids))
        return cls(tokenizer, ids[:n], ids[n:])

    @classmethod
    def from_file(cls, path: str | Path, train_fraction: float = 0.9) -> Corpus:
        return cls.from_text(read_text(path), train_fraction)

    def check_block_size(self, block_size: int) -> None:
        for split, data in (("train", self.train), ("val", self.val)):
            if len(data) < block_size + 1:
                raise GptlabError(
                    f"model.block_size = {block_size} is too long: the {split} split has {len(data)} "
                    f"characters and needs at least block_size + 1"
                )


def windows(data: torch.Tensor, block_size: int) -> torch.Tensor:
    """Every window of ``block_size + 1`` tokens, as a strided view (no copy)."""
    return data.unfold(0, block_size + 1, 1)


def random_batch(
    data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs ``x`` and targets ``y`` = ``x`` shifted by one."""
    all_windows = windows(data, block_size)
    ix = torch.randint(len(all_windows), (batch_size,), generator=generator)
    chunk = all_windows[ix]
    return chunk[:, :-1], chunk[:, 1:]


def fixed_windows(data: torch.Tensor, block_size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` evenly spaced windows (at most every window): the same for every model and seed."""
    all_windows = windows(data, block_size)
    ix = torch.linspace(0, len(all_windows) - 1, min(count, len(all_windows))).round().long()
    chunk = all_windows[ix]
    return chunk[:, :-1], chunk[:, 1:]
