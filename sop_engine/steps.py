"""The step models of an SOP document, one per action: each validates its own fields."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import Duration
from .field_types import Tpl, rendered_context
from .locators import FrameSpec, LocatorSpec, Target

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
ErrorPolicy = Literal["fail", "continue", "pause"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetrySpec(Strict):
    attempts: int = Field(1, ge=1, le=100)
    backoff: Literal["fixed", "linear", "exponential"] = "fixed"
    delay: Duration = 1.0
    max_delay: Duration = 30.0
    jitter: Duration = 0.0


class Probe(Strict):
    """A condition read off the page: a selector that exists, or one that is missing."""

    exists: Target | None = None
    missing: Target | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Probe:
        if (self.exists is None) == (self.missing is None):
            raise ValueError("a page probe has exactly one of 'exists' or 'missing'")
        return self

    @property
    def target(self) -> Target:
        return self.exists if self.exists is not None else self.missing  # type: ignore[return-value]


def _as_condition(value: Any) -> Any:
    if isinstance(value, dict):
        try:
            return Probe.model_validate(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if not isinstance(value, str | bool | Probe):
        raise ValueError("a condition is a template, an expression, true/false, or {exists|missing: selector}")
    return value


Condition = Annotated[str | bool | Probe, BeforeValidator(_as_condition)]


class DialogAnswer(Strict):
    """How a dialog (alert, confirm, prompt, beforeunload) is answered; `prompt` (a template) is typed into
    a prompt before it is accepted."""

    accept: bool = True
    prompt: str | None = None


def _as_dialog_answer(value: Any) -> Any:
    if value in ("accept", "dismiss"):
        return DialogAnswer(accept=value == "accept")
    if isinstance(value, dict | DialogAnswer):
        return value
    raise ValueError("dialogs is 'accept', 'dismiss' or {accept: true, prompt: text}")


DialogPolicy = Annotated[DialogAnswer, BeforeValidator(_as_dialog_answer)]


class Step(Strict):
    """Fields every step has. Subclasses add the action's own fields, each of which may be a template (rendered
    with the step's inputs, then checked against the field's type, when the step runs) unless it is named in
    `shape_fields`: those give the document its shape and are read as written."""

    browser: ClassVar[bool] = False  # acts on a browser tab
    shape_fields: ClassVar[tuple[str, ...]] = ()

    id: str = Field(pattern=STEP_ID_PATTERN)
    action: str
    name: str | None = None
    description: str | None = None
    inputs: list[str] = []
    outputs: dict[str, str] = {}
    when: Condition | None = None
    depends_on: list[str] = []
    tab: str = "main"
    timeout: Duration | None = None
    retry: RetrySpec | None = None
    on_error: ErrorPolicy | None = None
    pause_before: bool = False
    idempotent: bool = True
    resume_from: str | None = None
    dialogs: DialogPolicy | None = None  # how dialogs on the step's tab are answered while it runs
    opens_tab: str | None = Field(None, pattern=NAME_PATTERN)  # the tab the action opens gets this name

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_as_mapping(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {name: name for name in value}
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: list[str]) -> list[str]:
        import re

        for name in value:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a variable name")
        return value

    @classmethod
    def template_fields(cls) -> tuple[str, ...]:
        """The action's own fields that are rendered before it runs: all but the shape fields."""
        found = cls.__dict__.get("_template_fields")
        if found is None:
            found = tuple(n for n in cls.model_fields if n not in Step.model_fields and n not in cls.shape_fields)
            cls._template_fields = found  # type: ignore[attr-defined]
        return found

    def templated(self) -> dict[str, Any]:
        """The action's own fields as written (a locator as a mapping), to be rendered with the step's inputs."""
        return {name: as_written(getattr(self, name)) for name in self.template_fields()}

    def rendered(self, fields: dict[str, Any]) -> Step:
        """This step with its rendered fields, each checked against its type (a ValidationError says which is
        wrong): what a template gave must be what the field takes, not another template."""
        data = {name: getattr(self, name) for name in self.model_fields_set}
        data.update(fields)
        return type(self).model_validate(data, context=rendered_context())

    def children(self) -> list[list[Step]]:
        return []


