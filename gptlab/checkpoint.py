"""Checkpoints: config + vocabulary + weights, loaded with ``weights_only=True`` (no pickled code runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from gptlab import __version__
from gptlab.config import RunConfig
from gptlab.data import CharTokenizer
from gptlab.errors import GptlabError
from gptlab.model import LanguageModel, build_model

FORMAT = "gptlab-checkpoint-1"


def save(path: str | Path, model: LanguageModel, cfg: RunConfig, tokenizer: CharTokenizer) -> None:
    payload = {
        "format": FORMAT,
        "gptlab_version": __version__,
        "config": cfg.to_dict(),
        "vocab": tokenizer.chars,
        "model": model.state_dict(),
    }
    tmp = Path(path).with_suffix(".tmp")  # pragma: no mutate (".TMP": the name lives until the rename)
    torch.save(payload, tmp)
    tmp.replace(path)


def load(path: str | Path) -> tuple[LanguageModel, RunConfig, CharTokenizer]:
    p = Path(path)
    if not p.is_file():
        raise GptlabError(f"checkpoint '{path}': no such file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise GptlabError(f"checkpoint '{path}': not a readable gptlab checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise GptlabError(f"checkpoint '{path}': not a gptlab checkpoint (expected format {FORMAT})")
    cfg = RunConfig.from_dict(payload["config"])
    model = build_model(cfg.model)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError:
        raise GptlabError(f"checkpoint '{path}': weights do not match its config") from None
    model.eval()
    return model, cfg, CharTokenizer(payload["vocab"])
