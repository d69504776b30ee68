"""Registries map a component name to its builder, so a config (or YAML grid) picks variants by name.

Adding a variant is one decorated function or class: ``@NORM.register("mynorm", "what it shows")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gptlab.errors import choice_error


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    insight: str


class Registry:
    """Name -> builder, with a one-line insight per entry, for one axis of the design."""

    def __init__(self, field: str, insight: str) -> None:
        self.field = field
        self.insight = insight
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, insight: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.field}: {name!r} is registered twice")
            self._entries[name] = Entry(name, builder, insight)
            return builder

        return decorator

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, name: str | bool) -> Entry:
        """The entry for ``name``; booleans (``residual: true``) are looked up as ``"true"``/``"false"``."""
        if isinstance(name, bool):
            name = str(name).lower()
        if name not in self._entries:
            raise choice_error(self.field, name, self.names())
        return self._entries[name]

    def build(self, name: str | bool, *args: Any, **kwargs: Any) -> Any:
        return self.get(name).builder(*args, **kwargs)
