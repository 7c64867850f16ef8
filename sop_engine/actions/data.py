"""Actions that touch no page: set, log, sleep."""

from __future__ import annotations

import asyncio
from typing import Any

from ..steps import Log, Set, Sleep
from .context import ActionContext


async def set_values(step: Set, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    return dict(fields["values"])


async def log(step: Log, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    message = str(fields["message"])
    await ctx.log(message, step.level)
    return {"message": message}


async def sleep(step: Sleep, fields: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    await asyncio.sleep(step.duration)
    return {}


EXECUTORS = {"set": set_values, "log": log, "sleep": sleep}
