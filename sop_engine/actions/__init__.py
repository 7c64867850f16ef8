"""Executors, one per action: `async def run(step, fields, ctx) -> result dict`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import browser, data, files, http, human, pages, reading
from .context import ActionContext

Executor = Callable[[Any, dict[str, Any], ActionContext], Awaitable[dict[str, Any]]]

EXECUTORS: dict[str, Executor] = {
    **browser.EXECUTORS,
    **reading.EXECUTORS,
    **pages.EXECUTORS,
    **files.EXECUTORS,
    **data.EXECUTORS,
    **http.EXECUTORS,
    **human.EXECUTORS,
}

__all__ = ["EXECUTORS", "ActionContext", "Executor"]
