"""Rendering templates and evaluating conditions: a lone `{{ expr }}` gives JSON data, any other template text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .budget import drop_budget, fresh_budget
from .deadline import within_deadline
from .errors import ExpressionError, first_line, shown
from .json_values import to_json_value
from .marks import is_template

if TYPE_CHECKING:
    from .budget import Budget

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
    from jinja2 import Undefined  # Jinja2 loads with the first template rendered

    from .compiler import compiled
    from .sandbox import LONE

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


def is_light(value: Any, condition: bool = False) -> bool:
    """True when rendering `value` only reads names (`{{ x }}`, `{{ a.b }}`): cheap enough for an event loop.
    A template with a loop, filter, call, operator or test may take up to TEMPLATE_MAX_SECONDS, and is
    rendered in a thread by async callers. `condition`: a bare string is an expression, as in conditions.
    A template that does not parse counts as light: rendering it fails at once."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            source = item if is_template(item) else ("{{ " + item + " }}" if condition else None)
            if source is None:
                continue
            from .compiler import compiled

            try:
                if compiled(source)[1]:
                    return False
            except ExpressionError:
                continue
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True
