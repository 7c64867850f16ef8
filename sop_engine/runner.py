"""The one async orchestrator: asks the pure core what to do, awaits executors, persists, emits."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tenacity
from playwright.async_api import BrowserContext, Page

from .actions import EXECUTORS
from .browser import BrowserHost
from .document import LoadedSop
from .durations import format_duration
from .errors import ErrorKind, StepError, is_retryable
from .events import Event, EventSink, utcnow
from .expressions import ExpressionError, evaluate_condition, render
from .graph import Graph, build_graph, step_outputs
from .masking import MASK, Masker
from .retries import RetryPolicy
from .states import RunStatus, StepStatus
from .steps import Condition, If, Loop, Probe, Step, uses_browser
from .store import Store, data_dir
from .tables import RunRow


class RunFailed(Exception):
    """Ends the run: a step failed under on_error=fail."""


@dataclass
class RunOutcome:
    run_id: str
    status: RunStatus
    outputs: dict[str, Any]
    error: str | None


def artifacts_root() -> Path:
    return data_dir() / "artifacts"


def _file_safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


class Runner:
    """Runs SOP documents; one Runner (and one browser) serves many runs."""

    def __init__(self, store: Store, browser: BrowserHost, sinks: Iterable[EventSink] = ()) -> None:
        self.store = store
        self.browser = browser
        self.sinks = list(sinks)

    def create_run(self, loaded: LoadedSop, inputs: dict[str, Any], priority: int = 1) -> RunRow:
        document = self.store.save_document(loaded)
        masker = Masker([inputs.get(n) for n in loaded.sop.secret_inputs])
        shown = {n: MASK if n in loaded.sop.secret_inputs else masker(v) for n, v in inputs.items()}
        run = self.store.create_run(document, shown, RunStatus.QUEUED.value, priority)
        self.store.record(
            Event(run.id, 1, "run.created", {"status": RunStatus.QUEUED.value, "sop_id": run.sop_id, "inputs": shown})
        )
        return run

    async def execute(self, run_id: str, loaded: LoadedSop, inputs: dict[str, Any]) -> RunOutcome:
        return await Execution(self, run_id, loaded, inputs).run()


@dataclass
class StepContext:
    """What one attempt of one step may use (see actions.context.ActionContext)."""

    execution: Execution
    key: str
    tab: str
    timeout: float
    variables: dict[str, Any]
    base_dir: Path
    artifacts: list[str] = field(default_factory=list)

    async def page(self) -> Page:
        return await self.execution.page(self.tab)

    def artifact(self, name: str) -> Path:
        folder = self.execution.artifacts_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_file_safe(self.key)}-{_file_safe(name)}"
        self.artifacts.append(f"{self.execution.run_id}/{path.name}")
        return path

    def http_client(self) -> httpx.AsyncClient:
        return self.execution.http_client()

    async def log(self, message: str, level: str = "info") -> None:
        await self.execution.emit("log", {"key": self.key, "level": level, "message": message})


class Execution:
    """One run of one document: its variables, its browser context, its step statuses."""

    def __init__(self, runner: Runner, run_id: str, loaded: LoadedSop, inputs: dict[str, Any]) -> None:
        self.runner = runner
        self.store = runner.store
        self.run_id = run_id
        self.loaded = loaded
        self.sop = loaded.sop
        self.inputs = inputs
        self.secret_names = self.sop.secret_inputs
        self.mask = Masker([inputs.get(n) for n in self.secret_names])
        self.seq = self.store.last_seq(run_id)
        self.limit = asyncio.Semaphore(self.sop.max_parallel)
        self.artifacts_dir = artifacts_root() / run_id
        self.base_dir = loaded.base_dir or Path.cwd()
        self._graphs: dict[int, Graph] = {}
        self._context: BrowserContext | None = None
        self._tabs: dict[str, Page] = {}
        self._http: httpx.AsyncClient | None = None

    # I/O shared by the steps -----------------------------------------------------------------

    async def emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        run: dict[str, Any] | None = None,
        step: tuple[str, dict[str, Any]] | None = None,
        new_steps: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store a state change with its event in one transaction, then tell the sinks."""
        self.seq += 1
        event = Event(self.run_id, self.seq, type_, self.mask(data))
        self.store.record(
            event,
            run=self.mask(run) if run else None,
            step=(step[0], self.mask(step[1])) if step else None,
            new_steps=new_steps or (),
        )
        for sink in self.runner.sinks:
            await sink.emit(event)

    async def page(self, tab: str) -> Page:
        page = self._tabs.get(tab)
        if page is None or page.is_closed():
            if self._context is None:
                self._context = await self.runner.browser.new_context()
            page = await self._context.new_page()
            self._tabs[tab] = page
        return page

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=True)
        return self._http

    async def close(self) -> None:
        if self._context is not None:
            with contextlib.suppress(Exception):  # the browser may already be gone: nothing to release
                await self._context.close()
            self._context = None
        if self._http is not None:
            await self._http.aclose()

    # the run ---------------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        now = utcnow()
        await self.emit(
            "run.updated",
            {"status": RunStatus.RUNNING.value},
            run={"status": RunStatus.RUNNING.value, "started_at": now},
        )
        produced: dict[str, Any] = {}
        status, error = RunStatus.COMPLETED, None
        try:
            async with asyncio.timeout(self.sop.timeout):
                produced = await self.run_scope(self.sop.steps, ChainMap({}, self.inputs), "", None)
        except RunFailed as exc:
            status, error = RunStatus.FAILED, str(exc)
        except TimeoutError:
            status, error = RunStatus.FAILED, f"the run did not finish within {format_duration(self.sop.timeout or 0)}"
        except asyncio.CancelledError:
            status, error = RunStatus.CANCELLED, "cancelled"
            await self._finish(status, {}, error)
            raise
        finally:
            await self.close()
        scope = {**self.inputs, **produced}
        outputs = {name: scope.get(name) for name in self.sop.outputs}
        await self._finish(status, outputs, error)
        return RunOutcome(self.run_id, status, self.mask(outputs), self.mask(error))

    async def _finish(self, status: RunStatus, outputs: dict[str, Any], error: str | None) -> None:
        await self.emit(
            "run.updated",
            {"status": status.value, "outputs": outputs, "error": error},
            run={"status": status.value, "outputs": outputs, "error": error, "finished_at": utcnow()},
        )

    def graph(self, steps: list[Step]) -> Graph:
        graph = self._graphs.get(id(steps))
        if graph is None:
            graph = self._graphs[id(steps)] = build_graph(steps)
        return graph

    async def run_scope(
        self, steps: list[Step], env: ChainMap[str, Any], prefix: str, parent: str | None
    ) -> dict[str, Any]:
        """Run a list of sibling steps in dependency order; returns the outputs they produced."""
        graph = self.graph(steps)
        status = {s.id: StepStatus.PENDING for s in steps}
        local: dict[str, Any] = env.maps[0]
        rows = [
            {
                "key": prefix + s.id,
                "step_id": s.id,
                "parent_key": parent,
                "action": s.action,
                "status": StepStatus.PENDING.value,
            }
            for s in steps
        ]
        await self.emit("steps.added", {"parent": parent, "keys": [r["key"] for r in rows]}, new_steps=rows)
        running: dict[asyncio.Task[StepStatus], str] = {}
        try:
            while True:
                for sid in graph.blocked(status):
                    status[sid] = await self._block(graph, sid, prefix, status)
                ready = graph.ready(status)
                if not ready and not running:
                    return {n: local.get(n) for s in steps for n in step_outputs(s)}
                if self.sop.max_parallel == 1 and not running:
                    status[ready[0]] = StepStatus.RUNNING
                    status[ready[0]] = await self.run_step(graph.nodes[ready[0]].step, env, prefix)
                    continue
                for sid in ready:
                    status[sid] = StepStatus.RUNNING
                    running[asyncio.ensure_future(self.run_step(graph.nodes[sid].step, env, prefix))] = sid
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    status[running.pop(task)] = task.result()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _block(self, graph: Graph, sid: str, prefix: str, status: Mapping[str, StepStatus]) -> StepStatus:
        failed = sorted(d for d in graph.nodes[sid].needs if status[d] in (StepStatus.FAILED, StepStatus.BLOCKED))
        reason = f"needs {', '.join(prefix + d for d in failed)}, which did not complete"
        now = utcnow()
        await self.emit(
            "step.updated",
            {"key": prefix + sid, "status": "blocked", "reason": reason},
            step=(prefix + sid, {"status": "blocked", "reason": reason, "started_at": now, "finished_at": now}),
        )
        return StepStatus.BLOCKED

    # one step --------------------------------------------------------------------------------

    def _variables(self, step: Step, env: Mapping[str, Any]) -> dict[str, Any]:
        return {name: env.get(name) for name in step.inputs}

    def _shown_inputs(self, variables: dict[str, Any]) -> dict[str, Any]:
        return {n: MASK if n in self.secret_names else v for n, v in variables.items()}

    async def run_step(self, step: Step, env: ChainMap[str, Any], prefix: str) -> StepStatus:
        key = prefix + step.id
        variables = self._variables(step, env)
        try:
            if step.when is not None and not await self.condition(step.when, variables, step):
                await self._skip(step, env, key, f"'when' was false: {self._describe(step.when)}")
                return StepStatus.SKIPPED
        except StepError as exc:
            return await self._fail(step, key, exc, [])
        if isinstance(step, Loop):
            return await self.run_loop(step, env, key, variables)
        if isinstance(step, If):
            return await self.run_if(step, env, prefix, variables)
        return await self.run_leaf(step, env, key, variables)

    def _describe(self, condition: Condition) -> str:
        if isinstance(condition, Probe):
            return f"exists {condition.exists!r}" if condition.exists is not None else f"missing {condition.missing!r}"
        return str(condition)

    async def _skip(self, step: Step, env: ChainMap[str, Any], key: str, reason: str) -> None:
        for name in step_outputs(step):
            env.maps[0][name] = None  # a skipped step's outputs read as none
        now = utcnow()
        await self.emit(
            "step.updated",
            {"key": key, "status": "skipped", "reason": reason},
            step=(key, {"status": "skipped", "reason": reason, "started_at": now, "finished_at": now}),
        )

    async def _start(self, key: str, variables: dict[str, Any], attempt: int = 1) -> None:
        shown = self._shown_inputs(variables)
        await self.emit(
            "step.updated",
            {"key": key, "status": "running", "attempt": attempt, "inputs": shown},
            step=(key, {"status": "running", "attempts": attempt, "started_at": utcnow(), "inputs": shown}),
        )

    async def _complete(self, key: str, outputs: dict[str, Any], started: float, artifacts: list[str]) -> None:
        duration_ms = round((asyncio.get_running_loop().time() - started) * 1000, 1)
        values: dict[str, Any] = {"status": "completed", "finished_at": utcnow(), "outputs": outputs}
        if artifacts:
            values["artifacts"] = artifacts
        await self.emit(
            "step.updated",
            {"key": key, "status": "completed", "outputs": outputs, "duration_ms": duration_ms},
            step=(key, values),
        )

    async def _fail(self, step: Step, key: str, exc: StepError, artifacts: list[str]) -> StepStatus:
        error = exc.as_dict()
        await self.emit(
            "step.updated",
            {"key": key, "status": "failed", "error": error, "artifacts": artifacts},
            step=(key, {"status": "failed", "finished_at": utcnow(), "error": error, "artifacts": artifacts}),
        )
        policy = step.on_error or self.sop.defaults.on_error
        if policy == "continue":
            return StepStatus.FAILED
        message = f"step {key} failed: {exc.describe()}"
        if policy == "pause":
            message += " (on_error: pause waits for a person in the server; a headless run fails instead)"
        raise RunFailed(self.mask(message))

    async def run_leaf(self, step: Step, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        await self._start(key, variables)
        started = asyncio.get_running_loop().time()
        timeout = step.timeout or self.sop.defaults.timeout
        ctx = StepContext(self, key, step.tab, timeout, variables, self.base_dir)
        try:
            fields = self._render(step.templated(), variables)
            result = await self._attempts(step, key, fields, ctx)
            outputs = self._outputs(step, result, variables)
        except StepError as exc:
            if uses_browser(step):
                await self._failure_screenshot(ctx)
            return await self._fail(step, key, exc, ctx.artifacts)
        env.maps[0].update(outputs)
        await self._complete(key, outputs, started, ctx.artifacts)
        return StepStatus.COMPLETED

    def _render(self, value: Any, variables: dict[str, Any]) -> Any:
        try:
            return render(value, variables)
        except ExpressionError as exc:
            raise StepError(ErrorKind.TEMPLATE, str(exc)) from None

    async def _attempts(self, step: Step, key: str, fields: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        policy = RetryPolicy.from_spec(step.retry or self.sop.defaults.retry)
        executor = EXECUTORS[step.action]
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=policy.wait(),
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
            before_sleep=self._announce_retry(key),
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1:
                    await self.emit(
                        "step.updated",
                        {"key": key, "status": "running", "attempt": number},
                        step=(key, {"attempts": number}),
                    )
                async with self.limit:
                    return await self._attempt(executor, step, fields, ctx)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _announce_retry(self, key: str) -> Any:
        async def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            error = exc.as_dict() if isinstance(exc, StepError) else {"message": str(exc)}
            await self.emit(
                "step.retried",
                {"key": key, "attempt": state.attempt_number, "error": error, "wait_s": round(state.upcoming_sleep, 3)},
            )

        return before_sleep

    async def _attempt(self, executor: Any, step: Step, fields: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        try:
            # Playwright gets the step's timeout; this one catches whatever does not honour it
            async with asyncio.timeout(ctx.timeout + 1.0):
                return await executor(step, fields, ctx)
        except TimeoutError:
            raise StepError(
                ErrorKind.TIMEOUT,
                f"{step.action} did not finish within {format_duration(ctx.timeout)}",
                url=self._tab_url(step.tab),
            ) from None
        except (StepError, asyncio.CancelledError):
            raise
        except Exception as exc:  # an executor's unexpected error still fails only its step
            raise StepError(ErrorKind.ACTION, f"{step.action} failed: {type(exc).__name__}: {exc}") from None

    def _tab_url(self, tab: str) -> str | None:
        page = self._tabs.get(tab)
        return page.url if page is not None and not page.is_closed() else None

    async def _failure_screenshot(self, ctx: StepContext) -> None:
        page = self._tabs.get(ctx.tab)
        if page is None or page.is_closed():
            return
        try:
            await page.screenshot(path=ctx.artifact("failure.png"), timeout=5000)
        except Exception:  # a screenshot is a courtesy; the step's own error is what matters
            ctx.artifacts.pop()

    def _outputs(self, step: Step, result: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for name, source in step.outputs.items():
            if "{" in source:
                outputs[name] = self._render(source, {**variables, "result": result})
            elif source in result:
                outputs[name] = result[source]
            else:
                fields = ", ".join(sorted(result)) or "none"
                raise StepError(
                    ErrorKind.ACTION,
                    f"output '{name}' reads '{source}', which the {step.action} "
                    f"result does not have (it has: {fields})",
                )
        return outputs

    # conditions and steps holding steps -------------------------------------------------------

    async def condition(self, condition: Condition, variables: dict[str, Any], step: Step) -> bool:
        if isinstance(condition, Probe):
            selector = self._render(condition.selector, variables)
            page = await self.page(step.tab)
            count = await page.locator(selector).count()
            return count > 0 if condition.exists is not None else count == 0
        try:
            return evaluate_condition(condition, variables)
        except ExpressionError as exc:
            raise StepError(ErrorKind.TEMPLATE, str(exc)) from None

    async def run_if(self, step: If, env: ChainMap[str, Any], prefix: str, variables: dict[str, Any]) -> StepStatus:
        key = prefix + step.id
        await self._start(key, variables)
        started = asyncio.get_running_loop().time()
        try:
            branch = "then" if await self.condition(step.condition, variables, step) else "else"
        except StepError as exc:
            return await self._fail(step, key, exc, [])
        children = step.then if branch == "then" else step.else_
        if children:
            await self._nested(step, key, self.run_scope(children, env.new_child(), prefix, key))
        await self._complete(key, {"branch": branch}, started, [])
        return StepStatus.COMPLETED

    async def _nested(self, step: Step, key: str, body: Any) -> Any:
        """Runs a body; when it ends the run, the step holding it is marked failed too."""
        try:
            return await body
        except RunFailed as exc:
            error = StepError(ErrorKind.ACTION, str(exc))
            await self.emit(
                "step.updated",
                {"key": key, "status": "failed", "error": error.as_dict()},
                step=(key, {"status": "failed", "finished_at": utcnow(), "error": error.as_dict()}),
            )
            raise

    async def _loop_items(self, loop: Loop, variables: dict[str, Any], key: str) -> list[Any] | None:
        if loop.for_each is not None:
            items = self._render(loop.for_each, variables)
            if isinstance(items, dict):
                items = [{"key": k, "value": v} for k, v in items.items()]
            if not isinstance(items, list):
                raise StepError(ErrorKind.TEMPLATE, f"for_each gave {type(items).__name__} {items!r}, not a list")
            return items
        if loop.repeat is not None:
            count = self._render(loop.repeat, variables)
            if isinstance(count, str) and count.strip().isdigit():
                count = int(count)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise StepError(ErrorKind.TEMPLATE, f"repeat gave {count!r}, not a whole number")
            return list(range(count))
        if loop.for_each_element is not None:
            selector = self._render(loop.for_each_element, variables)
            return [f"{selector} >> nth={i}" for i in range(await self._count_elements(loop, selector))]
        return None

    async def _count_elements(self, loop: Loop, selector: str) -> int:
        page = await self.page(loop.tab)
        locator = page.locator(selector)
        count = await locator.count()
        if count == 0:  # a list drawn by script may not be there yet: give it the step's timeout
            timeout = loop.timeout or self.sop.defaults.timeout
            try:
                await locator.first.wait_for(state="attached", timeout=timeout * 1000)
            except Exception:
                return 0
            count = await locator.count()
        return count

    async def run_loop(self, loop: Loop, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        await self._start(key, variables)
        started = asyncio.get_running_loop().time()
        body_names = set().union(*(step_outputs(s) for s in loop.steps))
        collected: dict[str, list[Any]] = {name: [] for name in loop.collect}
        last: dict[str, Any] = dict.fromkeys(body_names)
        prefix = key + "["
        index = 0
        try:
            items = await self._loop_items(loop, variables, key)
            if items is not None and len(items) > loop.max_iterations:
                raise StepError(
                    ErrorKind.ACTION,
                    f"loop {key} has {len(items)} items, more than max_iterations ({loop.max_iterations})",
                )
            while items is None or index < len(items):
                item = items[index] if items is not None else index
                scope = {**variables, **last, loop.as_: item, "index": index}
                if loop.while_ is not None and not await self.condition(loop.while_, scope, loop):
                    break
                if index >= loop.max_iterations:
                    raise StepError(
                        ErrorKind.ACTION,
                        f"loop {key} ran {loop.max_iterations} iterations and its "
                        "condition still asks for more (raise max_iterations if that is expected)",
                    )
                body_env = env.new_child({loop.as_: item, "index": index}).new_child()
                last = await self._nested(loop, key, self.run_scope(loop.steps, body_env, f"{prefix}{index}].", key))
                for name, var in loop.collect.items():
                    collected[name].append(last.get(var))
                index += 1
                scope = {**variables, **last, loop.as_: item, "index": index - 1}
                if loop.until is not None and await self.condition(loop.until, scope, loop):
                    break
        except StepError as exc:
            return await self._fail(loop, key, exc, [])
        env.maps[0].update(collected)
        await self._complete(key, {**collected, "iterations": index}, started, [])
        return StepStatus.COMPLETED
