"""Templates: sandboxed Jinja2, undefined names are errors, a lone `{{ expr }}` keeps its native type."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_env.filters["fromjson"] = json.loads
_LONE = re.compile(r"^\s*\{\{((?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)
_BUILTINS = frozenset(_env.globals)


class ExpressionError(ValueError):
    """A template that does not parse, or that fails when rendered."""


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Any:
    lone = _LONE.match(source)
    try:
        if lone:
            return _env.compile_expression(lone.group(1), undefined_to_none=False)
        return _env.from_string(source)
    except TemplateError as exc:
        raise ExpressionError(f"template {source!r} does not parse: {_first_line(exc)}") from None


@lru_cache(maxsize=4096)
def _names(source: str, bare: bool) -> frozenset[str]:
    text = "{{ " + source + " }}" if bare else source
    try:
        found = meta.find_undeclared_variables(_env.parse(text))
    except TemplateError as exc:
        raise ExpressionError(f"template {source!r} does not parse: {_first_line(exc)}") from None
    return frozenset(found - _BUILTINS)


def names_in(value: Any) -> set[str]:
    """Every variable a value's templates read, looking into nested lists and dicts."""
    if isinstance(value, str):
        return set(_names(value, False)) if is_template(value) else set()
    if isinstance(value, dict):
        return set().union(*(names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(names_in(v) for v in value)) if value else set()
    return set()


def names_in_condition(condition: Any) -> set[str]:
    if isinstance(condition, str):
        return names_in(condition) if is_template(condition) else set(_names(condition, True))
    return set()


def _describe(exc: Exception) -> str:
    text = _first_line(exc)
    if "is undefined" in text:
        return f"{text} (declare it in the step's inputs, and make sure it has a value)"
    return text


def render(value: Any, variables: dict[str, Any]) -> Any:
    """Render every template in a value; non-template values come back as they are."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        compiled = _compiled(value)
        try:
            if _LONE.match(value):
                result = compiled(**variables)
                if isinstance(result, Undefined):
                    result._fail_with_undefined_error()
                return result
            return compiled.render(variables)
        except Exception as exc:  # jinja raises many types; all mean "this template failed"
            raise ExpressionError(f"template {value!r} failed: {_describe(exc)}") from None
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