def as_written(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True, warnings=False)  # a field may hold its template
    if isinstance(value, list):
        return [as_written(v) for v in value]
    return value


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


class ReadFile(Step):
    action: Literal["read_file"]
    path: str  # inside the run's artifacts folder
    format: Tpl[Literal["csv", "json", "text"]] = "text"
    max_size: Tpl[Annotated[int, Field(ge=1)]] = 10 * 1024 * 1024  # bytes


# data and other actions ----------------------------------------------------------------------


class Set(Step):
    action: Literal["set"]
    values: dict[str, Any]

    @model_validator(mode="after")
    def _outputs_default_to_values(self) -> Set:
        if not self.outputs:
            self.outputs = {name: name for name in self.values}
        return self


class Http(Step):
    action: Literal["http"]
    method: Tpl[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]] = "GET"
    url: str
    headers: dict[str, str] = {}
    params: dict[str, Any] = {}
    json_body: Any = Field(None, alias="json")
    body: str | None = None
    expect_status: Tpl[int | list[int]] | None = None


class Log(Step):
    action: Literal["log"]
    message: str
    level: Tpl[Literal["debug", "info", "warning", "error"]] = "info"


class Sleep(Step):
    action: Literal["sleep"]
    duration: Tpl[Duration]


# steps that wait for a person -------------------------------------------------------------


class FormField(Strict):
    type: Literal["string", "integer", "number", "boolean"] = "string"
    label: str | None = None
    secret: bool = False
    default: Any = None


class Input(Step):
    """Waits for a person to fill a form; the values become the step's outputs."""

    shape_fields: ClassVar[tuple[str, ...]] = ("fields",)
    action: Literal["input"]
    message: str | None = None
    fields: dict[str, FormField] = Field(min_length=1)

    @model_validator(mode="after")
    def _outputs_default_to_fields(self) -> Input:
        if not self.outputs:
            self.outputs = {name: name for name in self.fields}
        return self


class Approval(Step):
    """Waits for a person to approve (outputs `approved: true`, `comment`) or reject (the step fails)."""

    action: Literal["approval"]
    message: str

    @model_validator(mode="after")
    def _outputs_default(self) -> Approval:
        if not self.outputs:
            self.outputs = {"approved": "approved"}
        return self


HUMAN_ACTIONS = frozenset({"input", "approval"})


# steps holding steps -------------------------------------------------------------------------


class Loop(Step):
    action: Literal["loop"]
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
    condition: Condition
    then: list[Any] = Field(min_length=1)
    else_: list[Any] = Field([], alias="else")
    frame: FrameSpec | None = None  # where a page probe looks; the branches act there too

    @classmethod
    def template_fields(cls) -> tuple[str, ...]:
        return ()

    def children(self) -> list[list[Step]]:
        return [self.then, self.else_]


STEP_MODELS: dict[str, type[Step]] = {
    "navigate": Navigate,
    "click": Click,
    "dblclick": Click,
    "hover": Click,
    "fill": Fill,
    "type": TypeText,
    "press": Press,
    "select": Select,
    "check": Check,
    "uncheck": Check,
    "upload": Upload,
    "wait": Wait,
    "extract": Extract,
    "assert": Assert,
    "screenshot": Screenshot,
    "scroll": Scroll,
    "evaluate": Evaluate,
    "close_tab": CloseTab,
    "download": Download,
    "read_file": ReadFile,
    "set": Set,
    "http": Http,
    "log": Log,
    "sleep": Sleep,
    "loop": Loop,
    "if": If,
    "input": Input,
    "approval": Approval,
}


def uses_browser(step: Step) -> bool:
    """True when the step itself reads or drives a page (its `when` probe counts)."""
    if isinstance(step.when, Probe):
        return True
    if isinstance(step, Assert):
        return not step.browser_free
    if isinstance(step, Loop):
        return step.uses_page
    if isinstance(step, If):
        return isinstance(step.condition, Probe)
    return step.browser
