"""One leaf step's attempts: render, call the executor under its timeout and retry policy, map outputs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity
from pydantic import ValidationError

from .actions import EXECUTORS
from .artifacts import Artifacts
from .control import Waiting
from .durations import format_duration
from .errors import BROWSER_GONE, ErrorKind, StepError, is_retryable
from .events import StoreUnavailable
from .expressions import ExpressionError, is_light, render
from .locators import TAG, located
from .policy import NetworkPolicy
from .retries import RetryPolicy
from .steps import HUMAN_ACTIONS, Step
from .text import clean

if TYPE_CHECKING:
    import httpx
    from playwright.async_api import Locator, Page

    from .runner import Execution

# seconds an executor may run past its timeout: Playwright's own timeout error, and what the executor reads to
# explain it (the matches, a select's options), say more than this deadline's bare "did not finish"
GRACE = 3.0
MASK_COLOR = "#FF00FF"  # what covers a secret in a picture (Playwright's default mask colour)

T = TypeVar("T")


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
    policy: NetworkPolicy = field(default_factory=NetworkPolicy.for_cli)  # where the step may go
    artifacts: list[str] = field(default_factory=list)

    async def page(self, reopen: bool = False) -> Page:
        return await self.execution.page(self.tab, reopen)

    async def secret_locators(self, page: Page) -> list[Locator]:
        """What a picture of `page` must cover (`page.screenshot(mask=...)`): the fields filled with a secret,
        and the elements whose text shows one."""
        return self.execution.secret_locators(self.tab, page)

    @property
    def run_id(self) -> str:
        return self.execution.run_id

    @property
    def artifact_store(self) -> Artifacts:
        return self.execution.artifact_store

    async def save_artifact(self, name: str, content: bytes | Path) -> str:
        """Keeps `content` (bytes, or a local file's) as one of the run's files, named after the step; gives back
        where it is now. It is recorded with the step only once it is stored."""
        named = f"{file_safe(self.key)}-{file_safe(name)}"
        where, size = await asyncio.to_thread(self._keep, named, content)
        self.artifacts.append(f"{self.run_id}/{named}")
        self.execution.cost.artifact(size)
        return where

    def _keep(self, named: str, content: bytes | Path) -> tuple[str, int]:
        """Where the file is kept, and its size (it counts in the run's cost)."""
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        return self.artifact_store.keep(self.run_id, named, content), size

    async def artifact_copy(self, name: str) -> Path:
        return await self.execution.artifact_copy(name)

    async def adopt_tab(self, name: str, page: Page) -> None:
        await self.execution.browser.adopt(name, page)

    async def close_tab(self, name: str) -> bool:
        return await self.execution.browser.close_tab(name)

    def http_client(self) -> httpx.AsyncClient:
        return self.execution.http_client()

    async def log(self, message: str, level: str = "info") -> None:
        await self.execution.emit("log", {"key": self.key, "level": level, "message": message})

    async def ask(self, waiting: Waiting) -> dict[str, Any]:
        return await self.execution.ask(waiting)


async def off_the_loop(template: Any, work: Callable[[], T], condition: bool = False) -> T:
    """Runs `work`, which renders `template`: here when the template only reads names, else in a thread, so
    that templates doing real work (each bounded by its own deadline) never hold the event loop, however
    many of them runs render at once."""
    return work() if is_light(template, condition) else await asyncio.to_thread(work)


def render_fields(value: Any, variables: dict[str, Any]) -> Any:
    try:
        return render(value, variables)
    except ExpressionError as exc:
        raise StepError(ErrorKind.TEMPLATE, str(exc)) from None


def checked_fields(step: Step, template: dict[str, Any], fields: dict[str, Any]) -> tuple[Step, dict[str, Any]]:
    """The step with its rendered fields, and those fields, each checked against its type: a template that gave
    what its field does not take fails the step with a TEMPLATE error naming the field and what it gave."""
    try:
        rendered = step.rendered(fields)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = located(err["loc"])
            written = _at(template, err["loc"])
            gave = f" (the template {_short(written)} gave {_short(err['input'])})" if written != err["input"] else ""
            problems.append(f"field '{field}'{gave}: {err['msg'].removeprefix('Value error, ')}")
        raise StepError(ErrorKind.TEMPLATE, f"{step.action}: " + "; ".join(problems)) from None
    return rendered, {name: getattr(rendered, name) for name in fields}


def _at(template: Any, loc: tuple[Any, ...]) -> Any:
    """What the document wrote at a field's place (`locator.nth`), as deep as it goes."""
    for part in loc:
        if isinstance(template, dict | list) and _has(template, part):
            template = template[part]
        elif not str(part).startswith(TAG):
            break
    return template


def _has(container: dict[Any, Any] | list[Any], part: Any) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(part, int) and 0 <= part < len(container)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def not_json(value: Any) -> str | None:
    """What keeps a value from being JSON ("a range", "holds a function", "nan"), or None when it is."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple | dict):
        keys = [k for k in value if not isinstance(k, str | int | float | bool)] if isinstance(value, dict) else []
        if keys:
            return f"holds a {type(keys[0]).__name__} key"
        for item in value.values() if isinstance(value, dict) else value:
            problem = not_json(item)
            if problem is not None:
                return problem if problem.startswith("holds ") else f"holds {problem}"
        return None
    return f"a {type(value).__name__}"


def check_json(what: str, value: Any) -> Any:
    """The value, when it is JSON (it is stored and sent); a TEMPLATE failure when it is not."""
    problem = not_json(value)
    if problem is not None:
        verb = "" if problem.startswith("holds ") else "is "
        raise StepError(ErrorKind.TEMPLATE, f"{what} {verb}{problem}, not a JSON value")
    return value


def map_outputs(step: Step, result: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    """The step's declared outputs, read off its result; each must be a JSON value."""
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
        check_json(f"output {name!r}", outputs[name])
    return outputs


def clean_error(exc: StepError) -> StepError:
    """The error with what it quotes from the page made valid text (a lone surrogate cannot be stored or sent)."""
    for name in ("message", "selector", "url", "expected", "found"):
        setattr(exc, name, clean(getattr(exc, name)))
    exc.args = (exc.message,)
    return exc


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
                # through the breaker of the host it goes to, if it goes to one
                breakers = ctx.execution.runner.breakers
                return await breakers.guard(step, fields, ctx, lambda: _one_attempt(executor, step, fields, ctx))
    raise AssertionError("unreachable: tenacity reraises the last error")


async def _one_attempt(executor: Any, step: Step, fields: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    # a person answering a form has no deadline unless the step sets one
    deadline = None if step.action in HUMAN_ACTIONS and step.timeout is None else ctx.timeout + GRACE
    try:
        # Playwright gets the step's timeout; this one catches whatever does not honour it
        async with asyncio.timeout(deadline):
            acting = (
                executor(step, fields, ctx) if step.opens_tab is None else _opening_tab(executor, step, fields, ctx)
            )
            # in a task of its own: Playwright reads the caller's stack on every call (the name of each
            # frame's function, from its locals), and the runner's is deep; a task's stack starts here
            return clean(await asyncio.ensure_future(acting))  # what the page gave back, as valid text
    except TimeoutError:
        raise StepError(
            ErrorKind.TIMEOUT,
            f"{step.action} did not finish within {format_duration(ctx.timeout)}",
            url=ctx.execution.tab_url(step.tab),
        ) from None
    except StepError as exc:
        raise clean_error(exc) from None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an executor's unexpected error still fails only its step
        if isinstance(exc, StoreUnavailable):  # the database, not the step: the run stops as it is
            raise
        text = clean(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if any(mark in text for mark in BROWSER_GONE):
            raise StepError(ErrorKind.BROWSER, f"{step.action}: the browser went away ({text})") from None
        raise StepError(ErrorKind.ACTION, f"{step.action} failed: {type(exc).__name__}: {text}") from None


def _opening_tab(executor: Any, step: Step, fields: dict[str, Any], ctx: Any) -> Awaitable[dict[str, Any]]:
    from .actions.pages import opening_tab  # with the browser's actions: Playwright loads when a run needs it

    return opening_tab(executor, step, fields, ctx)
