"""The models of the browser actions: each names its element with `selector` or `locator`, in its `frame`."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..durations import Duration
from ..field_types import Tpl
from ..locators import FrameSpec, LocatorSpec, Target
from .base import Step

# browser actions ---------------------------------------------------------------------------


class BrowserStep(Step):
    browser: ClassVar[bool] = True


class FrameStep(BrowserStep):
    """A step that acts in a page or inside one of its frames: `frame:` names the <iframe> (a list: a chain)."""

    frame: FrameSpec | None = None


class TargetStep(FrameStep):
    """A step that acts on an element, named by `selector` or by `locator` (one or the other, never both)."""

    needs_target: ClassVar[bool] = True
    selector: str | None = None
    locator: LocatorSpec | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TargetStep:
        if self.selector is not None and self.locator is not None:
            raise ValueError("give 'selector' or 'locator', not both")
        if self.needs_target and self.selector is None and self.locator is None:
            raise ValueError(f"{self.action} needs 'selector' or 'locator'")
        return self

    @property
    def target(self) -> Target | None:
        return self.locator if self.locator is not None else self.selector


class OptionalTarget(TargetStep):
    needs_target: ClassVar[bool] = False


class Navigate(BrowserStep):
    action: Literal["navigate"]
    url: str
    wait_until: Tpl[Literal["load", "domcontentloaded", "networkidle", "commit"]] = "load"


class Click(TargetStep):
    action: Literal["click", "dblclick", "hover"]
    button: Tpl[Literal["left", "right", "middle"]] = "left"


class Fill(TargetStep):
    action: Literal["fill"]
    value: str | int | float


class TypeText(TargetStep):
    action: Literal["type"]
    value: str | int | float
    delay: Tpl[Duration] = 0.0  # between key presses


class Press(OptionalTarget):
    action: Literal["press"]
    key: str  # on the focused element when there is no selector or locator


class Select(TargetStep):
    action: Literal["select"]
    value: str | list[str] | None = None
    label: str | list[str] | None = None

    @model_validator(mode="after")
    def _value_or_label(self) -> Select:
        if (self.value is None) == (self.label is None):
            raise ValueError("select takes exactly one of 'value' or 'label'")
        return self


class Check(TargetStep):
    action: Literal["check", "uncheck"]


class Upload(TargetStep):
    action: Literal["upload"]
    files: str | list[str]


class Wait(OptionalTarget):
    action: Literal["wait"]
    state: Tpl[Literal["attached", "detached", "visible", "hidden"]] = "visible"
    url: str | None = None
    load_state: Tpl[Literal["load", "domcontentloaded", "networkidle"]] | None = None
    duration: Tpl[Duration] | None = None

    @model_validator(mode="after")
    def _one_wait(self) -> Wait:
        given = [f for f in ("target", "url", "load_state", "duration") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("wait takes exactly one of 'selector' (or 'locator'), 'url', 'load_state' or 'duration'")
        return self


class Extract(TargetStep):
    action: Literal["extract"]
    attribute: str | None = None  # for the `attr` and `attrs` results
    optional: Tpl[bool] = False  # read what is there now instead of waiting for a first match


class Assert(OptionalTarget):
    shape_fields: ClassVar[tuple[str, ...]] = ("that",)  # a condition, read as one
    action: Literal["assert"]
    text: str | None = None
    contains: str | None = None
    count: Tpl[Annotated[int, Field(ge=0)]] | None = None
    visible: Tpl[bool] | None = None
    value: str | None = None
    that: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_check(self) -> Assert:
        on_element = [f for f in ("text", "contains", "count", "visible", "value") if getattr(self, f) is not None]
        if self.that is not None:
            if self.target is not None or self.url or on_element:
                raise ValueError("'that' stands alone: no selector, url or element check beside it")
        elif self.url is not None:
            if self.target is not None or on_element:
                raise ValueError("'url' stands alone: no selector or element check beside it")
        elif self.target is None:
            raise ValueError(
                "assert needs 'selector' or 'locator' (with text, contains, count, visible or value), 'url', or 'that'"
            )
        elif len(on_element) != 1:
            raise ValueError("assert on an element takes exactly one of text, contains, count, visible, value")
        return self

    @property
    def browser_free(self) -> bool:
        return self.that is not None


class Screenshot(OptionalTarget):
    action: Literal["screenshot"]
    full_page: Tpl[bool] = False
    file: str | None = None  # name inside the run's artifact folder


class Scroll(OptionalTarget):
    action: Literal["scroll"]
    to: Tpl[Literal["top", "bottom"]] | None = None
    by: Tpl[int] | None = None  # pixels down (negative: up)

    @model_validator(mode="after")
    def _one_scroll(self) -> Scroll:
        if sum(v is not None for v in (self.target, self.to, self.by)) != 1:
            raise ValueError("scroll takes exactly one of 'selector' (or 'locator'), 'to' or 'by'")
        return self


class Evaluate(FrameStep):
    action: Literal["evaluate"]
    script: str
    arg: Any = None


class CloseTab(BrowserStep):
    action: Literal["close_tab"]


class Download(OptionalTarget):
    action: Literal["download"]
    url: str | None = None  # fetched with the tab's cookies, through the egress policy; else the element is clicked
    file: str | None = None  # name inside the run's artifacts (default: the suggested name)
    max_size: Tpl[Annotated[int, Field(ge=1)]] = 100 * 1024 * 1024  # bytes

    @model_validator(mode="after")
    def _one_source(self) -> Download:
        if (self.target is None) == (self.url is None):
            raise ValueError("download takes exactly one of 'selector' (or 'locator') or 'url'")
        return self
