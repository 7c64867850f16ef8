"""Field types that accept a template where the value varies: `count: "{{ n }}"` is kept as a template when the
document is loaded, and what it renders to is checked against the field's type when the step runs."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import ValidationInfo, ValidatorFunctionWrapHandler, WrapValidator

from .expressions.marks import is_template

RENDERED = "rendered"  # the validation context of a step's fields after rendering: no template is left


def _value_or_template(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    if isinstance(value, str) and is_template(value) and not (info.context and info.context.get(RENDERED)):
        return value  # rendered, then checked, when the step runs
    return handler(value)


T = TypeVar("T")
Tpl = Annotated[T, WrapValidator(_value_or_template)]  # Tpl[int]: an integer, or a template giving one


def rendered_context() -> dict[str, Any]:
    return {RENDERED: True}
