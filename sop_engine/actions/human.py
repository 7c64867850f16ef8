"""Steps that wait for a person: a form to fill (input), or a yes/no (approval)."""

from __future__ import annotations

from typing import Any

from ..control import Waiting
from ..document import fits_type
from ..errors import ErrorKind, StepError
from ..steps import Approval, Input
from .context import ActionContext


def check_form_values(step: Input, values: dict[str, Any]) -> list[str]:
    """Problems with a person's answer to an input step; empty when it fits."""
    problems = [f"'{name}' is not a field of this form" for name in values if name not in step.fields]
    for name, spec in step.fields.items():
        value = values.get(name, spec.default)
        if value is None:
            problems.append(f"'{name}' is required")
        elif not fits_type(value, spec.type):
            problems.append(f"'{name}' must be {spec.type}")
    return problems


async def ask_input(step: Input, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    form = {"message": f["message"], "fields": {n: spec.model_dump() for n, spec in step.fields.items()}}
    answer = await ctx.ask(Waiting(f"waiting for input on {ctx.key}", ctx.key, "input", form))
    values = answer.get("values", {})
    return {name: values.get(name, spec.default) for name, spec in step.fields.items()}


async def ask_approval(step: Approval, f: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    form = {"message": f["message"], "fields": {"approved": {"type": "boolean"}, "comment": {"type": "string"}}}
    answer = await ctx.ask(Waiting(f"waiting for approval on {ctx.key}", ctx.key, "approval", form))
    values = answer.get("values", {})
    if not values.get("approved"):
        comment = values.get("comment") or "no reason given"
        raise StepError(ErrorKind.ASSERTION, f"rejected by a person: {comment}", expected="approval", found="rejected")
    return {"approved": True, "comment": values.get("comment")}


EXECUTORS = {"input": ask_input, "approval": ask_approval}
