"""Browser actions that wait for, read and check what a page shows: wait, extract, assert, screenshot, scroll,
evaluate."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, expect

from ..errors import ErrorKind, StepError
from ..expressions import evaluate_condition
from ..limits import LimitError, ParseError, load_json
from ..policy import NetworkPolicy
from ..policy.guard import guard_of
from ..steps import Assert, Evaluate, Extract, Screenshot, Scroll, Wait
from .browser import _ms, _settle, translated
from .context import ActionContext
from .targets import frame_of, locate, shown, target_of


async def wait(step: Wait, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    if step.duration is not None:
        await asyncio.sleep(step.duration)
        return {}
    pattern = _url_pattern(str(f["url"]), ctx.policy, "wait for url") if f["url"] else None
    page = await ctx.page()
    locator = await locate(step, f, ctx) if target_of(f) is not None else None
    waited = f"{shown(f)} to be {step.state}" if locator else f"url {f['url']}" if f["url"] else str(step.load_state)
    counted = locator if step.state in ("attached", "visible") else None
    async with translated(page, f"wait for {waited}", counted, ctx.timeout, shown(f)):
        if locator is not None:
            await locator.first.wait_for(state=step.state, timeout=_ms(ctx.timeout))
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
  const text = JSON.stringify(out);  // one bounded text, not a value graph for the engine to take apart
  return text.length > a.limit ? {too_big: text.length} : text;
}"""
RESULT_MAX_CHARS = 10 * 1024 * 1024  # JSON text a page may hand back to one step (extract, evaluate)
_AS_JSON = """(value, limit) => {
  let text;
  try { text = JSON.stringify(value === undefined ? null : value); }
  catch (e) { return {problem: 'is not JSON data (' + String(e && e.message || e).split('\\n')[0] + ')'}; }
  if (text === undefined) return {problem: 'is not JSON data (a function or a symbol)'};
  if (text.length > limit) return {too_big: text.length};
  return text;
}"""


def from_page(got: Any, what: str) -> Any:
    """A page's answer, JSON text bounded in the page (a window, a DOM node, a 1 GB string never reach Python)."""
    if isinstance(got, dict) and "too_big" in got:
        raise StepError(
            ErrorKind.ACTION,
            f"{what}: the result is {got['too_big']} characters of JSON, over the limit of {RESULT_MAX_CHARS}",
        )
    if isinstance(got, dict) and "problem" in got:
        raise StepError(ErrorKind.ACTION, f"{what}: the result {got['problem']}")
    try:
        return load_json(str(got), "the result", mend=True)
    except (ParseError, LimitError) as exc:
        raise StepError(ErrorKind.ACTION, f"{what}: the result: {exc}") from None


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
    locator = await locate(step, f, ctx)
    async with translated(page, f"extract {shown(f)}", locator, ctx.timeout, shown(f)):
        if not step.optional:
            await locator.first.wait_for(state="attached", timeout=_ms(ctx.timeout))
        wanted = {"fields": sorted(extract_fields(step)), "attribute": step.attribute, "limit": RESULT_MAX_CHARS}
        got = await locator.evaluate_all(_EXTRACT_JS, wanted)
    return from_page(got, f"extract {shown(f)}")


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
        locator = await locate(step, f, ctx)
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
        async with translated(page, f"assert on {shown(f)}", None, ctx.timeout, shown(f)):
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
    target = "the url" if check == "url" else shown(f)
    message = f"assert {check} of {target}: expected {expected!r}" + (f", found {found!r}" if found else "")
    return StepError(
        ErrorKind.ASSERTION,
        message,
        selector=shown(f) if target_of(f) is not None else None,
        url=page.url,
        expected=expected,
        found=found,
    )


async def screenshot(step: Screenshot, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    secret_locators = getattr(ctx, "secret_locators", None)
    mask = (await secret_locators(page)) if secret_locators is not None else None
    locator = await locate(step, f, ctx) if target_of(f) is not None else None
    # kept only once the step is through: a picture of a page it may not be on (a PolicyError) never is
    async with translated(
        page, f"screenshot of {shown(f)}" if locator else "screenshot", locator, ctx.timeout, shown(f)
    ):
        if locator is not None:
            picture = await locator.screenshot(timeout=_ms(ctx.timeout), mask=mask or None)
        else:
            picture = await page.screenshot(full_page=step.full_page, timeout=_ms(ctx.timeout), mask=mask or None)
    return {"path": await ctx.save_artifact(f["file"] or "screenshot.png", picture)}


async def scroll(step: Scroll, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    locator = await locate(step, f, ctx) if target_of(f) is not None else None
    async with translated(page, f"scroll to {shown(f)}" if locator else "scroll", locator, ctx.timeout, shown(f)):
        if locator is not None:
            await locator.scroll_into_view_if_needed(timeout=_ms(ctx.timeout))
        elif step.to is not None:
            await page.evaluate("to => window.scrollTo(0, to === 'top' ? 0 : document.body.scrollHeight)", step.to)
        else:
            await page.evaluate("by => window.scrollBy(0, by)", step.by)
        position = await page.evaluate("() => window.scrollY")
    return {"scroll_y": position}


async def evaluate(step: Evaluate, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    page = await ctx.page()
    async with translated(page, "evaluate" + (f" in frame {shown(f)}" if f["frame"] else ""), None, ctx.timeout):
        scope = await frame_of(page, f["frame"], _ms(ctx.timeout))
        handle = await asyncio.wait_for(scope.evaluate_handle(f["script"], f["arg"]), ctx.timeout)
        try:
            got = await asyncio.wait_for(handle.evaluate(_AS_JSON, RESULT_MAX_CHARS), ctx.timeout)
        finally:
            with contextlib.suppress(PlaywrightError):
                await handle.dispose()
    value = from_page(got, "evaluate")
    return {"value": value, "json": value}


EXECUTORS = {
    "wait": wait,
    "extract": extract,
    "assert": assert_,
    "screenshot": screenshot,
    "scroll": scroll,
    "evaluate": evaluate,
}
