"""Steps holding steps: loops and branches."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..durations import Duration
from ..locators import FrameSpec, Target
from .base import NAME_PATTERN, Condition, Probe, Step

# steps holding steps -------------------------------------------------------------------------


class Loop(Step):
    action: Literal["loop"]
    timeout: Duration | None = None  # read as written: it bounds the wait for for_each_element
    for_each: str | list[Any] | None = None
    repeat: int | str | None = None
    for_each_element: Target | None = None
    optional: bool = False  # for_each_element: no match is 0 iterations at once, instead of waiting, then failing
    frame: FrameSpec | None = None  # where for_each_element looks; the body acts there too
    while_: Condition | None = Field(None, alias="while")
    until: Condition | None = None
    as_: str = Field("item", alias="as", pattern=NAME_PATTERN)
    max_iterations: int = Field(1000, ge=1)
    collect: dict[str, str] = {}
    steps: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> Loop:
        forms = [
            f for f in ("for_each", "repeat", "for_each_element", "while_", "until") if getattr(self, f) is not None
        ]
        if len(forms) != 1:
            raise ValueError("a loop takes exactly one of for_each, repeat, for_each_element, while, until")
        return self

    @property
    def uses_page(self) -> bool:
        return self.for_each_element is not None or isinstance(self.while_ or self.until, Probe)

    @classmethod
    def template_fields(cls) -> tuple[str, ...]:
        return ("for_each", "repeat", "for_each_element", "frame")

    def children(self) -> list[list[Step]]:
        return [self.steps]


class If(Step):
    action: Literal["if"]
    timeout: Duration | None = None
    condition: Condition
    then: list[Any] = Field(min_length=1)
    else_: list[Any] = Field([], alias="else")
    frame: FrameSpec | None = None  # where a page probe looks; the branches act there too

    @classmethod
    def template_fields(cls) -> tuple[str, ...]:
        return ()

    def children(self) -> list[list[Step]]:
        return [self.then, self.else_]
