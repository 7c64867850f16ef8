"""What every step has: its id, inputs and outputs, condition, tab, timeout, retry and error policy, and the
rule that makes every field of an action a possible template."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..durations import Duration
from ..field_types import Tpl, rendered_context
from ..locators import Target

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# escalate is pause by another name (the README's); rollback runs the compensations of the steps that completed
ErrorPolicy = Literal["fail", "continue", "pause", "escalate", "rollback"]
COMPENSATIONS_MAX = 20  # steps in one step's `compensate`


class Strict(BaseModel):
    # a number where text is wanted is its text: `value: 555`, or `message: "{{ index }}"` once rendered;
    # defer_build: each step model is built once, into the document's model, not first on its own (35 ms)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, coerce_numbers_to_str=True, defer_build=True)


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

    @model_validator(mode="after")
    def _prompt_when_accepted(self) -> DialogAnswer:
        if self.prompt is not None and not self.accept:
            raise ValueError("a prompt is typed into a dialog that is accepted: {accept: true, prompt: text}")
        return self


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
    timeout: Tpl[Duration] | None = None  # a template is rendered with the action's own fields
    retry: RetrySpec | None = None
    on_error: ErrorPolicy | None = None
    pause_before: bool = False
    idempotent: bool = True
    resume_from: str | None = None
    dialogs: DialogPolicy | None = None  # how dialogs on the step's tab are answered while it runs
    opens_tab: str | None = Field(None, pattern=NAME_PATTERN)  # the tab the action opens gets this name
    # steps that undo this one in a rollback (sop_engine.rollback); parsed by the document like any steps
    compensate: list[Any] = Field([], max_length=COMPENSATIONS_MAX)

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

    @model_validator(mode="after")
    def _opens_tab_on_a_page(self) -> Step:
        if self.opens_tab is not None and not self.browser:
            raise ValueError(f"'opens_tab' goes on an action in a page; {self.action} opens none")
        if self.opens_tab is not None and self.opens_tab == self.tab:
            raise ValueError(f"'opens_tab' names a new tab, not the step's own ({self.tab!r})")
        return self

    @classmethod
    def template_fields(cls) -> tuple[str, ...]:
        """The action's own fields that are rendered before it runs: all but the shape fields."""
        found = cls.__dict__.get("_template_fields")
        if found is None:
            own = tuple(n for n in cls.model_fields if n not in Step.model_fields and n not in cls.shape_fields)
            found = (*own, "timeout")
            cls._template_fields = found  # type: ignore[attr-defined]
        return found

    def templated(self) -> dict[str, Any]:
        """The action's own fields as written (a locator as a mapping), to be rendered with the step's inputs."""
        return {name: as_written(getattr(self, name)) for name in self.template_fields()}

    def rendered(self, fields: dict[str, Any]) -> Step:
        """This step with its rendered fields, each checked against its type (a ValidationError says which is
        wrong): what a template gave must be what the field takes, not another template."""
        data = {name: getattr(self, name) for name in self.model_fields_set}
        texts = self.text_fields()
        data.update({k: str(v) if k in texts and isinstance(v, bool) else v for k, v in fields.items()})
        return type(self).model_validate(data, context=rendered_context())

    @classmethod
    def text_fields(cls) -> frozenset[str]:
        """The fields that take text only: a true/false a template gives there is its text, as inside a longer
        text (`"{{ ok }}"` gives "True", like `"ok: {{ ok }}"` gives "ok: True")."""
        found = cls.__dict__.get("_text_fields")
        if found is None:
            found = frozenset(n for n, f in cls.model_fields.items() if _is_text(f.annotation))
            cls._text_fields = found  # type: ignore[attr-defined]
        return found

    def children(self) -> list[list[Step]]:
        return []


def _is_text(annotation: Any) -> bool:
    """`str` or `str | None`."""
    if annotation is str:
        return True
    return get_origin(annotation) in (Union, UnionType) and set(get_args(annotation)) == {str, type(None)}


def as_written(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True, warnings=False)  # a field may hold its template
    if isinstance(value, list):
        return [as_written(v) for v in value]
    return value
