"""The training loop: AdamW on random windows, evaluated on fixed windows, with divergence detection.

One loop trains ``Members``: one model (``OneModel``), or the seeds of one variant stacked into one batched
model (``gptlab.group.StackedModels``). Each member keeps what a single run has: its own batches, gradient
clipping by its own norm, its own divergence (a member that turns NaN/inf stops updating; the others go on).
Returns one ``TrainResult`` per member (loss curve, final/best loss, speed); the caller shows progress.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch import nn

from gptlab.config import RunConfig, lr_at, validate
from gptlab.data import Batches, Corpus, fixed_windows
from gptlab.device import autocast, configure, cpu_threads, grad_scaler, resolve_device, threads_for
from gptlab.flops import flops_per_token
from gptlab.model import LanguageModel, build_model


@dataclass
class Progress:
    """What a progress display is told after each step."""

    step: int
    max_iters: int
    train_loss: float | None = None
    val_loss: float | None = None


@dataclass
class TrainResult:
    model: LanguageModel
    history: list[dict[str, float]] = field(default_factory=list)
    final_val_loss: float = math.nan
    final_train_loss: float = math.nan
    best_val_loss: float = math.nan
    diverged_at: int | None = None
    wall_time: float = 0.0
    tokens_per_sec: float = 0.0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)  # how it was run, where that differs from a single run


class Members(Protocol):
    """``count`` models trained in one loop; ``losses`` gives one loss per member."""

    count: int

    def train(self, mode: bool) -> None: ...

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(count,) losses; ``x``, ``y`` are (count, B, T), one batch per member, or (B, T) for all."""
        ...

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]: ...

    def clip(self, max_norm: float) -> None:
        """Scale each member's gradients to a norm of at most ``max_norm``, by that member's own norm."""
        ...

    def freeze(self, member: int) -> None:
        """Stop updating ``member`` (it diverged)."""
        ...

    def after_step(self) -> None: ...

    def models(self) -> list[LanguageModel]: ...


def param_groups(params: list[nn.Parameter], matrix: Callable[[nn.Parameter], bool],
                 weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's groups: weight decay on matrices only (not biases, norms' gains)."""
    return [{"params": [p for p in params if matrix(p)], "weight_decay": weight_decay},
            {"params": [p for p in params if not matrix(p)], "weight_decay": 0.0}]


def flattened(group: dict[str, Any]) -> dict[str, Any]:
    """The group's parameters moved into one flat buffer (each keeps its shape, as a view of it), their gradients
    into another that backward adds into, so AdamW and zeroing step one tensor, not one per parameter: at the
    lecture's size AdamW's step over its 26 tensors took 554 us, over 2 flat ones 212 (benchmarks/step.md). The
    same update, element by element. A group of mixed dtypes or devices is left as it is."""
    params: list[torch.Tensor] = group["params"]
    if len({(p.dtype, p.device) for p in params}) != 1:
        return group
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        p.data = flat.data[offset : offset + p.numel()].view_as(p)
        p.grad = flat.grad[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return {**group, "params": [flat]}


class OneModel:
    """A single model, as a stack of one."""

    count = 1

    def __init__(self, model: LanguageModel, compile_model: bool) -> None:
        self.model = model
        self.step_model = torch.compile(model) if compile_model else model

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model = self.step_model if self.model.training else self.model
        x = x[0] if x.dim() == 3 else x
        y = y[0] if y.dim() == 3 else y  # pragma: no mutate (a (1, B, T) target flattens to the same B*T targets)
        _, loss = model(x, y)
        assert loss is not None
        return loss.unsqueeze(0)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return param_groups(list(self.model.parameters()), lambda p: p.dim() >= 2, weight_decay)

    def clip(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def freeze(self, member: int) -> None:
        pass  # a single run stops when it diverges

    def after_step(self) -> None:
        pass

    def models(self) -> list[LanguageModel]:
        return [self.model]


# Tokens per eval batch: on CPU 4k keeps activations in cache (35-40% faster per eval than 65k, measured in
# benchmarks/); a GPU wants big batches. A stack of members shares it.
EVAL_CHUNK_TOKENS = {"cpu": 1 << 12, "cuda": 1 << 16}


class Evaluator:
    """Mean loss of each member over fixed windows of each split, in batches of about ``EVAL_CHUNK_TOKENS``."""

    def __init__(self, corpus: Corpus, cfg: RunConfig, device: torch.device, members: int) -> None:
        T = cfg.model.block_size
        self.splits = {
            split: fixed_windows(getattr(corpus, split), T, cfg.train.eval_windows) for split in ("train", "val")
        }
        self.chunk = max(1, EVAL_CHUNK_TOKENS.get(device.type, EVAL_CHUNK_TOKENS["cuda"]) // (T * members))
        self.device = device

    @torch.no_grad()
    def __call__(self, members: Members) -> dict[str, list[float]]:
        members.train(False)
        losses = {}
        for split, (x, y) in self.splits.items():
            total = torch.zeros(members.count, device=self.device)
            for start in range(0, len(x), self.chunk):
                xb = x[start : start + self.chunk].to(self.device)
                yb = y[start : start + self.chunk].to(self.device)
                with autocast(self.device):
                    total += members.losses(xb, yb).float() * len(xb)
            losses[split] = [value / len(x) for value in total.tolist()]
        members.train(True)
        return losses


def train(cfg: RunConfig, corpus: Corpus, on_progress: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train one model of ``cfg`` on ``corpus``."""
    cfg = validate(cfg)
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    corpus.check_block_size(cfg.model.block_size)
    device = resolve_device(cfg.train.device)
    configure(device)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device)  # pragma: no mutate (.to(None) is a no-op: CPU-only here)
    step_flops = flops_per_token(cfg.model, model.num_params()) * cfg.train.batch_size * cfg.model.block_size
    with cpu_threads(threads_for(cfg.train.threads, step_flops)):
        (result,) = fit(OneModel(model, cfg.train.compile), cfg, [cfg.train.seed], corpus, device,
                        None if on_progress is None else lambda member, p: on_progress(p))
    return result


