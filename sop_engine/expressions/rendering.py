"""Rendering templates and evaluating conditions: a lone `{{ expr }}` gives JSON data, any other template text."""

from __future__ import annotations

from typing import Any

from jinja2 import Undefined

from .budget import Budget, drop_budget, fresh_budget
from .compiler import compiled, is_template
from .deadline import within_deadline
from .errors import ExpressionError, first_line, shown
from .json_values import to_json_value
from .sandbox import LONE

TEMPLATE_MAX_SECONDS = 1.0  # a template that does more than read names is stopped after this long (read at each render)


def _describe(exc: BaseException) -> str:
    text = first_line(exc)
    if "is undefined" in text:
        return f"{text} (declare it in the step's inputs, and make sure it has a value)"
    return text


def _render_text(template: Any, variables: dict[str, Any], budget: Budget) -> str:
    chunks, written = [], 0
    for chunk in template.generate(variables):
        written += len(chunk)
        if written > budget.max_output:
            raise ExpressionError(f"template output is over {budget.max_output} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _render_one(source: str, variables: dict[str, Any]) -> Any:
    template, watched = compiled(source)
    budget = fresh_budget()
    try:
        if LONE.match(source):
            result = (
                within_deadline(lambda: template(**variables), TEMPLATE_MAX_SECONDS, "template")
                if watched
                else template(**variables)
            )
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            return to_json_value(result, budget.max_output)
        if watched:
            return within_deadline(lambda: _render_text(template, variables, budget), TEMPLATE_MAX_SECONDS, "template")
        return _render_text(template, variables, budget)
    except Exception as exc:  # jinja raises many types; all mean "this template failed"
        raise ExpressionError(f"template {shown(source)} failed: {_describe(exc)}") from None
    finally:
        drop_budget()


def render(value: Any, variables: dict[str, Any]) -> Any:
    """Render every template in a value; non-template values come back as they are. A lone `{{ expr }}` gives
    its value as JSON data (see to_json_value); any other template gives text."""
    if isinstance(value, str):
        return _render_one(value, variables) if is_template(value) else value
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    return value


def evaluate_condition(condition: str | bool, variables: dict[str, Any]) -> bool:
    """A condition is a template (`"{{ n > 2 }}"`) or a bare expression (`"n > 2"`)."""
    if isinstance(condition, bool):
        return condition
    result = render(condition if is_template(condition) else "{{ " + condition + " }}", variables)
    if isinstance(result, str):
        return result.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(result)
