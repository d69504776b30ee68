"""User-facing errors: one clear line naming the field, the bad value and what is allowed."""

from __future__ import annotations

import difflib
import reprlib

_SHORT = reprlib.Repr()  # keyword arguments arrive only in Python 3.12
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 4, 4, 40, 40, 40


class GptlabError(Exception):
    """Bad input from a user (config, data, file); the CLI prints it as one line and exits 2."""


def short(value: object) -> str:
    """A bounded repr for messages: long strings, deep or huge (YAML-alias-expanded) values stay one short line."""
    return _SHORT.repr(value)


def key_text(key: object) -> str:
    """A mapping key for a key path: as written when it is a short string, else its bounded repr."""
    return key if isinstance(key, str) and len(key) <= 40 else short(key)


def did_you_mean(value: object, allowed: list[str]) -> str:
    """``" (did you mean 'layernorm'?)"`` for a near miss, else ``""``."""
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)  # pragma: no mutate (the best is close[0]; 0.6 is the default)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choice_error(field: str, value: object, allowed: list[str]) -> GptlabError:
    """The error for a value that is not one of a fixed set of choices."""
    return GptlabError(f"{field} = {short(value)} is not allowed{did_you_mean(value, allowed)}; "
                       f"choose one of: {', '.join(allowed)}")


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
