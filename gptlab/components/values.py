"""Values carry the content each token hands out when attended to.

``projected`` learns a value map per head; ``identity`` makes each head average its raw slice of x.
"""

from torch import nn

from gptlab.registry import Registry

VALUES = Registry("model.values", "values carry the content: what a token passes on once attended to")


@VALUES.register("projected", "a learned linear map gives every head its own value vectors (the lecture)")
def projected(n_embd: int) -> nn.Module:
    return nn.Linear(n_embd, n_embd, bias=False)


@VALUES.register("identity", "no value weights: each head aggregates its raw slice of x")
def identity(n_embd: int) -> nn.Module:
    return nn.Identity()
