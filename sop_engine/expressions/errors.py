"""The one error every template problem raises, and how its message shows the template."""

from __future__ import annotations


class ExpressionError(ValueError):
    """A template that does not parse, or that fails when rendered (a limit's message names the limit)."""


def first_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it nests too deeply"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def shown(source: str) -> str:
    return repr(source if len(source) <= 200 else source[:200] + "…")
