"""Where a run executes: CPU or CUDA (bf16 autocast, TF32), chosen with ``--device auto|cpu|cuda``,
and how many CPU threads it uses.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

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


# A training step under this many FLOPs is too small to split across threads: hand-offs cost more than they save
# (lecture preset, 6.7e7 FLOPs/step: 1 thread wins; cpu preset, 4e9: 2 threads win; see benchmarks/README.md).
SMALL_STEP_FLOPS = 5e8


def threads_for(requested: int, step_flops: float) -> int:
    """``train.threads``, or for 0 (automatic): 1 for a small step, otherwise the current count."""
    if requested:
        return requested
    return 1 if step_flops < SMALL_STEP_FLOPS else torch.get_num_threads()


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Use ``count`` intra-op threads inside the block, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def configure(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
