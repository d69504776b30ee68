"""FLOP accounting: model FLOPs per token (for MFU and time estimates) and this machine's matmul peak.

MFU = flops_per_token * tokens/s / peak: the share of the hardware's matmul speed that training turns into model math.
"""

from __future__ import annotations

import time

import torch

from gptlab.config import ModelConfig, RunConfig


def flops_per_token(m: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's 12 * L * T * C (PaLM, nanoGPT)."""
    if m.arch == "bigram":
        return 6.0 * n_params
    return 6.0 * n_params + 12.0 * m.n_layer * m.block_size * m.n_embd


def run_flops(cfg: RunConfig, n_params: int) -> tuple[float, float]:
    """A run's training FLOPs and its evaluations' (a forward pass, a third of a step's FLOPs per token, over
    ``eval_windows`` windows of each split at every evaluation)."""
    t, m = cfg.train, cfg.model
    per_token = flops_per_token(m, n_params)
    evaluations = t.max_iters // t.eval_interval + 1 + (t.max_iters % t.eval_interval > 0)
    return (per_token * t.max_iters * t.batch_size * m.block_size,
            per_token / 3 * evaluations * 2 * t.eval_windows * m.block_size)


def param_estimate(m: ModelConfig) -> int:
    """Parameters of the model, from its sizes alone (no model built): an upper bound for every variant."""
    C, L, V, T = m.n_embd, m.n_layer, m.vocab_size, m.block_size
    if m.arch == "bigram":
        return V * V
    per_block = 4 * C * C + 2 * max(1, m.ffn_mult) * C * C + 13 * C + m.ffn_mult * C
    return L * per_block + (V + T) * C + C * V + 3 * C + V


def training_bytes(cfg: RunConfig) -> int:
    """A rough upper bound of the memory one training run needs: fp32 weights, gradients and AdamW's two
    moments (16 bytes a parameter), and the activations kept for the backward pass (about 20 floats per token
    per layer and channel, plus each head's T x T attention weights)."""
    m, t = cfg.model, cfg.train
    tokens = t.batch_size * m.block_size
    activations = tokens * m.n_layer * (20 * m.n_embd + 2 * m.n_head * m.block_size) + tokens * 3 * m.vocab_size
    return 16 * param_estimate(m) + 4 * activations


def matmul_peak_flops(size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Measured matmul FLOP/s: the best of a few ``size``^2 matmuls, fp32 on the CPU, bf16 on CUDA."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def timed() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()
    return 2.0 * size**3 / min(timed() for _ in range(repeats))


def mfu(flops_token: float, tokens_per_sec: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the measured peak."""
    return flops_token * tokens_per_sec / peak_flops
