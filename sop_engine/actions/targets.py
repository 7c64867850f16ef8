"""What a step acts on: the element its `selector` or `locator` names, inside its `frame` when it has one.
Every executor finds its element here, so a new way to name one (a locator, a frame) works for every action."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Locator

from .context import ActionContext


async def locate(step: Any, f: dict[str, Any], ctx: ActionContext) -> Locator:
    """The Playwright locator of the element the step names (its rendered fields `f`)."""
    page = await ctx.page()
    return page.locator(f["selector"])
