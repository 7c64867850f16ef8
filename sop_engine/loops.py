"""Run-time expansion of loops into keyed step instances: `add[0].type`, `pages[2].quotes[0].text`."""

from __future__ import annotations

import re
from typing import Any

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(?:\[(\d+)\])?")


class LoopError(ValueError):
    """A loop whose items cannot be iterated."""


def instance_key(prefix: str, step_id: str) -> str:
    return prefix + step_id


def iteration_prefix(loop_key: str, index: int) -> str:
    """The prefix of the keys of one iteration's steps."""
    return f"{loop_key}[{index}]."


def parse_key(key: str) -> list[tuple[str, int | None]]:
    """`pages[2].quotes[0].text` -> [("pages", 2), ("quotes", 0), ("text", None)]."""
    parts = []
    for segment in key.split("."):
        match = _SEGMENT.fullmatch(segment)
        if not match:
            raise ValueError(f"{key!r} is not a step key")
        parts.append((match.group(1), int(match.group(2)) if match.group(2) is not None else None))
    return parts


def is_inside(key: str, container: str) -> bool:
    """True when `key` is an instance inside the loop (or branch) instance `container`."""
    return key.startswith(container + "[") or key.startswith(container + ".")


def for_each_items(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [{"key": k, "value": v} for k, v in value.items()]
    if not isinstance(value, list):
        raise LoopError(f"for_each gave {type(value).__name__} {value!r}, not a list")
    return value


def repeat_items(value: Any) -> list[int]:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LoopError(f"repeat gave {value!r}, not a whole number")
    return list(range(value))


def element_items(selector: str, count: int) -> list[str]:
    """One selector per match, so child steps chain onto it: `div.quote >> nth=3 >> span.text`."""
    return [f"{selector} >> nth={i}" for i in range(count)]


def check_iterations(key: str, count: int, limit: int) -> None:
    if count > limit:
        raise LoopError(f"loop {key} has {count} items, more than max_iterations ({limit})")
