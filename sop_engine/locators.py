"""Elements named the Playwright way: `locator: {role: button, name: Save}` is `page.get_by_role("button",
name="Save")`; a `frame:` names the `<iframe>` (or the chain of them) a step acts inside."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .field_types import Tpl

# the ways to find an element, each Playwright's get_by_<way>
WAYS = ("role", "label", "placeholder", "text", "alt", "title", "test_id")
_EXACT = ("role", "label", "placeholder", "text", "alt", "title")


class LocatorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    role: str | None = None
    name: str | None = None  # the accessible name, with role
    label: str | None = None
    placeholder: str | None = None
    text: str | None = None
    alt: str | None = None
    title: str | None = None
    test_id: str | None = None
    exact: Tpl[bool] | None = None
    nth: Tpl[int] | None = Field(None)  # 0 is the first match, -1 the last
    has_text: str | None = None
    within: str | LocatorSpec | None = None  # a parent: a selector or a locator

    @model_validator(mode="after")
    def _one_way(self) -> LocatorSpec:
        given = [way for way in WAYS if getattr(self, way) is not None]
        if len(given) != 1:
            has = ", ".join(given) or "none"
            raise ValueError(f"a locator takes exactly one of {', '.join(WAYS)} (it has: {has})")
        if self.name is not None and given[0] != "role":
            raise ValueError("'name' goes with 'role' (the accessible name of an element of that role)")
        if self.exact is not None and given[0] not in _EXACT:
            raise ValueError(f"'exact' does not apply to {given[0]}")
        return self

    def written(self) -> str:
        """The locator as the document wrote it, for messages: `{role: button, name: "Save"}`."""
        given = self.model_dump(exclude_none=True, warnings=False)  # a field may hold its template
        parts = [f"{k}: {_shown(v)}" for k, v in given.items() if k != "within"]
        if self.within is not None:
            inner = self.within.written() if isinstance(self.within, LocatorSpec) else _shown(self.within)
            parts.append(f"within: {inner}")
        return "{" + ", ".join(parts) + "}"


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


Target = str | LocatorSpec  # a CSS/Playwright selector, or a locator
FrameSpec = Target | list[Target]  # an <iframe>, or a chain of them from the page inwards


def written(target: Any) -> str:
    """A selector or locator as written, for messages."""
    if isinstance(target, LocatorSpec):
        return target.written()
    if isinstance(target, dict):
        return LocatorSpec.model_validate(target).written()
    return repr(target)


def frames_of(frame: Any) -> list[Any]:
    if frame is None:
        return []
    return list(frame) if isinstance(frame, list) else [frame]


def describe(target: Any, frame: Any = None) -> str:
    """`'#save'`, `{role: button, name: "Save"}`, with `in frame '#editor'` when inside one."""
    text = written(target) if target is not None else "the frame"
    chain = frames_of(frame)
    if chain:
        text += " in frame " + " > ".join(written(f) for f in chain)
    return text
