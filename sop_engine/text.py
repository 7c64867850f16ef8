"""Text that cannot be stored: a lone surrogate (half of a UTF-16 pair) has no UTF-8 form, so a database,
a JSON encoder or a log line refuses it. Python strings are the only source of such text, so finding it means
finding code points U+D800..U+DFFF."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _first_bad(text: str) -> int | None:
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.start() if found else None


def _say(where: str, text: str, index: int) -> str:
    return f"{where} holds text that cannot be encoded as UTF-8 (lone surrogate {text[index]!r} at character {index})"


def has_unencodable(value: Any, what: str = "value") -> str | None:
    """Where a lone surrogate sits in a nested str/list/dict (keys included), said in words; None when nowhere."""
    stack: list[tuple[Any, str]] = [(value, what)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            index = _first_bad(item)
            if index is not None:
                return _say(where, item, index)
        elif isinstance(item, dict):
            for key, inner in reversed(list(item.items())):
                if isinstance(key, str) and (index := _first_bad(key)) is not None:
                    return _say(f"a key of {where}", key, index)
                stack.append((inner, f"{where}[{key!r}]"))
        elif isinstance(item, list | tuple):
            stack.extend((inner, f"{where}[{i}]") for i, inner in reversed(list(enumerate(item))))
    return None


def _fixed(text: Any) -> Any:
    if isinstance(text, str) and _first_bad(text) is not None:
        return _SURROGATE.sub(REPLACEMENT, text)
    return text


def map_scalars(value: Any, change: Callable[[Any], Any]) -> Any:
    """A copy of a nested value with `change` applied to every key and every value that is not a list or a
    dict (tuples become lists). Without recursion: a page can nest values deeply."""
    holder: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, holder, 0)]
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, dict):
            parent[key] = copy = dict.fromkeys(change(k) for k in item)
            stack.extend((v, copy, change(k)) for k, v in item.items())
        elif isinstance(item, list | tuple):
            parent[key] = copy = [None] * len(item)
            stack.extend((v, copy, i) for i, v in enumerate(item))
        else:
            parent[key] = change(item)
    return holder[0]


def clean(value: Any) -> Any:
    """The value with every lone surrogate, in strings and keys at any depth, replaced by U+FFFD; the value
    itself when it holds none."""
    return value if has_unencodable(value) is None else map_scalars(value, _fixed)
