"""What a step acts on: the element its `selector` or `locator` names, inside its `frame` when it has one.
Every executor finds its element here, so a way to name one (a locator, a frame) works for every action."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ErrorKind, StepError
from ..locators import LocatorSpec, describe, frames_of
from .context import ActionContext

if TYPE_CHECKING:  # the runner's flow imports this module: Playwright loads with the first browser step
    from playwright.async_api import Frame, FrameLocator, Locator, Page

    Scope = Page | Frame | FrameLocator | Locator


def element(scope: Scope, target: Any) -> Locator:
    """The Playwright locator of a selector or a locator spec, looked for inside `scope`."""
    if isinstance(target, dict):
        target = LocatorSpec.model_validate(target)
    if not isinstance(target, LocatorSpec):
        return scope.locator(str(target))
    base = element(scope, target.within) if target.within is not None else scope
    exact = target.exact
    if target.role is not None:
        found = base.get_by_role(target.role, name=target.name, exact=exact)  # type: ignore[arg-type]
    elif target.label is not None:
        found = base.get_by_label(target.label, exact=exact)
    elif target.placeholder is not None:
        found = base.get_by_placeholder(target.placeholder, exact=exact)
    elif target.text is not None:
        found = base.get_by_text(target.text, exact=exact)
    elif target.alt is not None:
        found = base.get_by_alt_text(target.alt, exact=exact)
    elif target.title is not None:
        found = base.get_by_title(target.title, exact=exact)
    else:
        found = base.get_by_test_id(str(target.test_id))
    if target.has_text is not None:
        found = found.filter(has_text=target.has_text)
    return found.nth(target.nth) if target.nth is not None else found


def inside(page: Page, frame: Any) -> Page | FrameLocator:
    """The page, or the frame (a chain of them, from the page inwards) a step acts inside."""
    scope: Page | FrameLocator = page
    for each in frames_of(frame):
        scope = element(scope, each).content_frame
    return scope


def build(page: Page, target: Any, frame: Any = None) -> Locator:
    return element(inside(page, frame), target)


def target_of(f: dict[str, Any]) -> Any:
    """The selector or the locator among a step's rendered fields (None when it names neither)."""
    return f.get("locator") if f.get("locator") is not None else f.get("selector")


def shown(f: dict[str, Any]) -> str:
    """The step's element as written, for messages: `'#save'`, `{role: button, name: "Save"} in frame '#pay'`."""
    return describe(target_of(f), f.get("frame"))


async def locate(step: Any, f: dict[str, Any], ctx: ActionContext) -> Locator:
    """The element the step names (`f`: its rendered fields), in its tab and frame."""
    return build(await ctx.page(), target_of(f), f.get("frame"))


async def frame_of(page: Page, frame: Any, timeout_ms: float) -> Page | Frame:
    """The page, or the live Frame of the step's `frame` (for what acts on a whole document: evaluate)."""
    scope: Page | Frame = page
    for each in frames_of(frame):
        handle = await element(scope, each).element_handle(timeout=timeout_ms)
        inner = await handle.content_frame()
        if inner is None:
            raise StepError(ErrorKind.ACTION, f"{describe(each)} is not an <iframe>", selector=describe(each))
        scope = inner
    return scope


def selector_of(page: Page, target: Any) -> str:
    """A selector string for a selector or a locator, usable in a later step's `selector` (a loop's item):
    Playwright's own form of the locator (`internal:role=button[name="Save"i]`), read from its Python object
    (no public API gives it; tests/test_locators.py checks it still works)."""
    if not isinstance(target, dict | LocatorSpec):
        return str(target)
    return str(element(page, target)._impl_obj._selector)
