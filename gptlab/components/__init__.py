"""One registry per insight of the lecture; importing this package registers every variant."""

from gptlab.components.block import RESIDUAL
from gptlab.components.mask import MASK
from gptlab.components.norm import NORM
from gptlab.components.projection import PROJECTIONS
from gptlab.components.qk import QK
from gptlab.components.values import VALUES

REGISTRIES = {"values": VALUES, "qk": QK, "mask": MASK, "norm": NORM, "residual": RESIDUAL, "projections": PROJECTIONS}

__all__ = ["REGISTRIES", "MASK", "NORM", "PROJECTIONS", "QK", "RESIDUAL", "VALUES"]
