"""Browser actions that go somewhere or change a page: navigate, click, fill, type, press, select, check, upload.
Each is a few Playwright calls; Playwright's errors become classified StepErrors (`translated`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from ..artifacts import UnsafeName
from ..durations import format_duration
from ..errors import BROWSER_GONE, ErrorKind, StepError
from ..policy import PolicyError, clean
from ..policy.guard import BrowserGuard, guard_of
from ..policy.proxy import DENIED_HEADER
from ..steps import (
    Check,
    Click,
    Fill,
    Navigate,
    Press,
    Select,
    TypeText,
    Upload,
)
from .context import ActionContext
from .targets import locate, shown, target_of


def _ms(seconds: float) -> float:
    return max(seconds, 0.001) * 1000


@asynccontextmanager
async def translated(
    page: Page, what: str, target: Locator | None, timeout: float, selector: str | None = None
) -> AsyncIterator[None]:
    """Turns Playwright's exceptions into StepErrors that say what was tried, where, and what was found: how
    many elements `target` matches when it timed out, `selector` being how the step wrote it. A page that went
    where the policy forbids fails the step, before and after the call, whatever it did."""
    guard = guard_of(page)
    await _settle(guard, page)
    try:
        yield
    except PlaywrightTimeout:
        await _settle(guard, page)
        url = page.url
        count = None
        if target is not None:
            with contextlib.suppress(PlaywrightError):
                count = await asyncio.wait_for(target.count(), 2)
        if target is not None and count == 0:
            raise StepError(
                ErrorKind.ELEMENT_NOT_FOUND,
                f"{what}: no element matched {selector} within {format_duration(timeout)}",
                selector=selector,
                url=url,
                expected="an element",
                found="none",
            ) from None
        found = f" ({count} matching, none ready: hidden, disabled or covered)" if count else ""
        raise StepError(
            ErrorKind.TIMEOUT, f"{what}: not done within {format_duration(timeout)}{found}", selector=selector, url=url
        ) from None
    except PlaywrightError as exc:
        await _settle(guard, page)
        message = exc.message.splitlines()[0] if exc.message else str(exc)
        if any(mark in message for mark in BROWSER_GONE):
            raise StepError(
                ErrorKind.BROWSER, f"{what}: the browser went away ({message})", selector=selector
            ) from None
        kind = ErrorKind.NAVIGATION if "net::ERR_" in message else ErrorKind.ACTION
        raise StepError(kind, f"{what}: {message}", selector=selector, url=_safe_url(page)) from None
    await _settle(guard, page)


async def _settle(guard: BrowserGuard | None, page: Page) -> None:
    if guard is not None:
        await guard.settle(page)


def _safe_url(page: Page) -> str | None:
    try:
        return page.url
    except PlaywrightError:
        return None


async def navigate(step: Navigate, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    policy = ctx.policy
    url = policy.absolute(str(f["url"]), "navigate")
    what = f"navigate to {url if url == clean(url) else repr(url)}"
    try:
        await policy.check_request(url)
    except PolicyError as exc:
        raise PolicyError(f"{what}: {exc.message}", url=exc.url) from None
    except OSError as exc:
        raise StepError(ErrorKind.NAVIGATION, f"{what}: the host name did not resolve ({exc})", url=url) from None
    page = await ctx.page(reopen=True)
    guard = guard_of(page)
    mark = guard.denial_mark() if guard is not None else 0
    try:
        async with translated(page, what, None, ctx.timeout):
            target = url if policy.local_files else clean(url)  # what was checked is what the browser gets
            response = await page.goto(target, wait_until=step.wait_until, timeout=_ms(ctx.timeout))
    except StepError as exc:
        denied = guard.denied_since(mark) if guard is not None else None
        if denied is None or isinstance(exc, PolicyError):
            raise
        raise PolicyError(f"{what}: {denied.message}", url=_safe_url(page)) from None
    if response is not None and guard is not None and DENIED_HEADER.lower() in response.headers:
        denied = guard.denied_since(mark)
        message = denied.message if denied else response.headers[DENIED_HEADER.lower()]
        raise PolicyError(f"{what}: {message}", url=response.url)
    # an error page (4xx, 5xx) is still a page: `status` lets a later step decide
    return {"url": page.url, "status": response.status if response else None}


async def click(step: Click, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx)
    async with translated(page, f"{step.action} on {shown(f)}", locator, ctx.timeout, shown(f)):
        if step.action == "hover":
            await locator.hover(timeout=_ms(ctx.timeout))
        elif step.action == "dblclick":
            await locator.dblclick(timeout=_ms(ctx.timeout), button=step.button)
        else:
            await locator.click(timeout=_ms(ctx.timeout), button=step.button)
    return {}


async def fill(step: Fill, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx)
    async with translated(page, f"fill {shown(f)}", locator, ctx.timeout, shown(f)):
        await locator.fill(str(f["value"]), timeout=_ms(ctx.timeout))
    return {}


async def type_text(step: TypeText, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx)
    async with translated(page, f"type into {shown(f)}", locator, ctx.timeout, shown(f)):
        await locator.press_sequentially(str(f["value"]), delay=step.delay * 1000, timeout=_ms(ctx.timeout))
    return {}


async def press(step: Press, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    if target_of(f) is None:
        async with translated(page, f"press {f['key']}", None, ctx.timeout):
            await page.keyboard.press(f["key"])
        return {}
    locator = await locate(step, f, ctx)
    async with translated(page, f"press {f['key']} on {shown(f)}", locator, ctx.timeout, shown(f)):
        await locator.press(f["key"], timeout=_ms(ctx.timeout))
    return {}


async def select(step: Select, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx)
    try:
        async with translated(page, f"select in {shown(f)}", locator, ctx.timeout, shown(f)):
            chosen = await locator.select_option(value=f["value"], label=f["label"], timeout=_ms(ctx.timeout))
    except StepError as exc:
        if exc.kind == ErrorKind.TIMEOUT:  # the select is there: the option is what is missing
            options = await locator.first.evaluate("s => [...s.options].map(o => o.value)")
            wanted = f["value"] if f["value"] is not None else f["label"]
            raise StepError(
                ErrorKind.ACTION,
                f"select in {shown(f)}: no option {wanted!r} (it has: {', '.join(options)})",
                selector=shown(f),
                url=page.url,
                expected=wanted,
                found=options,
            ) from None
        raise
    return {"value": chosen[0] if len(chosen) == 1 else chosen}


async def check(step: Check, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx)
    async with translated(page, f"{step.action} {shown(f)}", locator, ctx.timeout, shown(f)):
        if step.action == "check":
            await locator.check(timeout=_ms(ctx.timeout))
        else:
            await locator.uncheck(timeout=_ms(ctx.timeout))
    return {}


async def upload(step: Upload, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    given = [str(n) for n in (f["files"] if isinstance(f["files"], list) else [f["files"]])]
    copies, gone = await _own_files(ctx, given)
    paths = [(g, copies.get(g) or _resolved(g, ctx.base_dir)) for g in given if g not in gone]
    if not ctx.policy.local_files:
        root = ctx.base_dir.resolve()
        outside = [str(p) for g, p in paths if g not in copies and not p.is_relative_to(root)]
        if outside:
            raise StepError(
                ErrorKind.ACTION,
                f"upload: only files in the SOP's folder can be sent from the server: {', '.join(outside)}",
                selector=shown(f),
            )
    missing = [*gone, *(str(p) for g, p in paths if g not in copies and not p.is_file())]
    if missing:
        raise StepError(ErrorKind.ACTION, f"upload: no such file: {', '.join(missing)}", selector=shown(f))
    locator = await locate(step, f, ctx)
    async with translated(page, f"upload to {shown(f)}", locator, ctx.timeout, shown(f)):
        await locator.set_input_files([p for _, p in paths], timeout=_ms(ctx.timeout))
    return {"files": [p.name for _, p in paths]}


def _resolved(given: str, base_dir: Path) -> Path:
    path = Path(given)
    return (path if path.is_absolute() else base_dir / path).resolve()


async def _own_files(ctx: ActionContext, given: list[str]) -> tuple[dict[str, Path], list[str]]:
    """The run's own files among `given` (a screenshot it took, named by the `path` its step gave back) as local
    copies, for Playwright sends only local files; and those of them that are gone. A name that only looks like
    one of them (a link leading out of the run's folder) is in neither: it is checked as any other path."""
    copies: dict[str, Path] = {}
    gone: list[str] = []
    for g in given:
        name = ctx.artifact_store.artifact_at(ctx.run_id, g)
        try:
            if name is not None:
                copies[g] = await ctx.artifact_copy(name)
        except FileNotFoundError:
            gone.append(g)
        except UnsafeName:
            pass
    return copies, gone


EXECUTORS = {
    "navigate": navigate,
    "click": click,
    "dblclick": click,
    "hover": click,
    "fill": fill,
    "type": type_text,
    "press": press,
    "select": select,
    "check": check,
    "uncheck": check,
    "upload": upload,
}
