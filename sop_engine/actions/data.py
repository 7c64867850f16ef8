"""Actions that touch no page: set, log, sleep."""

from __future__ import annotations

import asyncio
from typing import Any

from ..durations import parse_duration
from ..errors import ErrorKind, StepError
from ..steps import Log, Set, Sleep
from .context import ActionContext


async def set_values(step: Set, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    return dict(fields["values"])


async def log(step: Log, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    message = str(fields["message"])
    await ctx.log(message, step.level)
    return {"message": message}


async def sleep(step: Sleep, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    try:
        seconds = parse_duration(fields["duration"])
    except ValueError as exc:
        raise StepError(ErrorKind.TEMPLATE, f"sleep: {exc}") from None
    await asyncio.sleep(seconds)
    return {"seconds": seconds}


EXECUTORS = {"set": set_values, "log": log, "sleep": sleep}
