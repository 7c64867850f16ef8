"""Tabs: the page an action opens (`opens_tab: NAME`) becomes a tab of its own; `close_tab` closes one."""

from __future__ import annotations

import contextlib
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from ..durations import format_duration
from ..errors import ErrorKind, StepError
from ..steps import CloseTab, Step
from .context import ActionContext
from .targets import shown, target_of


async def opening_tab(executor: Any, step: Step, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """Runs the action, waiting (within the step's timeout) for the page it opens: a popup, a link with
    target=_blank, window.open. That page becomes the tab `step.opens_tab`."""
    assert step.opens_tab is not None
    page = await ctx.page()
    what = f"{step.action}" + (f" on {shown(f)}" if target_of(f) is not None else "")
    try:
        async with page.context.expect_page(timeout=max(ctx.timeout, 0.001) * 1000) as opened:
            result = await executor(step, f, ctx)
        new = await opened.value
    except PlaywrightTimeout:
        raise StepError(
            ErrorKind.ACTION,
            f"{what} opened no tab within {format_duration(ctx.timeout)} (opens_tab: {step.opens_tab})",
            selector=shown(f) if target_of(f) is not None else None,
            url=page.url,
        ) from None
    except PlaywrightError as exc:
        raise StepError(ErrorKind.ACTION, f"{what}: the tab it opened is gone ({exc.message})") from None
    await ctx.adopt_tab(step.opens_tab, new)
    with contextlib.suppress(PlaywrightError):  # a later step on the tab says what is wrong with it
        await new.wait_for_load_state("domcontentloaded", timeout=max(ctx.timeout, 0.001) * 1000)
    return {**result, "tab": step.opens_tab, "tab_url": new.url}


async def close_tab(step: CloseTab, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    return {"closed": await ctx.close_tab(step.tab)}


EXECUTORS = {"close_tab": close_tab}
