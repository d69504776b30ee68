"""One training run outside a grid, as ``gptlab train`` does it: check everything first, train, then write the
checkpoint, the loss curve (history.csv) and a summary (result.json) into one folder."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from gptlab.config import RunConfig
from gptlab.data import Corpus
from gptlab.errors import GptlabError
from gptlab.files import write_atomic
from gptlab.train import Progress, TrainResult, train


@dataclass
class Session:
    cfg: RunConfig
    corpus: Corpus
    out_dir: Path
    params: int


def prepare(cfg: RunConfig, out_dir: Path) -> Session:
    """Read the corpus, check the window fits it, build the model on the meta device and check the output
    folder: every mistake is a one-line error before training starts."""
    from gptlab.device import check_fits
    from gptlab.model import check_model

    corpus = Corpus.from_file(cfg.data.path, cfg.data.train_fraction)
    corpus.check_block_size(cfg.model.block_size)
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    check_fits(cfg)
    params = check_model(cfg.model)
    check_writable(out_dir, "--out")
    return Session(cfg, corpus, out_dir, params)


def check_writable(folder: Path, option: str) -> None:
    """The folder exists or can be made, and files can be written in it: checked before any training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise GptlabError(f"{option} = '{folder}': a file (or inside one), not a folder") from None
    except PermissionError:
        raise GptlabError(f"{option} = '{folder}': no permission to create it") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GptlabError(f"{option} = '{folder}': no permission to write in it")


def history_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def train_and_save(session: Session, name: str, on_progress: Callable[[Progress], None] | None) -> TrainResult:
    """Train, then write ckpt.pt, history.csv and result.json into the session's folder."""
    from gptlab import checkpoint

    cfg = session.cfg
    result = train(cfg, session.corpus, on_progress)
    checkpoint.save(session.out_dir / "ckpt.pt", result.model, cfg, session.corpus.tokenizer)
    write_atomic(session.out_dir / "history.csv", history_csv(result.history))
    summary = {
        "preset": name, "final_val_loss": result.final_val_loss, "final_train_loss": result.final_train_loss,
        "best_val_loss": result.best_val_loss, "diverged_at": result.diverged_at,
        "wall_time_s": round(result.wall_time, 2), "tokens_per_sec": round(result.tokens_per_sec),
        "params": session.params, "device": result.device, "config": cfg.to_dict(),
    }
    write_atomic(session.out_dir / "result.json", json.dumps(summary, indent=2))
    return result


def sample(session: Session, result: TrainResult, tokens: int) -> Iterator[str]:
    from gptlab.sampling import sample_prompt, stream_text

    return stream_text(result.model, session.corpus.tokenizer, sample_prompt(session.corpus.tokenizer), tokens,
                       session.cfg.train.seed)
