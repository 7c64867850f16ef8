"""The order of steps: siblings by their dependencies, conditions, `if` branches and loops."""

from __future__ import annotations

import asyncio
import json
from collections import ChainMap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..actions.targets import build, selector_of
from ..attempts import check_json, off_the_loop, render_fields
from ..durations import format_duration
from ..errors import ErrorKind, StepError
from ..events import utcnow
from ..expressions import ExpressionError, evaluate_condition
from ..graph import Graph, build_graph, step_outputs
from ..locators import describe
from ..loops import (
    LoopError,
    check_iterations,
    element_items,
    for_each_items,
    instance_key,
    iteration_prefix,
    repeat_items,
)
from ..masking import MASK
from ..progress import instances_per_iteration
from ..states import StepStatus
from ..steps import Condition, If, Loop, Probe, Step, as_written
from .outcome import RunFailed

if TYPE_CHECKING:
    from playwright.async_api import Locator

ITEM_LABEL_MAX = 80  # characters of a loop item told with its iteration's steps, for the page


class Flow:
    """Sibling steps in dependency order, conditions, branches and loops."""

    def graph(self, steps: list[Step]) -> Graph:
        graph = self._graphs.get(id(steps))
        if graph is None:
            graph = self._graphs[id(steps)] = build_graph(steps)
        return graph

    async def run_scope(
        self, steps: list[Step], env: ChainMap[str, Any], prefix: str, parent: str | None, item: str | None = None
    ) -> dict[str, Any]:
        """Run a list of sibling steps in dependency order; returns the outputs they produced. `item`: the
        label of the loop item they run for (an iteration's steps)."""
        graph = self.graph(steps)
        status = await self._scope_status(steps, env, prefix, parent, item)
        running: dict[asyncio.Task[StepStatus], str] = {}
        sequential = self.sop.max_parallel == 1
        try:
            while True:
                for sid in graph.blocked(status):
                    status[sid] = await self._block(graph, sid, prefix, status)
                ready = graph.ready(status, first=sequential)
                if not ready and not running:
                    return {n: env.maps[0].get(n) for s in steps for n in step_outputs(s)}
                if sequential:
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

    async def _scope_status(
        self, steps: list[Step], env: ChainMap[str, Any], prefix: str, parent: str | None, item: str | None = None
    ) -> dict[str, StepStatus]:
        """Adds rows for steps seen for the first time; steps an earlier execution finished give back
        their outputs."""
        status: dict[str, StepStatus] = {}
        new_rows = []
        for step in steps:
            key = instance_key(prefix, step.id)
            known = self.status.get(key)
            if known is None:
                new_rows.append(
                    {
                        "key": key,
                        "step_id": step.id,
                        "parent_key": parent,
                        "action": step.action,
                        "status": StepStatus.PENDING.value,
                    }
                )
                known = StepStatus.PENDING
            elif known == StepStatus.COMPLETED:
                stored = self.stored_outputs.get(key, {})
                env.maps[0].update({n: stored.get(n) for n in step_outputs(step)})
                for name in self.tainted.intersection(step_outputs(step)):
                    self.hide(stored.get(name))
            elif known == StepStatus.SKIPPED:
                env.maps[0].update(dict.fromkeys(step_outputs(step)))
            elif key in self._hold:
                known = StepStatus.PENDING  # the gate asks a person before it runs again
            status[step.id] = known
        if new_rows:
            keys = [r["key"] for r in new_rows]
            added: dict[str, Any] = {"parent": parent, "keys": keys}
            if item is not None:
                added["item"] = item
            await self.emit("steps.added", added, new_steps=new_rows, wait=False)
        return status

    async def _block(self, graph: Graph, sid: str, prefix: str, status: Mapping[str, StepStatus]) -> StepStatus:
        failed = sorted(d for d in graph.nodes[sid].needs if status[d] in (StepStatus.FAILED, StepStatus.BLOCKED))
        reason = f"needs {', '.join(prefix + d for d in failed)}, which did not complete"
        now = utcnow()
        key = instance_key(prefix, sid)
        await self.emit(
            "step.updated",
            {"key": key, "status": "blocked", "reason": reason},
            step=(key, {"status": "blocked", "reason": reason, "started_at": now, "finished_at": now}),
        )
        return StepStatus.BLOCKED

    # conditions and steps holding steps -------------------------------------------------------

    async def condition(self, condition: Condition, variables: dict[str, Any], step: Step) -> bool:
        if isinstance(condition, Probe):
            target = render_fields(as_written(condition.target), variables)
            frame = render_fields(as_written(getattr(step, "frame", None)), variables)
            page = await self.page(step.tab)
            try:
                count = await build(page, target, frame).count()
            except Exception as exc:  # a selector Playwright cannot read, or the page went away
                where = describe(target, frame)
                raise StepError(
                    ErrorKind.ACTION, f"probe {where}: {str(exc).splitlines()[0]}", selector=where
                ) from None
            return count > 0 if condition.exists is not None else count == 0
        try:
            return await off_the_loop(condition, lambda: evaluate_condition(condition, variables), condition=True)
        except ExpressionError as exc:
            raise StepError(ErrorKind.TEMPLATE, str(exc)) from None

    async def _nested(self, step: Step, key: str, body: Any) -> Any:
        """Runs a body; when it ends the run, the step holding it is marked failed too."""
        try:
            return await body
        except RunFailed as exc:
            error = StepError(ErrorKind.ACTION, str(exc)).as_dict()
            await self.emit(
                "step.updated",
                {"key": key, "status": "failed", "error": error},
                step=(key, {"status": "failed", "finished_at": utcnow(), "error": error}),
            )
            raise

    async def run_if(self, step: If, env: ChainMap[str, Any], prefix: str, variables: dict[str, Any]) -> StepStatus:
        key = instance_key(prefix, step.id)
        await self._start(key, variables, action=step.action)
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

    async def _loop_items(self, loop: Loop, variables: dict[str, Any]) -> list[Any] | None:
        try:
            if loop.for_each is not None:
                rendered = await off_the_loop(loop.for_each, lambda: render_fields(loop.for_each, variables))
                items = for_each_items(rendered)
                if loop.as_ in self.tainted:
                    self.hide(items)
                return check_json(f"the for_each of loop {loop.id}", items)
            if loop.repeat is not None:
                return repeat_items(await off_the_loop(loop.repeat, lambda: render_fields(loop.repeat, variables)))
        except LoopError as exc:
            raise StepError(ErrorKind.TEMPLATE, str(exc)) from None
        if loop.for_each_element is not None:
            target = render_fields(as_written(loop.for_each_element), variables)
            frame = render_fields(as_written(loop.frame), variables)
            page = await self.page(loop.tab)
            count = await self._count_elements(loop, build(page, target, frame), describe(target, frame))
            return element_items(selector_of(page, target), count)
        return None

    async def _count_elements(self, loop: Loop, locator: Locator, where: str) -> int:
        """How many elements the loop goes over. A list drawn by script may not be there yet: like `extract`, it
        waits for a first match for the step's timeout, and fails if none comes; `optional: true` takes what is
        there now, and says when that is nothing."""
        count = await locator.count()
        if count == 0 and not loop.optional:
            timeout = loop.timeout or self.sop.defaults.timeout
            from playwright.async_api import Error as PlaywrightError  # loaded: this loop reads a page
            from playwright.async_api import TimeoutError as PlaywrightTimeout

            try:
                await locator.first.wait_for(state="attached", timeout=timeout * 1000)
            except PlaywrightTimeout:
                raise StepError(
                    ErrorKind.ELEMENT_NOT_FOUND,
                    f"for_each_element: no element matched {where} within {format_duration(timeout)} (with "
                    "optional: true, the loop runs 0 times instead)",
                    selector=where,
                ) from None
            except PlaywrightError as exc:
                raise StepError(ErrorKind.ACTION, f"for_each_element {where}: {str(exc).splitlines()[0]}") from None
            count = await locator.count()
        return count

    async def run_loop(self, loop: Loop, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        await self._start(key, variables, action=loop.action)
        started = asyncio.get_running_loop().time()
        collected: dict[str, list[Any]] = {name: [] for name in loop.collect}
        last: dict[str, Any] = dict.fromkeys(set().union(*(step_outputs(s) for s in loop.steps)))
        index = 0
        try:
            items = await self._loop_items(loop, variables)
            if items is not None:
                check_iterations(key, len(items), loop.max_iterations)
                sized = {"key": key, "iterations": len(items), "per_iteration": instances_per_iteration(loop.steps)}
                await self.emit("loop.sized", sized, wait=False)
                if not items and loop.for_each_element is not None:
                    said = f"loop {key}: no element matched {describe(as_written(loop.for_each_element))}: 0 iterations"
                    await self.emit("log", {"key": key, "level": "info", "message": said}, wait=False)
            while items is None or index < len(items):
                item = items[index] if items is not None else index
                scope = {**variables, **last, loop.as_: item, "index": index}
                if loop.while_ is not None and not await self.condition(loop.while_, scope, loop):
                    break
                if index >= loop.max_iterations:
                    raise LoopError(
                        f"loop {key} ran {loop.max_iterations} iterations and its condition still "
                        "asks for more (raise max_iterations if that is expected)"
                    )
                body_env = env.new_child({loop.as_: item, "index": index}).new_child()
                label = self._item_label(loop, item)
                body = self.run_scope(loop.steps, body_env, iteration_prefix(key, index), key, label)
                last = await self._nested(loop, key, body)
                for name, var in loop.collect.items():
                    collected[name].append(last.get(var))
                index += 1
                scope = {**variables, **last, loop.as_: item, "index": index - 1}
                if loop.until is not None and await self.condition(loop.until, scope, loop):
                    break
        except LoopError as exc:
            return await self._fail(loop, key, StepError(ErrorKind.ACTION, str(exc)), [])
        except StepError as exc:
            return await self._fail(loop, key, exc, [])
        env.maps[0].update(collected)
        await self._complete(key, {**collected, "iterations": index}, started, [])
        return StepStatus.COMPLETED

    def _item_label(self, loop: Loop, item: Any) -> str:
        """A short label of a loop item, masked: *** for an item computed from a secret, whatever its value."""
        if loop.as_ in self.tainted:
            return MASK
        text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)
        label = self.mask(text)  # masked before it is cut, so no part of a secret is left unmatched
        return label if len(label) <= ITEM_LABEL_MAX else label[: ITEM_LABEL_MAX - 1] + "…"
