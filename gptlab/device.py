"""Where a run executes: CPU, CUDA or Apple's GPU (MPS), chosen with ``--device auto|cpu|cuda|mps``, with what
precision, and how many CPU threads it uses. ``auto`` takes CUDA when present, then MPS (a Mac with Apple
silicon), then the CPU.

On CUDA, matmuls run under autocast: bf16 on cards that compute it natively (compute capability 8.0 and
later: A100, H100, RTX 30xx on), fp16 with a gradient scaler on older ones (T4, V100), as nanoGPT does;
TF32 is allowed for what stays in fp32. The CPU trains in fp32, and so does MPS: nanoGPT's MacBook recipe
(``--device=mps``) runs it without autocast, where fp16 would need a gradient scaler and bf16 is not on every
Apple GPU. On MPS the fused attention kernel (``scaled_dot_product_attention``) is used as on CUDA, and seeds
train one by one (seed groups are a CUDA default: vmap's speed on MPS is unmeasured). No Mac was at hand to
measure any of it.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Iterator

import torch

from gptlab.errors import GptlabError

if TYPE_CHECKING:
    from gptlab.config import RunConfig


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA, then MPS, then the CPU; a backend named but absent is a one-line error."""
    available = {"cuda": torch.cuda.is_available(), "mps": mps_available()}
    if name == "auto":
        return torch.device(next((kind for kind, here in available.items() if here), "cpu"))
    if not available.get(name, True):
        allowed = ", ".join(["auto", "cpu"] + [kind for kind, here in available.items() if here])
        raise GptlabError(f"train.device = {name!r} is not available on this machine; allowed: {allowed}")
    return torch.device(name)


def available_bytes(device: torch.device) -> int:
    """Memory a run may use: free GPU memory, or the machine's available memory (Linux), else its total."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg: RunConfig) -> None:
    """Refuse, in one line, a run whose estimated memory exceeds what the device has, before building it."""
    from gptlab.flops import training_bytes

    device = resolve_device(cfg.train.device)
    needed, free = training_bytes(cfg), available_bytes(device)
    if needed > free:
        m = cfg.model
        raise GptlabError(
            f"this run needs about {needed / 2**30:,.1f} GiB to train (model.n_embd = {m.n_embd}, model.n_layer = "
            f"{m.n_layer}, batch {cfg.train.batch_size} x block {m.block_size}); {device.type} has "
            f"{free / 2**30:,.1f} GiB available: make the model or the batch smaller")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None on CPU (fp32), bf16 on CUDA cards from compute capability 8.0, else fp16."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (whose small gradients would underflow); a pass-through otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)


# A training step under this many FLOPs is too small to split across threads: hand-offs cost more than they save
# (lecture preset, 6.7e7 FLOPs/step: 1 thread wins; cpu preset, 4e9: 2 threads win; see benchmarks/README.md).
SMALL_STEP_FLOPS = 5e8


def threads_for(requested: int, step_flops: float, available: int | None = None) -> int:
    """``train.threads``, or for 0 (automatic): 1 for a small step, otherwise ``available`` (default: the current
    count)."""
    if requested:
        return requested
    return 1 if step_flops < SMALL_STEP_FLOPS else available or torch.get_num_threads()


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
