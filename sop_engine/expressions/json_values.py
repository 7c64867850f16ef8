"""A template's result as JSON data, bounded in size."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from .. import settings
from .errors import ExpressionError


def to_json_value(value: Any, max_chars: int | None = None) -> Any:
    """A template's result as JSON data: tuples become lists, text subclasses (Markup) plain str. Raises
    ExpressionError for anything else (a function, a generator, an undefined value), for NaN and infinity,
    for keys that are not text, and past `max_chars` (default template_max_output) characters of text, or values.
    Integers are kept whatever their size (JSON allows them; a store may not)."""
    limit = settings.current().template_max_output if max_chars is None else max_chars
    holder: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, holder, 0)]
    items = chars = 0
    while stack:
        item, parent, key = stack.pop()
        items += 1
        chars += len(item) if isinstance(item, str) else 0
        if items > limit or chars > limit:
            raise ExpressionError(f"the template gave a value of more than {limit} characters")
        if item is None or isinstance(item, bool | int):
            parent[key] = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ExpressionError(f"the template gave {item}, which is not a JSON value")
            parent[key] = item
        elif isinstance(item, str):
            parent[key] = str(item)
        elif isinstance(item, list | tuple):
            parent[key] = copy = [None] * len(item)
            stack.extend((v, copy, i) for i, v in enumerate(item))
        elif isinstance(item, dict):
            bad = next((k for k in item if not isinstance(k, str)), None)
            if bad is not None:
                raise ExpressionError(f"the template gave a dict with a {type(bad).__name__} key; JSON keys are text")
            parent[key] = copy = dict.fromkeys(str(k) for k in item)
            stack.extend((v, copy, str(k)) for k, v in item.items())
        else:
            hint = " (add '| list')" if isinstance(item, Iterator) else ""
            raise ExpressionError(f"the template gave a {type(item).__name__}, which is not a JSON value{hint}")
    return holder[0]
