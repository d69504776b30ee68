"""Characters in, windows out: a char tokenizer, a 90/10 split and batches of ``block_size`` windows.

Validation uses one fixed set of evenly spaced windows, so every variant and seed is scored on the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gptlab.errors import GptlabError
from gptlab.files import resolve_path


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


def read_text(path: str | Path) -> str:
    """The file's UTF-8 text, or a one-line error for a missing, empty or non-UTF-8 file."""
    p = resolve_path(path)
    if p.is_dir():
        raise GptlabError(f"data.path = '{path}': a folder; give a text file")
    if not p.is_file():
        raise GptlabError(f"data.path = '{path}': no such file")
    try:
        text = p.read_text(encoding="utf-8")  # pragma: no mutate (UTF-8 is utf-8, and this locale's codec)
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


class Batches:
    """One run's training batches: at each step ``batch_size`` windows drawn by the run's own generator, seeded
    with its seed, as inputs ``x`` and targets ``y`` = ``x`` shifted by one.

    On a GPU the text lives on the device and the whole stream of indices is drawn up front (the same draws in
    the same order), so a step copies nothing from the host and never waits for it.
    """

    def __init__(self, data: torch.Tensor, block_size: int, batch_size: int, seed: int, steps: int,
                 device: torch.device, up_front: bool | None = None) -> None:
        self.windows = windows(data, block_size)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn: torch.Tensor | None = None
        if device.type != "cpu" if up_front is None else up_front:
            self.drawn = torch.stack([self.draw() for _ in range(max(1, steps))]).to(device)  # pragma: no mutate (CPU here; a draw more is never read)
            self.windows = windows(data.to(device), block_size)  # pragma: no mutate (.to(None): the CPU, here)

    def draw(self) -> torch.Tensor:
        return torch.randint(len(self.windows), (self.batch_size,), generator=self.generator)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step`` (steps are taken in order, from 0)."""
        ix = self.draw() if self.drawn is None else self.drawn[step]
        chunk = self.windows[ix]
        return chunk[:, :-1], chunk[:, 1:]


def fixed_windows(data: torch.Tensor, block_size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` evenly spaced windows (at most every window): the same for every model and seed."""
    all_windows = windows(data, block_size)
    # float32 positions, as every record so far was scored on; past 2**24 windows they may round past the end
    ix = torch.linspace(0, len(all_windows) - 1, min(count, len(all_windows))).round().long().clamp(max=len(all_windows) - 1)
    chunk = all_windows[ix]
    return chunk[:, :-1], chunk[:, 1:]
