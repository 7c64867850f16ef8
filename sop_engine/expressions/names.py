"""Which variables a template reads, found in its tree: never evaluates (checking a document runs nothing)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .errors import ExpressionError, first_line, shown
from .marks import CACHED_SOURCE, is_template


def _find_names(source: str, bare: bool) -> frozenset[str]:
    from jinja2 import TemplateError, meta  # Jinja2 loads with the first template read

    from .compiler import parse
    from .sandbox import BUILTINS

    text = "{{ " + source + " }}" if bare else source
    try:
        found = meta.find_undeclared_variables(parse(text)[0])
    except (TemplateError, RecursionError) as exc:
        raise ExpressionError(f"template {shown(source)} does not parse: {first_line(exc)}") from None
    return frozenset(found - BUILTINS)


_names_cached = lru_cache(maxsize=2048)(_find_names)


def _names(source: str, bare: bool) -> frozenset[str]:
    return _names_cached(source, bare) if len(source) <= CACHED_SOURCE else _find_names(source, bare)


def names_in(value: Any) -> set[str]:
    """Every variable a value's templates read, looking into nested lists and dicts. Never evaluates."""
    if isinstance(value, str):
        return set(_names(value, False)) if is_template(value) else set()
    if isinstance(value, dict):
        return set().union(*(names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(names_in(v) for v in value)) if value else set()
    return set()


def names_in_condition(condition: Any) -> set[str]:
    if isinstance(condition, str):
        return names_in(condition) if is_template(condition) else set(_names(condition, True))
    return set()
