"""The store from async code: each call runs in a thread, so a slow or locked database never blocks the
event loop (the login page and the live feed keep answering)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from sop_engine.store import Store


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.store, name)

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


async def off_loop(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Any other blocking call (a batch summary, a document load) in a thread."""
    return await asyncio.to_thread(function, *args, **kwargs)