def fit(
    members: Members, cfg: RunConfig, seeds: list[int], corpus: Corpus, device: torch.device,
    on_progress: Callable[[int, Progress], None] | None,
) -> list[TrainResult]:
    """The loop proper: ``members`` built and placed on ``device``, one seed each, the rest of ``cfg`` shared."""
    t, T = cfg.train, cfg.model.block_size
    train_data = corpus.train
    batches = [Batches(train_data, T, t.batch_size, seed, device=device,
                       steps=t.max_iters)  # pragma: no mutate (only a GPU draws its batches up front)
               for seed in seeds]
    optimizer = torch.optim.AdamW([flattened(g) for g in members.param_groups(t.weight_decay)], betas=(t.beta1, t.beta2),
                                  lr=t.lr, fused=True,  # pragma: no mutate (lr: set by the schedule each step; fused: same update)
                                  )
    scaler = grad_scaler(device)
    evaluate = Evaluator(corpus, cfg, device, members.count)
    histories: list[list[dict[str, float]]] = [[] for _ in seeds]
    diverged: list[int | None] = [None] * len(seeds)

    def stop(member: int, step: int) -> None:
        diverged[member] = step
        members.freeze(member)

    # On CPU a loss value costs nothing; on CUDA reading it would stall the pipeline every step (the evaluations
    # catch NaN there).
    read_loss = device.type == "cpu"
    start = time.perf_counter()
    eval_time = 0.0
    members.train(True)  # pragma: no mutate (the step-0 evaluation leaves the members training anyway)
    for step in range(t.max_iters + 1):  # pragma: no mutate (+ 2: the loop breaks at step == max_iters)
        if step % t.eval_interval == 0 or step == t.max_iters:
            eval_start = time.perf_counter()
            losses = evaluate(members)
            eval_time += time.perf_counter() - eval_start
            for i, history in enumerate(histories):
                if diverged[i] is not None:
                    continue
                row = {"step": step, "train_loss": losses["train"][i], "val_loss": losses["val"][i],
                       "lr": lr_at(t, step), "elapsed": eval_start - start}
                history.append(row)
                if on_progress:
                    on_progress(i, Progress(step, t.max_iters, row["train_loss"], row["val_loss"]))
                if not math.isfinite(row["val_loss"]):
                    stop(i, step)
        if step == t.max_iters or all(d is not None for d in diverged):
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(t, step)
        pairs = [b.batch(step) for b in batches]  # pragma: no mutate (a CPU draws in order; step indexes a GPU's)
        x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        with autocast(device):
            loss = members.losses(x, y)
        optimizer.zero_grad(set_to_none=False)  # pragma: no mutate (None is falsy: in place, as the views need)
        scaler.scale(loss.sum()).backward()
        if t.grad_clip:
            scaler.unscale_(optimizer)  # pragma: no mutate (a no-op but on CUDA in fp16)
            members.clip(t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        members.after_step()
        values: list[float | None] = loss.tolist() if read_loss else [None] * len(seeds)  # pragma: no mutate (else: CUDA)
        for i, value in enumerate(values):
            if diverged[i] is not None:
                continue
            if value is not None and not math.isfinite(value):
                stop(i, step)
            elif on_progress:
                on_progress(i, Progress(step + 1, t.max_iters, train_loss=value))

    wall_time = time.perf_counter() - start
    results = []
    for model, history, diverged_at in zip(members.models(), histories, diverged):
        model.eval()
        result = TrainResult(model=model, history=history, diverged_at=diverged_at, wall_time=wall_time,
                             device=str(device),  # pragma: no mutate (dropped, it defaults to "cpu": the same here)
                             )
        if diverged_at is None:
            result.final_val_loss = history[-1]["val_loss"]
            result.final_train_loss = history[-1]["train_loss"]
            result.best_val_loss = min(r["val_loss"] for r in history)
        steps_done = t.max_iters if diverged_at is None else diverged_at
        result.tokens_per_sec = steps_done * t.batch_size * T / max(1e-9, wall_time - eval_time)
        results.append(result)
    return results
