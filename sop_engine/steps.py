"""The step models of an SOP document, one per action: each validates its own fields."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import Duration, parse_duration

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

    exists: str | None = None
    missing: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Probe:
        if (self.exists is None) == (self.missing is None):
            raise ValueError("a page probe has exactly one of 'exists' or 'missing'")
        return self

    @property
    def selector(self) -> str:
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
    """Fields every step has. Subclasses add the action's own fields."""

    browser: ClassVar[bool] = False  # acts on a browser tab
    own_fields: ClassVar[tuple[str, ...]] = ()  # templated fields the action reads

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

    def templated(self) -> dict[str, Any]:
        """The action's own fields that are rendered with the step's inputs before it runs."""
        return {name: getattr(self, name) for name in self.own_fields}

    def children(self) -> list[list[Step]]:
        return []


# browser actions ---------------------------------------------------------------------------


class BrowserStep(Step):
    browser: ClassVar[bool] = True


class SelectorStep(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector",)
    selector: str


class Navigate(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("url",)
    action: Literal["navigate"]
    url: str
    wait_until: Literal["load", "domcontentloaded", "networkidle", "commit"] = "load"


class Click(SelectorStep):
    action: Literal["click", "dblclick", "hover"]
    button: Literal["left", "right", "middle"] = "left"


class Fill(SelectorStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "value")
    action: Literal["fill"]
    value: str | int | float


class TypeText(SelectorStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "value")
    action: Literal["type"]
    value: str | int | float
    delay: Duration = 0.0  # between key presses


class Press(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "key")
    action: Literal["press"]
    selector: str | None = None  # the focused element when left out
    key: str


class Select(SelectorStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "value", "label")
    action: Literal["select"]
    value: str | list[str] | None = None
    label: str | list[str] | None = None

    @model_validator(mode="after")
    def _value_or_label(self) -> Select:
        if (self.value is None) == (self.label is None):
            raise ValueError("select takes exactly one of 'value' or 'label'")
        return self


class Check(SelectorStep):
    action: Literal["check", "uncheck"]


class Upload(SelectorStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "files")
    action: Literal["upload"]
    files: str | list[str]


class Wait(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "url")
    action: Literal["wait"]
    selector: str | None = None
    state: Literal["attached", "detached", "visible", "hidden"] = "visible"
    url: str | None = None
    load_state: Literal["load", "domcontentloaded", "networkidle"] | None = None
    duration: Duration | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Wait:
        given = [f for f in ("selector", "url", "load_state", "duration") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("wait takes exactly one of 'selector', 'url', 'load_state' or 'duration'")
        return self


class Extract(SelectorStep):
    action: Literal["extract"]
    attribute: str | None = None  # for the `attr` and `attrs` results
    optional: bool = False  # read what is there now instead of waiting for a first match


class Assert(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "text", "contains", "value", "url")
    action: Literal["assert"]
    selector: str | None = None
    text: str | None = None
    contains: str | None = None
    count: int | None = None
    visible: bool | None = None
    value: str | None = None
    that: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_check(self) -> Assert:
        on_selector = [f for f in ("text", "contains", "count", "visible", "value") if getattr(self, f) is not None]
        if self.that is not None:
            if self.selector or self.url or on_selector:
                raise ValueError("'that' stands alone: no selector, url or element check beside it")
        elif self.url is not None:
            if self.selector or on_selector:
                raise ValueError("'url' stands alone: no selector or element check beside it")
        elif self.selector is None:
            raise ValueError("assert needs 'selector' (with text, contains, count, visible or value), 'url', or 'that'")
        elif len(on_selector) != 1:
            raise ValueError("assert on a selector takes exactly one of text, contains, count, visible, value")
        return self

    @property
    def browser_free(self) -> bool:
        return self.that is not None


class Screenshot(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "file")
    action: Literal["screenshot"]
    selector: str | None = None
    full_page: bool = False
    file: str | None = None  # name inside the run's artifact folder


class Scroll(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector",)
    action: Literal["scroll"]
    selector: str | None = None  # scroll this element into view
    to: Literal["top", "bottom"] | None = None
    by: int | None = None  # pixels down (negative: up)

    @model_validator(mode="after")
    def _one_target(self) -> Scroll:
        if sum(v is not None for v in (self.selector, self.to, self.by)) != 1:
            raise ValueError("scroll takes exactly one of 'selector', 'to' or 'by'")
        return self


class Evaluate(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("script", "arg")
    action: Literal["evaluate"]
    script: str
    arg: Any = None


class CloseTab(BrowserStep):
    action: Literal["close_tab"]


class Download(BrowserStep):
    own_fields: ClassVar[tuple[str, ...]] = ("selector", "url", "file")
    action: Literal["download"]
    selector: str | None = None  # clicked: the download it starts is saved
    url: str | None = None  # fetched with the tab's cookies, through the egress policy
    file: str | None = None  # name inside the run's artifacts (default: the suggested name)
    max_size: int = Field(100 * 1024 * 1024, ge=1)  # bytes

    @model_validator(mode="after")
    def _one_source(self) -> Download:
        if (self.selector is None) == (self.url is None):
            raise ValueError("download takes exactly one of 'selector' or 'url'")
        return self


class ReadFile(Step):
    own_fields: ClassVar[tuple[str, ...]] = ("path",)
    action: Literal["read_file"]
    path: str  # inside the run's artifacts folder
    format: Literal["csv", "json", "text"] = "text"
    max_size: int = Field(10 * 1024 * 1024, ge=1)  # bytes


# data and other actions ----------------------------------------------------------------------


class Set(Step):
    own_fields: ClassVar[tuple[str, ...]] = ("values",)
    action: Literal["set"]
    values: dict[str, Any]

    @model_validator(mode="after")
    def _outputs_default_to_values(self) -> Set:
        if not self.outputs:
            self.outputs = {name: name for name in self.values}
        return self


class Http(Step):
    own_fields: ClassVar[tuple[str, ...]] = ("url", "headers", "params", "json_body", "body")
    action: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = {}
    params: dict[str, Any] = {}
    json_body: Any = Field(None, alias="json")
    body: str | None = None
    expect_status: int | list[int] | None = None


class Log(Step):
    own_fields: ClassVar[tuple[str, ...]] = ("message",)
    action: Literal["log"]
    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


def _duration_or_template(value: Any) -> Any:
    if isinstance(value, str) and "{{" in value:
        return value  # rendered, then read as a duration, when the step runs
    return parse_duration(value)


class Sleep(Step):
    own_fields: ClassVar[tuple[str, ...]] = ("duration",)
    action: Literal["sleep"]
    duration: Annotated[float | str, BeforeValidator(_duration_or_template)]


# steps that wait for a person -------------------------------------------------------------


class FormField(Strict):
    type: Literal["string", "integer", "number", "boolean"] = "string"
    label: str | None = None
    secret: bool = False
    default: Any = None


class Input(Step):
    """Waits for a person to fill a form; the values become the step's outputs."""

    own_fields: ClassVar[tuple[str, ...]] = ("message",)
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

    own_fields: ClassVar[tuple[str, ...]] = ("message",)
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
    own_fields: ClassVar[tuple[str, ...]] = ("for_each", "repeat", "for_each_element")
    action: Literal["loop"]
    for_each: str | list[Any] | None = None
    repeat: int | str | None = None
    for_each_element: str | None = None
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

    def children(self) -> list[list[Step]]:
        return [self.steps]


class If(Step):
    action: Literal["if"]
    condition: Condition
    then: list[Any] = Field(min_length=1)
    else_: list[Any] = Field([], alias="else")

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
