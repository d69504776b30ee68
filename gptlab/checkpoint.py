"""Checkpoints: config + vocabulary + weights, loaded with ``weights_only=True`` (no pickled code runs)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from gptlab import __version__
from gptlab.config import RunConfig, validate
from gptlab.data import CharTokenizer
from gptlab.device import available_bytes
from gptlab.errors import GptlabError
from gptlab.files import write_atomic
from gptlab.flops import param_estimate
from gptlab.model import LanguageModel, build_model, check_model

FORMAT = "gptlab-checkpoint-1"


def save(path: str | Path, model: LanguageModel, cfg: RunConfig, tokenizer: CharTokenizer) -> Path:
    payload = {
        "format": FORMAT,
        "gptlab_version": __version__,
        "config": cfg.to_dict(),
        "vocab": tokenizer.chars,
        "model": model.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(Path(path), buffer.getvalue())


def load(path: str | Path) -> tuple[LanguageModel, RunConfig, CharTokenizer]:
    p = Path(path)
    if not p.is_file():
        raise GptlabError(f"checkpoint '{path}': {'a folder, not a file' if p.is_dir() else 'no such file'}")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)  # pragma: no mutate (True is the default from torch 2.6; CPU-only here)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise GptlabError(f"checkpoint '{path}': not a readable gptlab checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise GptlabError(f"checkpoint '{path}': not a gptlab checkpoint (expected format {FORMAT})")
    missing = [part for part in ("config", "vocab", "model") if part not in payload]
    if missing:
        raise GptlabError(f"checkpoint '{path}': it has no {missing[0]!r} (a gptlab checkpoint holds config, vocab "
                          f"and model)")
    try:
        cfg = validate(RunConfig.from_dict(payload["config"]))
        vocab = payload["vocab"]
        if not isinstance(vocab, str) or len(vocab) != cfg.model.vocab_size:
            raise GptlabError(f"its vocabulary ({len(vocab) if isinstance(vocab, str) else type(vocab).__name__}) "
                              f"does not match model.vocab_size = {cfg.model.vocab_size}")
        if len(set(vocab)) != len(vocab):
            raise GptlabError(f"its vocabulary repeats characters ({len(set(vocab))} distinct of {len(vocab)})")
        weights, free = 4 * param_estimate(cfg.model), available_bytes(torch.device("cpu"))
        if weights > free:
            raise GptlabError(f"its model needs about {weights / 2**30:,.0f} GiB for its weights (model.n_embd = "
                              f"{cfg.model.n_embd}, model.n_layer = {cfg.model.n_layer}); this machine has "
                              f"{free / 2**30:,.0f} GiB available")
        check_model(cfg.model)
        model = build_model(cfg.model)
        model.load_state_dict(payload["model"])
    except GptlabError as err:
        raise GptlabError(f"checkpoint '{path}': {err}") from None
    except (KeyError, TypeError, AttributeError, ValueError, RuntimeError):
        raise GptlabError(f"checkpoint '{path}': its config, vocabulary or weights do not fit together") from None
    model.eval()
    return model, cfg, CharTokenizer(vocab)
