"""FLOP accounting: model FLOPs per token (for MFU and time estimates) and this machine's matmul peak."""

from __future__ import annotations

import time

import torch

from gptlab.config import ModelConfig


def flops_per_token(m: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's 12 * L * T * C (PaLM, nanoGPT)."""
    if m.arch == "bigram":
        return 6.0 * n_params
    return 6.0 * n_params + 12.0 * m.n_layer * m.block_size * m.n_embd


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s on the CPU: the best of a few ``size``^2 matmuls."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
