"""Executors, one per action: `async def run(step, fields, ctx) -> result dict`.

Each family's module loads when a run first takes one of its actions: a run that only logs and sets values
never loads Playwright or httpx (tests/test_startup.py checks it; tests/test_actions_registry.py checks this
table against the modules' own)."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from .context import ActionContext

Executor = Callable[[Any, dict[str, Any], ActionContext], Awaitable[dict[str, Any]]]

# action -> the module of its family (each module's own EXECUTORS says what it runs)
FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        ("navigate", "click", "dblclick", "hover", "fill", "type", "press", "select", "check", "uncheck", "upload"),
        "browser",
    ),
    **dict.fromkeys(("wait", "extract", "assert", "screenshot", "scroll", "evaluate"), "reading"),
    "close_tab": "pages",
    **dict.fromkeys(("download", "read_file"), "files"),
    **dict.fromkeys(("set", "log", "sleep"), "data"),
    "http": "http",
    **dict.fromkeys(("input", "approval"), "human"),
}


class Executors(Mapping[str, Executor]):
    """The executors by action, each family's module imported on its first lookup."""

    def __init__(self) -> None:
        self._loaded: dict[str, Executor] = {}

    def __getitem__(self, action: str) -> Executor:
        executor = self._loaded.get(action)
        if executor is None:
            family = FAMILIES[action]  # KeyError for an action that has none, as from a dict
            executor = importlib.import_module(f"{__name__}.{family}").EXECUTORS[action]
            self._loaded[action] = executor
        return executor

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)


EXECUTORS: Mapping[str, Executor] = Executors()

__all__ = ["EXECUTORS", "FAMILIES", "ActionContext", "Executor"]
