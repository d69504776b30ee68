"""Where a run executes: CPU or CUDA (bf16 autocast, TF32), chosen with ``--device auto|cpu|cuda``."""

from __future__ import annotations

import contextlib

import torch

from gptlab.errors import GptlabError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GptlabError("train.device = 'cuda' is not available on this machine; allowed: auto, cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure(device: torch.device, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
