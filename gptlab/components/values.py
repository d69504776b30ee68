"""Values carry the content each token hands out when attended to.

``projected`` learns a value map (the lecture); ``identity`` makes each head average its raw slice of x.
Replaces ``v = self.value(x)`` in ``gptlab/gpt.py`` (``CausalSelfAttention.forward``).
"""

from __future__ import annotations

from torch import nn

from gptlab.config import ModelConfig
from gptlab.registry import ModuleBuilder, Registry

VALUES: Registry[ModuleBuilder] = Registry(
    "model.values", "values carry the content: what a token passes on once attended to")


@VALUES.register("projected", "a learned linear map gives every head its own value vectors (the lecture)")
def projected(cfg: ModelConfig) -> nn.Module:
    return nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)


@VALUES.register("identity", "no value weights: each head aggregates its raw slice of x")
def identity(cfg: ModelConfig) -> nn.Module:
    return nn.Identity()
