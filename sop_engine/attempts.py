"""One leaf step's attempts: render, call the executor under its timeout and retry policy, map outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import tenacity
from playwright.async_api import Page

from .actions import EXECUTORS
from .control import Waiting
from .durations import format_duration
from .errors import BROWSER_GONE, ErrorKind, StepError, is_retryable
from .expressions import ExpressionError, render
from .retries import RetryPolicy
from .steps import HUMAN_ACTIONS, Step

if TYPE_CHECKING:
    from .runner import Execution


def file_safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in key)


@dataclass
class StepContext:
    """What one step may use while it runs (see actions.context.ActionContext)."""

    execution: Execution
    key: str
    tab: str
    timeout: float
    variables: dict[str, Any]
    base_dir: Path
    local_files: bool = True
    artifacts: list[str] = field(default_factory=list)

    async def page(self) -> Page:
        return await self.execution.page(self.tab)

    def artifact(self, name: str) -> Path:
        folder = self.execution.artifacts_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{file_safe(self.key)}-{file_safe(name)}"
        self.artifacts.append(f"{self.execution.run_id}/{path.name}")
        return path

    def http_client(self) -> httpx.AsyncClient:
        return self.execution.http_client()

    async def log(self, message: str, level: str = "info") -> None:
        await self.execution.emit("log", {"key": self.key, "level": level, "message": message})

    async def ask(self, waiting: Waiting) -> dict[str, Any]:
        return await self.execution.ask(waiting)


def render_fields(value: Any, variables: dict[str, Any]) -> Any:
    try:
        return render(value, variables)
    except ExpressionError as exc:
        raise StepError(ErrorKind.TEMPLATE, str(exc)) from None


def map_outputs(step: Step, result: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The step's declared outputs, read off its result."""
    outputs: dict[str, Any] = {}
    for name, source in step.outputs.items():
        if "{" in source:
            outputs[name] = render_fields(source, {**variables, "result": result})
        elif source in result:
            outputs[name] = result[source]
        else:
            fields = ", ".join(sorted(result)) or "none"
            raise StepError(
                ErrorKind.ACTION,
                f"output '{name}' reads '{source}', which the {step.action} result does not have (it has: {fields})",
            )
    return outputs


OnRetry = Callable[[int, StepError | None, float], Awaitable[None]]


async def attempt_step(
    step: Step,
    fields: dict[str, Any],
    ctx: StepContext,
    policy: RetryPolicy,
    limit: asyncio.Semaphore,
    on_retry: OnRetry,
) -> dict[str, Any]:
    """Runs the executor until it succeeds, fails for good, or runs out of attempts; returns its result."""
    executor = EXECUTORS[step.action]

    async def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        await on_retry(state.attempt_number, exc if isinstance(exc, StepError) else None, state.upcoming_sleep)

    def stop(state: tenacity.RetryCallState) -> bool:
        # the browser going away is the machine's fault, not the step's: it gets one more attempt
        exc = state.outcome.exception() if state.outcome else None
        extra = 1 if isinstance(exc, StepError) and exc.kind == ErrorKind.BROWSER else 0
        return state.attempt_number >= policy.attempts + extra

    retrying = tenacity.AsyncRetrying(
        stop=stop,
        wait=policy.wait(),
        retry=tenacity.retry_if_exception(is_retryable),
        reraise=True,
        before_sleep=before_sleep,
    )
    async for attempt in retrying:
        with attempt:
            async with limit:
                return await _one_attempt(executor, step, fields, ctx)
    raise AssertionError("unreachable: tenacity reraises the last error")


async def _one_attempt(executor: Any, step: Step, fields: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    # a person answering a form has no deadline unless the step sets one
    deadline = None if step.action in HUMAN_ACTIONS and step.timeout is None else ctx.timeout + 1.0
    try:
        # Playwright gets the step's timeout; this one catches whatever does not honour it
        async with asyncio.timeout(deadline):
            return await executor(step, fields, ctx)
    except TimeoutError:
        raise StepError(
            ErrorKind.TIMEOUT,
            f"{step.action} did not finish within {format_duration(ctx.timeout)}",
            url=ctx.execution.tab_url(step.tab),
        ) from None
    except (StepError, asyncio.CancelledError):
        raise
    except Exception as exc:  # an executor's unexpected error still fails only its step
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if any(mark in text for mark in BROWSER_GONE):
            raise StepError(ErrorKind.BROWSER, f"{step.action}: the browser went away ({text})") from None
        raise StepError(ErrorKind.ACTION, f"{step.action} failed: {type(exc).__name__}: {text}") from None
