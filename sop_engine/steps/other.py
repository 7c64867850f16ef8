"""The models of the actions that touch no page: data, HTTP, files, logs, sleeps, and steps that wait for a
person."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..durations import Duration
from ..field_types import Tpl
from .base import Step, Strict


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
