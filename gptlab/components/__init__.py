"""One registry per insight of the lecture; importing this package registers every variant.

The order of the imports below is the order ``gptlab list`` shows the registries in.
"""

from typing import Any

from gptlab.components.values import VALUES
from gptlab.components.qk import QK
from gptlab.components.mask import MASK
from gptlab.components.norm import NORM
from gptlab.components.residual import RESIDUAL
from gptlab.components.projection import PROJECTIONS
from gptlab.registry import Registry

REGISTRIES: dict[str, Registry[Any]] = {r.field.removeprefix("model."): r for r in (VALUES, QK, MASK, NORM, RESIDUAL, PROJECTIONS)}

__all__ = ["REGISTRIES", "MASK", "NORM", "PROJECTIONS", "QK", "RESIDUAL", "VALUES"]
