"""Browser actions, each a few Playwright calls; Playwright's errors become classified StepErrors."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from ..durations import format_duration
from ..errors import BROWSER_GONE, ErrorKind, StepError
from ..expressions import evaluate_condition
from ..policy import NetworkPolicy, PolicyError, clean
from ..policy.guard import BrowserGuard, guard_of
from ..policy.proxy import DENIED_HEADER
from ..steps import (
    Assert,
    Check,
    Click,
    Evaluate,
    Extract,
    Fill,
    Navigate,
    Press,
    Screenshot,
    Scroll,
    Select,
    TypeText,
    Upload,
    Wait,
)
from .context import ActionContext


def _ms(seconds: float) -> float:
    return max(seconds, 0.001) * 1000


@asynccontextmanager
async def translated(page: Page, what: str, selector: str | None, timeout: float) -> AsyncIterator[None]:
    """Turns Playwright's exceptions into StepErrors that say what was tried, where, and what was found.
    A page that went where the policy forbids fails the step, before and after the call, whatever it did."""
    guard = guard_of(page)
    await _settle(guard, page)
    try:
        yield
    except PlaywrightTimeout:
        await _settle(guard, page)
        url = page.url
        count = None
        if selector:
            with contextlib.suppress(PlaywrightError):
                count = await page.locator(selector).count()
        if selector and count == 0:
            raise StepError(
                ErrorKind.ELEMENT_NOT_FOUND,
                f"{what}: no element matched {selector!r} within {format_duration(timeout)}",
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
    page = await ctx.page()
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
    locator = page.locator(f["selector"])
    async with translated(page, f"{step.action} on {f['selector']!r}", f["selector"], ctx.timeout):
        if step.action == "hover":
            await locator.hover(timeout=_ms(ctx.timeout))
        elif step.action == "dblclick":
            await locator.dblclick(timeout=_ms(ctx.timeout), button=step.button)
        else:
            await locator.click(timeout=_ms(ctx.timeout), button=step.button)
    return {}


async def fill(step: Fill, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    async with translated(page, f"fill {f['selector']!r}", f["selector"], ctx.timeout):
        await page.locator(f["selector"]).fill(str(f["value"]), timeout=_ms(ctx.timeout))
    return {}


async def type_text(step: TypeText, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    async with translated(page, f"type into {f['selector']!r}", f["selector"], ctx.timeout):
        await page.locator(f["selector"]).press_sequentially(
            str(f["value"]), delay=step.delay * 1000, timeout=_ms(ctx.timeout)
        )
    return {}


async def press(step: Press, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    selector = f["selector"]
    async with translated(page, f"press {f['key']}" + (f" on {selector!r}" if selector else ""), selector, ctx.timeout):
        if selector:
            await page.locator(selector).press(f["key"], timeout=_ms(ctx.timeout))
        else:
            await page.keyboard.press(f["key"])
    return {}


async def select(step: Select, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = page.locator(f["selector"])
    try:
        async with translated(page, f"select in {f['selector']!r}", f["selector"], ctx.timeout):
            chosen = await locator.select_option(value=f["value"], label=f["label"], timeout=_ms(ctx.timeout))
    except StepError as exc:
        if exc.kind == ErrorKind.TIMEOUT:  # the select is there: the option is what is missing
            options = await locator.first.evaluate("s => [...s.options].map(o => o.value)")
            wanted = f["value"] if f["value"] is not None else f["label"]
            raise StepError(
                ErrorKind.ACTION,
                f"select in {f['selector']!r}: no option {wanted!r} (it has: {', '.join(options)})",
                selector=f["selector"],
                url=page.url,
                expected=wanted,
                found=options,
            ) from None
        raise
    return {"value": chosen[0] if len(chosen) == 1 else chosen}


async def check(step: Check, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    async with translated(page, f"{step.action} {f['selector']!r}", f["selector"], ctx.timeout):
        locator = page.locator(f["selector"])
        if step.action == "check":
            await locator.check(timeout=_ms(ctx.timeout))
        else:
            await locator.uncheck(timeout=_ms(ctx.timeout))
    return {}


async def upload(step: Upload, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    names = f["files"] if isinstance(f["files"], list) else [f["files"]]
    paths = [(p if p.is_absolute() else ctx.base_dir / p).resolve() for p in map(Path, map(str, names))]
    if not ctx.policy.local_files:
        roots = [ctx.base_dir.resolve(), *_artifact_roots(ctx)]
        outside = [str(p) for p in paths if not any(p.is_relative_to(root) for root in roots)]
        if outside:
            raise StepError(
                ErrorKind.ACTION,
                f"upload: only files in the SOP's folder can be sent from the server: {', '.join(outside)}",
                selector=f["selector"],
            )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise StepError(ErrorKind.ACTION, f"upload: no such file: {', '.join(missing)}", selector=f["selector"])
    async with translated(page, f"upload to {f['selector']!r}", f["selector"], ctx.timeout):
        await page.locator(f["selector"]).set_input_files(paths, timeout=_ms(ctx.timeout))
    return {"files": [p.name for p in paths]}


def _artifact_roots(ctx: ActionContext) -> list[Path]:
    """The run's own artifacts (a screenshot it took) may be uploaded too."""
    folder = getattr(ctx, "artifacts_dir", None) or getattr(getattr(ctx, "execution", None), "artifacts_dir", None)
    return [Path(folder).resolve()] if folder else []


