"""Registries map a component name to its builder, so a config (or YAML grid) picks variants by name.

The builder contract: every builder is called with the model's config, ``builder(cfg) -> nn.Module``
(``ModuleBuilder``); a projection also gets the width it maps from, ``builder(cfg, n_in)``
(``ProjectionBuilder``). mypy checks each registered builder against its registry's contract, and
``gptlab.model.check_model`` builds every chosen variant before a run starts. What the built modules'
``forward`` takes, per registry:

- ``values``: ``(B, T, C) -> (B, T, C)``
- ``qk``: ``(B, T, C) -> (q, k)``, each ``(B, T, C)``
- ``mask``: ``(q, k, v) -> (..., T, hs)`` for heads of shape ``(..., T, hs)``; and ``weights(q, k) -> (..., T, T)``
- ``norm``: ``(B, T, C) -> (B, T, C)``
- ``residual``: ``(x, out) -> (B, T, C)``: the sublayer's input and its output
- ``projections``: ``(B, T, n_in) -> (B, T, C)``

Adding a variant is one decorated function or class, e.g. ``@NORM.register("mynorm", "what it shows")`` over
``def mynorm(cfg: ModelConfig) -> nn.Module``; the test suite then builds it, trains a step of it and checks
its causality (``tests/test_registered.py``), with no list of names to update.

This module does not import torch: ``gptlab list`` reads the declarations from the components' source
(``declared``) so that it answers at once; a test checks that reading against the imported registries.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Protocol, TypeVar

from gptlab.errors import GptlabError, choice_error, one_line

if TYPE_CHECKING:
    from torch import nn

    from gptlab.config import ModelConfig


class ModuleBuilder(Protocol):
    def __call__(self, cfg: ModelConfig) -> nn.Module: ...


class ProjectionBuilder(Protocol):
    def __call__(self, cfg: ModelConfig, n_in: int) -> nn.Module: ...


B = TypeVar("B", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[B]):
    name: str
    builder: B
    insight: str
    leaks_future: bool = False  # the variant lets a position read later tokens: its loss is not a real result
    mixes_batch: bool = False  # in training its output reads other sequences of the batch (BatchNorm's statistics)


class Registry(Generic[B]):
    """Name -> builder, with a one-line insight per entry, for one axis of the design (``model.<field>``)."""

    def __init__(self, field: str, insight: str) -> None:
        self.field = field
        self.insight = insight
        self._entries: dict[str, Entry[B]] = {}

    def register(self, name: str, insight: str, *, leaks_future: bool = False,
                 mixes_batch: bool = False) -> Callable[[B], B]:
        def decorator(builder: B) -> B:
            if name in self._entries:
                raise ValueError(f"{self.field}: {name!r} is registered twice")
            self._entries[name] = Entry(name, builder, insight, leaks_future, mixes_batch)
            return builder

        return decorator

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry[B]]:
        return list(self._entries.values())

    def get(self, name: str | bool) -> Entry[B]:
        """The entry for ``name``; booleans (``residual: true``) are looked up as ``"true"``/``"false"``."""
        if isinstance(name, bool):
            name = str(name).lower()
        if name not in self._entries:
            raise choice_error(self.field, name, self.names())
        return self._entries[name]

    def build(self, name: str | bool, cfg: ModelConfig, **extra: Any) -> Any:
        """Call the builder with the contract's arguments by name (``cfg=...``, and ``n_in=...`` for a
        projection), so a builder with other parameters fails here; any failure is one line naming the variant."""
        entry = self.get(name)
        try:
            return entry.builder(cfg=cfg, **extra)
        except GptlabError:
            raise
        except Exception as err:  # any failure of a user's builder becomes one line, not a traceback
            contract = f" (a builder takes {', '.join(['cfg', *extra])}: see gptlab/registry.py)" \
                if isinstance(err, TypeError) else ""
            raise GptlabError(f"{self.field} = {entry.name!r}: its builder failed: {one_line(err)}{contract}") from err


@dataclass(frozen=True)
class Declared:
    """A registry as its source declares it: field, insight and (name, insight) per entry, in order."""

    field: str
    insight: str
    entries: list[tuple[str, str]]


def declared(package: Path) -> list[Declared]:
    """The registries declared in ``package``'s modules, in the order ``package/__init__.py`` imports them.

    Reads the source without importing it: ``NAME = Registry("model.x", "insight")`` and
    ``NAME.register("name", "insight")`` (as a decorator or called on a class) with literal strings.
    """
    found: dict[str, Declared] = {}
    init = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))  # pragma: no mutate (UTF-8 is utf-8)
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gptlab.components."):
            module = package / f"{node.module.rpartition('.')[2]}.py"
            found.update(_declared_in(ast.parse(module.read_text(encoding="utf-8"))))  # pragma: no mutate (UTF-8 is utf-8)
    return list(found.values())


def _literal_strings(call: ast.Call) -> list[str]:
    return [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def _declared_in(tree: ast.Module) -> dict[str, Declared]:
    registries: dict[str, Declared] = {}
    for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):  # pragma: no mutate (the defaults: nodes without a place are no declarations)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
            func, target = node.value.func, node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(func, ast.Name) and func.id == "Registry" and isinstance(target, ast.Name):
                field, insight = _literal_strings(node.value)
                registries[target.id] = Declared(field, insight, [])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in registries:
                name, insight = _literal_strings(node)
                registries[owner.id].entries.append((name, insight))
    return registries
