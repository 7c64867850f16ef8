"""The spans of the runs a process executes, made from their events: the runner knows nothing of them.

A run is executed in pieces: from a claim (or a start) until it ends, pauses or goes back to the queue. Each
piece is one span, `run <sop id>`, whose parent is the context its creator stored (`runs.trace_context`), so the
pieces of a run, in any process, are siblings in the trace of the request or command that created it. Under
it, a span per step instance, `step <key>` (loop indices written `[]`, so that names stay few), child of the
loop or `if` holding it. A step's span covers one execution of it: its retries are events on it (`retry`, with
the attempt that failed and why); a person's retry, or a later piece, makes another span. A leaf step's span is
made when it ends, when its start is known best (events carry the time of their commit: a quick step's start
is committed with its result; its `duration_ms` says when it began)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from .telemetry import nanoseconds, remote

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from .events import Event
    from .store import Store

log = logging.getLogger("sop_engine.telemetry")
CONTAINERS = frozenset({"loop", "if"})  # steps holding steps: their spans are made as they start
INDEX = re.compile(r"\[\d+\]")
MAX_RUNS = 10_000  # runs a sink keeps track of at once


@dataclass
class OpenStep:
    """A step under way in the piece."""

    key: str
    action: str | None
    attempt: int
    parent: str | None  # the key of the loop or `if` holding it
    started: int  # nanoseconds
    span: Span | None = None  # a container's, made as it starts
    retries: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (when, what) of each retry


@dataclass
class TracedRun:
    """What a sink knows of a run it executes: read from the store as its first piece here starts."""

    run_id: str
    sop_id: str | None = None
    version: int | None = None
    batch_id: str | None = None
    context: Context | None = None  # its creator's, from trace_context
    parents: dict[str, str | None] = field(default_factory=dict)  # step key -> the key holding it
    span: Span | None = None  # the piece under way
    started: int = 0
    steps: dict[str, OpenStep] = field(default_factory=dict)  # under way, in the order they started
    suspended: list[OpenStep] = field(default_factory=list)  # under way when it paused: go on in the next piece

    @classmethod
    def read(cls, store: Store, run_id: str) -> TracedRun:
        row = store.run(run_id)
        if row is None:
            return cls(run_id)
        parents = {step.key: step.parent_key for step in store.steps(run_id)}
        context = remote({"traceparent": row.trace_context}) if row.trace_context else None
        return cls(run_id, row.sop_id, row.sop_version, row.batch_id, context, parents)


def _attributes(**values: Any) -> dict[str, Any]:
    return {f"sop.{k}": v for k, v in values.items() if v is not None}


class SpanSink:
    """An EventSink making the spans of the runs executed in this process. Never raises: an event it cannot
    use is logged and left out."""

    def __init__(self, store: Store, tracer: Tracer) -> None:
        self.store = store
        self.tracer = tracer
        self.runs: dict[str, TracedRun] = {}

    async def emit(self, event: Event) -> None:
        try:
            await self._take(event)
        except Exception:
            log.exception("run %s: event %s left out of its spans", event.run_id, event.seq)

    async def _take(self, event: Event) -> None:
        run, data = self.runs.get(event.run_id), event.data
        if event.type == "run.updated":
            await self._run_moved(run, event)
        elif run is None or run.span is None:  # not under way here: another process makes its spans
            return
        elif event.type == "steps.added":
            run.parents.update(dict.fromkeys(data.get("keys") or (), data.get("parent")))
        elif event.type == "step.retried" and data.get("key") in run.steps:
            step, failed = run.steps[data["key"]], data.get("attempt") or 0
            what = _attributes(**{"step.attempt": failed, "retry.wait_s": data.get("wait_s")})
            what.update(_error(data.get("error") or {}))
            step.retries.append((nanoseconds(event.at), what))
            step.attempt = failed + 1
        elif event.type == "step.updated" and "key" in data:
            self._step_moved(run, event)

    async def _run_moved(self, run: TracedRun | None, event: Event) -> None:
        status = event.data.get("status")
        if status == "running":
            if run is not None and run.span is not None and "worker" in event.data:  # claimed anew
                self._end_piece(run, event.at, "interrupted", None)
            if run is None:
                run = self.runs[event.run_id] = await self._read(event.run_id)
                if len(self.runs) > MAX_RUNS:  # one this process let go of without an event (a lost claim)
                    del self.runs[next(iter(self.runs))]
            if run.span is None:
                self._start_piece(run, event)
            return
        if run is None:
            return
        if run.span is not None:
            self._end_piece(run, event.at, str(status), event.data.get("error"))
        if status != "paused":  # the execution here is over; a later one here reads the run again
            del self.runs[event.run_id]

    async def _read(self, run_id: str) -> TracedRun:
        try:
            return await asyncio.to_thread(TracedRun.read, self.store, run_id)
        except Exception as exc:  # its spans go on without what the store would have said
            log.warning("run %s: spans without its trace context: %s", run_id, str(exc).splitlines()[0])
            return TracedRun(run_id)

    def _start_piece(self, run: TracedRun, event: Event) -> None:
        run.started = nanoseconds(event.at)
        what = _attributes(run_id=run.run_id, id=run.sop_id, version=run.version, batch_id=run.batch_id)
        what.update(_attributes(worker=event.data.get("worker")))
        run.span = self.tracer.start_span(
            f"run {run.sop_id or '?'}", context=run.context, attributes=what, start_time=run.started
        )
        for step in run.suspended:  # a step a pause interrupted goes on, in a span of this piece
            step.started, step.span, step.retries = run.started, None, []
            self._open(run, step)
        run.suspended = []

    def _end_piece(self, run: TracedRun, at: Any, status: str, error: str | None) -> None:
        """Steps still under way end with the piece: a pause's go on in the next piece."""
        for step in reversed(list(run.steps.values())):  # children before the steps holding them
            self._close(run, step, at, "paused" if status == "paused" else "interrupted", {})
        run.suspended = list(run.steps.values()) if status == "paused" else []
        run.steps = {}
        assert run.span is not None
        run.span.set_attribute("sop.run.status", status)
        if status == "failed":
            run.span.set_status(Status(StatusCode.ERROR, error))
        run.span.end(nanoseconds(at))
        run.span = None

    def _step_moved(self, run: TracedRun, event: Event) -> None:
        data = event.data
        key, status = data["key"], data.get("status")
        if status == "running":
            found = run.steps.get(key)
            if found is not None:  # resumed after a pause, started again: the same span goes on
                found.attempt = data.get("attempt") or found.attempt
                return
            step = OpenStep(key, data.get("action"), data.get("attempt") or 1, run.parents.get(key), 0)
            step.started = nanoseconds(event.at)
            self._open(run, step)
            return
        step = run.steps.pop(key, None)
        if step is None and status in ("skipped", "blocked"):  # never under way: a span of no length
            step = OpenStep(key, None, 0, run.parents.get(key), nanoseconds(event.at))
        if step is not None:
            self._close(run, step, event.at, str(status), data)

    def _open(self, run: TracedRun, step: OpenStep) -> None:
        run.steps[step.key] = step
        if step.action in CONTAINERS:
            step.span = self._span(run, step, step.started)

    def _span(self, run: TracedRun, step: OpenStep, start: int) -> Span:
        """A step's span, under the loop or `if` holding it (else the run's), not starting before it."""
        holder = run.steps.get(step.parent) if step.parent else None
        if holder is not None and holder.span is not None:
            parent, start = holder.span, max(start, holder.started)
        else:
            parent, start = run.span, max(start, run.started)
        assert parent is not None
        what = _attributes(**{"step.key": step.key, "step.action": step.action, "run_id": run.run_id})
        return self.tracer.start_span(
            f"step {INDEX.sub('[]', step.key)}",
            context=trace.set_span_in_context(parent),
            attributes=what,
            start_time=start,
        )

    def _close(self, run: TracedRun, step: OpenStep, at: Any, status: str, data: dict[str, Any]) -> None:
        end = nanoseconds(at)
        span = step.span
        if span is None:  # a leaf: made now, from when it began
            start = step.started
            if isinstance(data.get("duration_ms"), int | float):
                start = min(start, end - int(data["duration_ms"] * 1_000_000))
            span = self._span(run, step, start)
            for when, what in step.retries:
                span.add_event("retry", what, timestamp=when)
        span.set_attributes(_attributes(**{"step.status": status, "step.attempt": step.attempt or None}))
        if status == "failed":
            error = data.get("error") or {}
            span.set_attributes(_error(error))
            span.set_status(Status(StatusCode.ERROR, error.get("message")))
        elif data.get("reason"):
            span.set_attribute("sop.step.reason", str(data["reason"]))
        span.end(end)


def _error(error: dict[str, Any]) -> dict[str, Any]:
    """A step's error (masked, as every event is) as attributes."""
    found = {"error.type": error.get("kind"), "sop.step.error": error.get("message")}
    return {k: v for k, v in found.items() if v is not None}
