"""Train a grid's seeds as one batched model: the runs of a variant that differ only in ``train.seed`` are
stacked (``torch.func.stack_module_state``) and stepped together, one launch sequence for all of them
(``vmap`` over ``functional_call``), so the model code stays exactly as a learner reads it.

Each member keeps what it has as a single run: its initialisation (built under its own seed), its stream of
batches, its dropout masks (``randomness="different"``), gradient clipping by its own norm, its divergence,
and its own record. With dropout 0 its loss curve equals the single run's to float tolerance
(``tests/test_group.py``). Attention runs the explicit code path: vmap has no batching rule for the fused
kernel (``scaled_dot_product_attention`` would fall back to a loop over members); the two paths are tested
equal.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch
from torch.func import functional_call, stack_module_state, vmap

from gptlab.config import ModelConfig, RunConfig, validate
from gptlab.data import Corpus
from gptlab.device import configure, cpu_threads, resolve_device, threads_for
from gptlab.flops import flops_per_token
from gptlab.learner import is_model_file
from gptlab.model import LanguageModel, build_model
from gptlab.train import Progress, TrainResult, fit, param_groups


def solo_reason(cfg: RunConfig) -> str | None:
    """Why a run of ``cfg`` cannot train in a group (None: it can)."""
    if cfg.train.compile:
        return "train.compile: a compiled model trains alone"
    if is_model_file(cfg.model.arch):
        return "model.arch: a learner's own model trains alone"
    return None


class StackedModels:
    """``count`` models of one config, their parameters stacked along a new first dimension."""

    def __init__(self, models: list[LanguageModel], cfg: ModelConfig) -> None:
        self.count = len(models)
        with torch.device("meta"):
            self.template = build_model(dataclasses.replace(cfg, fused=False))  # pragma: no mutate (None is falsy too)
        params, buffers = stack_module_state(models)
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        self.frozen: dict[int, dict[str, torch.Tensor]] = {}

        def loss(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                 y: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (x, y))[1]

        self.loss = loss

    def train(self, mode: bool) -> None:
        self.template.train(mode)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shared = None if x.dim() == 2 else 0
        batched: Callable[..., torch.Tensor] = vmap(self.loss, in_dims=(0, 0, shared, shared),
                                                    randomness="different")
        return batched(self.params, self.buffers, x, y)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return param_groups(list(self.params.values()), lambda p: p.dim() >= 3, weight_decay)  # type: ignore[arg-type]

    def clip(self, max_norm: float) -> None:
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (count,)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_, member by member
        for g in grads:
            scale = coef.view(-1, *[1] * (g.dim() - 1))
            g.mul_(scale.to(g.dtype))  # pragma: no mutate (both fp32: parameters stay fp32 under autocast)

    def freeze(self, member: int) -> None:
        self.frozen[member] = {name: p[member].detach().clone() for name, p in self.params.items()}

    def after_step(self) -> None:
        with torch.no_grad():
            for member, saved in self.frozen.items():
                for name, value in saved.items():
                    self.params[name][member] = value

    def models(self) -> list[LanguageModel]:
        """Each member as a model of its own (a copy of its slice of the stacked weights)."""
        device = next(iter(self.params.values())).device
        out = []
        for i in range(self.count):
            model = copy.deepcopy(self.template).to_empty(device=device)
            state = {name: t[i].detach() for name, t in {**self.params, **self.buffers}.items()}
            model.load_state_dict(state)
            out.append(model)
        return out


def train_group(cfgs: list[RunConfig], corpus: Corpus,
                on_progress: Callable[[int, Progress], None] | None = None) -> list[TrainResult]:
    """Train the runs ``cfgs`` (one config but for ``train.seed``) as one stacked model; one result each."""
    cfgs = [validate(copy.deepcopy(cfg)) for cfg in cfgs]
    for cfg in cfgs:
        cfg.model.vocab_size = corpus.tokenizer.vocab_size
    cfg = cfgs[0]
    corpus.check_block_size(cfg.model.block_size)
    device = resolve_device(cfg.train.device)
    configure(device)
    models: list[LanguageModel] = []
    for member in cfgs:
        torch.manual_seed(member.train.seed)
        model = build_model(member.model)
        models.append(model.to(device))  # pragma: no mutate (.to(None) is a no-op: CPU-only here)
    members = StackedModels(models, cfg.model)
    step_flops = flops_per_token(cfg.model, models[0].num_params()) * cfg.train.batch_size * cfg.model.block_size
    with cpu_threads(threads_for(cfg.train.threads, step_flops * len(cfgs))):
        results = fit(members, cfg, [c.train.seed for c in cfgs], corpus, device, on_progress)
    group_rate = sum(r.tokens_per_sec for r in results)
    for result in results:
        result.extra["group"] = {"size": len(cfgs), "attention": "explicit" if cfg.model.fused else "as configured",
                                 "group_tokens_per_sec": group_rate}
    return results
