"""Elements named the Playwright way: `locator: {role: button, name: Save}` is `page.get_by_role("button",
name="Save")`; a `frame:` names the `<iframe>` (or the chain of them) a step acts inside."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

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
    within: Target | None = None  # a parent: a selector or a locator

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


TAG = "~"  # marks the branch of a union in an error's place: not a field, left out when the place is shown
MAX_FRAMES = 10  # frames inside frames, deeper than any page people use


def _kind(value: Any) -> str | None:
    if isinstance(value, str):
        return f"{TAG}selector"
    return f"{TAG}locator" if isinstance(value, dict | LocatorSpec) else None


def _one_or_chain(value: Any) -> str | None:
    return f"{TAG}chain" if isinstance(value, list) else _kind(value)


_NEITHER = "is a selector (text) or a locator (a mapping such as {role: button, name: Save})"

# a CSS/Playwright selector, or a locator
Target = Annotated[
    Annotated[str, Tag(f"{TAG}selector")] | Annotated[LocatorSpec, Tag(f"{TAG}locator")],
    Discriminator(_kind, custom_error_type="target", custom_error_message=_NEITHER),
]
# an <iframe>, or a chain of them from the page inwards
FrameSpec = Annotated[
    Annotated[str, Tag(f"{TAG}selector")]
    | Annotated[LocatorSpec, Tag(f"{TAG}locator")]
    | Annotated[list[Target], Tag(f"{TAG}chain"), Field(min_length=1, max_length=MAX_FRAMES)],
    Discriminator(_one_or_chain, custom_error_type="frame", custom_error_message=_NEITHER + ", or a list of them"),
]


def located(loc: tuple[Any, ...]) -> str:
    """An error's place as the document names it: `frame.0`, `locator.within.nth` (union branches left out)."""
    return ".".join(str(p) for p in loc if not str(p).startswith(TAG))


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


LocatorSpec.model_rebuild()  # `within` names a Target, defined after the model