async def wait(step: Wait, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    if step.duration is not None:
        await asyncio.sleep(step.duration)
        return {}
    pattern = _url_pattern(str(f["url"]), ctx.policy, "wait for url") if f["url"] else None
    page = await ctx.page()
    selector = f["selector"]
    async with translated(
        page,
        "wait for "
        + (f"{selector!r} to be {step.state}" if selector else f"url {f['url']}" if f["url"] else str(step.load_state)),
        selector if step.state in ("attached", "visible") else None,
        ctx.timeout,
    ):
        if selector:
            await page.locator(selector).first.wait_for(state=step.state, timeout=_ms(ctx.timeout))
        elif pattern is not None:
            await page.wait_for_url(pattern, timeout=_ms(ctx.timeout))
        else:
            await page.wait_for_load_state(step.load_state, timeout=_ms(ctx.timeout))  # type: ignore[arg-type]
    return {"url": page.url}


def _url_pattern(url: str, policy: NetworkPolicy, doing: str) -> str | re.Pattern[str]:
    """`re:` starts a regular expression; `*` and `**` are globs; anything else matches exactly. A pattern
    relative to the server (`/demo/*`) is on the server's address."""
    return re.compile(url[3:]) if url.startswith("re:") else policy.absolute(url, doing)


_EXTRACT_JS = """(els, a) => {
  const txt = e => (e.innerText ?? e.textContent ?? '').trim();
  const want = new Set(a.fields); const first = els[0]; const out = {count: els.length};
  if (want.has('text')) out.text = first ? txt(first) : null;
  if (want.has('texts')) out.texts = els.map(txt);
  if (want.has('value')) out.value = first ? (first.value ?? null) : null;
  if (want.has('values')) out.values = els.map(e => e.value ?? null);
  if (want.has('html')) out.html = first ? first.innerHTML : null;
  if (want.has('attr')) out.attr = first && a.attribute ? first.getAttribute(a.attribute) : null;
  if (want.has('attrs')) out.attrs = a.attribute ? els.map(e => e.getAttribute(a.attribute)) : [];
  if (want.has('rows')) {
    const table = first && (first.tagName === 'TABLE' ? first : first.closest('table'));
    out.rows = [];
    if (table) {
      let head = [...table.querySelectorAll('thead th')].map(txt);
      let body = [...table.querySelectorAll('tbody tr')];
      if (!head.length) { const all = [...table.querySelectorAll('tr')]; head = all.length ?
        [...all[0].children].map(txt) : []; body = all.slice(1); }
      out.rows = body.map(tr => Object.fromEntries([...tr.children].map((c, i) => [head[i] ?? String(i), txt(c)])));
    }
  }
  return out;
}"""
_RESULT_FIELD = re.compile(r"result\s*(?:\.\s*(\w+)|\[\s*['\"](\w+)['\"]\s*\])")
_EXTRACT_FIELDS = {"text", "texts", "count", "value", "values", "html", "attr", "attrs", "rows"}


def extract_fields(step: Extract) -> set[str]:
    """The result fields the step's outputs read; only those are computed in the page."""
    wanted: set[str] = set()
    for source in step.outputs.values():
        if "{" in source:
            wanted |= {a or b for a, b in _RESULT_FIELD.findall(source)}
        else:
            wanted.add(source)
    return (wanted & _EXTRACT_FIELDS) or {"text", "texts", "count"}


async def extract(step: Extract, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    selector = f["selector"]
    locator = page.locator(selector)
    async with translated(page, f"extract {selector!r}", selector, ctx.timeout):
        if not step.optional:
            await locator.first.wait_for(state="attached", timeout=_ms(ctx.timeout))
        return await locator.evaluate_all(
            _EXTRACT_JS, {"fields": sorted(extract_fields(step)), "attribute": step.attribute}
        )


async def assert_(step: Assert, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    if step.that is not None:
        if not evaluate_condition(step.that, ctx.variables):
            raise StepError(ErrorKind.ASSERTION, f"expected {step.that} to hold", expected=step.that, found=False)
        return {"ok": True}
    pattern = _url_pattern(str(f["url"]), ctx.policy, "assert url") if f["url"] is not None else None
    page = await ctx.page()
    guard = guard_of(page)
    ms = _ms(ctx.timeout)
    try:
        if pattern is not None:
            await expect(page).to_have_url(pattern, timeout=ms)
            await _settle(guard, page)
            return {"ok": True}
        locator = page.locator(f["selector"])
        if step.count is not None:
            await expect(locator).to_have_count(step.count, timeout=ms)
        elif step.text is not None:
            await expect(locator.first).to_have_text(str(f["text"]), timeout=ms)
        elif step.contains is not None:
            await expect(locator.first).to_contain_text(str(f["contains"]), timeout=ms)
        elif step.value is not None:
            await expect(locator.first).to_have_value(str(f["value"]), timeout=ms)
        elif step.visible:
            await expect(locator.first).to_be_visible(timeout=ms)
        else:
            await expect(locator.first).to_be_hidden(timeout=ms)
    except AssertionError as exc:
        await _settle(guard, page)  # what was found on a forbidden page is not for the message
        raise _assertion_error(step, f, page, exc) from None
    except PlaywrightError as exc:
        async with translated(page, "assert", f["selector"], ctx.timeout):
            raise exc
    await _settle(guard, page)
    return {"ok": True}


def _assertion_error(step: Assert, f: dict[str, Any], page: Page, exc: AssertionError) -> StepError:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    found = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(("Actual value:", "Received"))), None)
    problem = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Error:")), None)
    if problem:
        found = problem
    check = next(k for k in ("url", "count", "text", "contains", "value", "visible") if getattr(step, k) is not None)
    expected: Any = f.get(check, getattr(step, check))
    if check == "visible":
        check, expected = ("visible" if step.visible else "hidden"), True
    target = "the url" if check == "url" else repr(f["selector"])
    message = f"assert {check} of {target}: expected {expected!r}" + (f", found {found!r}" if found else "")
    return StepError(
        ErrorKind.ASSERTION, message, selector=f.get("selector"), url=page.url, expected=expected, found=found
    )


async def screenshot(step: Screenshot, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    secret_locators = getattr(ctx, "secret_locators", None)
    mask = (await secret_locators(page)) if secret_locators is not None else None
    path = ctx.artifact(f["file"] or "screenshot.png")
    try:
        async with translated(page, "screenshot", f["selector"], ctx.timeout):
            if f["selector"]:
                await page.locator(f["selector"]).screenshot(path=path, timeout=_ms(ctx.timeout), mask=mask or None)
            else:
                await page.screenshot(path=path, full_page=step.full_page, timeout=_ms(ctx.timeout), mask=mask or None)
    except PolicyError:
        path.unlink(missing_ok=True)  # a picture of a page it may not be on is not kept
        raise
    return {"path": str(path)}


async def scroll(step: Scroll, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    async with translated(page, "scroll", f["selector"], ctx.timeout):
        if f["selector"]:
            await page.locator(f["selector"]).scroll_into_view_if_needed(timeout=_ms(ctx.timeout))
        elif step.to is not None:
            await page.evaluate("to => window.scrollTo(0, to === 'top' ? 0 : document.body.scrollHeight)", step.to)
        else:
            await page.evaluate("by => window.scrollBy(0, by)", step.by)
        position = await page.evaluate("() => window.scrollY")
    return {"scroll_y": position}


async def evaluate(step: Evaluate, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    async with translated(page, "evaluate", None, ctx.timeout):
        value = await asyncio.wait_for(page.evaluate(f["script"], f["arg"]), ctx.timeout)
    return {"value": value, "json": value}


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
    "wait": wait,
    "extract": extract,
    "assert": assert_,
    "screenshot": screenshot,
    "scroll": scroll,
    "evaluate": evaluate,
}
