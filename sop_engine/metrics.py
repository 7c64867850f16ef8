"""This process's Prometheus metrics: what its runs, steps, browser contexts and event writes did.

The server and `worker --metrics-port` record them (`start()`); the command line and SOP_METRICS=off record
none, and then nothing here imports prometheus_client (it costs a run's start 60 ms). Whoever has a hook
asks `recording()`, None when nothing is recorded; the rest comes from run events (RunMetrics, an EventSink).
The queue's gauges are read from the database when scraped (web/metrics.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import settings

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

    from .events import Event
    from .store import Store
    from .tables import RunRow

log = logging.getLogger("sop_engine.metrics")

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
ENDED = frozenset({"completed", "failed", "cancelled"})
MAX_RUNS = 10_000  # runs whose SOP or running steps are remembered: the oldest are forgotten past this
UNKNOWN = "unknown"


class Recording:
    """The process's metrics, in a registry of their own (not prometheus_client's global one, which any
    imported library may add to), with the process's CPU, memory and garbage collector beside them."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.gc_collector import GCCollector
        from prometheus_client.platform_collector import PlatformCollector
        from prometheus_client.process_collector import ProcessCollector

        self.registry = registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        self.runs = Counter(
            "sop_runs", "Runs that ended, by SOP and final status.", ["sop_id", "status"], registry=registry
        )
        self.steps = Histogram(
            "sop_step_duration_seconds",
            "How long steps took, by action and how they ended (completed, failed).",
            ["action", "status"],
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.retries = Counter("sop_step_retries", "Step attempts retried, by action.", ["action"], registry=registry)
        self.recoveries = Counter(
            "sop_recoveries",
            "Runs recovered: browser (rebuilt from a checkpoint), worker (its worker stopped: queued again), "
            "takeover (claimed from a worker that was gone).",
            ["kind"],
            registry=registry,
        )
        self.in_flight = Gauge("sop_runs_in_flight", "Runs executing in this process now.", registry=registry)
        self.slots = Gauge("sop_worker_slots", "Runs this process may execute at once.", registry=registry)
        self.slots_used = Gauge(
            "sop_worker_slots_used", "Runs this process holds now (paused ones too).", registry=registry
        )
        self.contexts = Gauge("sop_browser_contexts", "Browser contexts open in this process.", registry=registry)
        self.writes = Histogram(
            "sop_event_write_seconds",
            "How long a commit of a run's events (and their state changes) took.",
            buckets=WRITE_BUCKETS,
            registry=registry,
        )
        self.waits = Histogram(
            "sop_queue_wait_seconds",
            "How long runs this process claimed had waited in the queue, from creation to first start.",
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.schedule_firings = Counter(
            "sop_schedule_firings",
            "Schedule ticks this process recorded, by what drove its tick: procrastinate (the job queue's "
            "periodic task, on PostgreSQL) or loop (the server's own loop, on SQLite).",
            ["by"],
            registry=registry,
        )
        self.sop_of: OrderedDict[str, str] = OrderedDict()  # run id -> its SOP, for the runs counter
        self._children: dict[tuple[Any, ...], Any] = {}  # labelled children, looked up once each

    def child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def remember(self, run_id: str, sop_id: str) -> None:
        self.sop_of[run_id] = sop_id
        if len(self.sop_of) > MAX_RUNS:
            self.sop_of.popitem(last=False)

    def claimed(self, run: RunRow) -> None:
        """A worker of this process claimed `run`: its SOP is known here from now on, and its first start
        says how long it waited in the queue."""
        self.remember(run.id, run.sop_id)
        if run.started_at is None:
            created = run.created_at if run.created_at.tzinfo else run.created_at.replace(tzinfo=UTC)
            self.waits.observe(max((datetime.now(UTC) - created).total_seconds(), 0.0))

    def context_opened(self, context: BrowserContext) -> None:
        self.contexts.inc()
        context.once("close", lambda _: self.contexts.dec())


_recording: Recording | None = None


def recording() -> Recording | None:
    """The process's metrics, or None when it records none."""
    return _recording


def start() -> Recording | None:
    """Records metrics in this process from now on, unless SOP_METRICS=off (then None). Once per process."""
    global _recording
    if _recording is None and settings.current().metrics:
        _recording = Recording()
    return _recording


def claimed(run: RunRow) -> None:
    if _recording is not None:
        _recording.claimed(run)


Running = dict[str, tuple[str, datetime]]  # a run's steps in flight: key -> (action, when its start was committed)


class RunMetrics:
    """An EventSink counting runs, step durations, retries and recoveries from run events. Quick (a few dict
    look-ups a event), never raises. A run's SOP comes from its run.created event or its claim here; when
    neither was seen (a queued run cancelled on another server), the store says, off the event loop."""

    def __init__(self, metrics: Recording, store: Store | None = None) -> None:
        self.m = metrics
        self.store = store
        self.runs: OrderedDict[str, Running] = OrderedDict()
        self._lookups: set[asyncio.Future[None]] = set()

    async def emit(self, event: Event) -> None:
        try:
            self._count(event)
        except Exception:  # a metric must never stop a run
            log.warning("event %s of run %s was not counted", event.type, event.run_id, exc_info=True)

    def _count(self, event: Event) -> None:
        kind, data = event.type, event.data
        if kind == "step.updated":
            self._step(event, data.get("status"))
        elif kind == "step.retried":
            self.m.child(self.m.retries, self._action(event.run_id, data.get("key"))).inc()
        elif kind == "run.updated":
            self._run(event, data.get("status"))
        elif kind == "run.created":
            self.m.remember(event.run_id, data.get("sop_id") or UNKNOWN)
        elif kind == "run.restored":
            self.m.child(self.m.recoveries, "browser").inc()

    def _step(self, event: Event, status: str | None) -> None:
        key = event.data.get("key")
        if status == "running":
            steps = self.runs.get(event.run_id)
            if steps is None:
                steps = self.runs[event.run_id] = {}
                if len(self.runs) > MAX_RUNS:
                    self.runs.popitem(last=False)
            steps[key] = (event.data.get("action") or UNKNOWN, event.at)
            return
        steps = self.runs.get(event.run_id)
        started = steps.pop(key, None) if steps is not None else None
        if status not in ("completed", "failed"):
            return
        took = event.data.get("duration_ms")
        if isinstance(took, int | float):
            seconds = took / 1000
        elif started is not None:  # a failure: from its start's commit to its own (within WRITE_BEHIND)
            seconds = max((event.at - started[1]).total_seconds(), 0.0)
        else:
            return
        self.m.child(self.m.steps, started[0] if started else UNKNOWN, status).observe(seconds)

    def _action(self, run_id: str, key: str | None) -> str:
        steps = self.runs.get(run_id)
        started = steps.get(key) if steps is not None and key is not None else None
        return started[0] if started else UNKNOWN

    def _run(self, event: Event, status: str | None) -> None:
        data = event.data
        if status in ENDED:
            self.runs.pop(event.run_id, None)
            sop_id = self.m.sop_of.pop(event.run_id, None)
            if sop_id is not None or self.store is None:
                self.m.child(self.m.runs, sop_id or UNKNOWN, status).inc()
            else:
                lookup = asyncio.ensure_future(self._count_later(event.run_id, status))
                self._lookups.add(lookup)
                lookup.add_done_callback(self._lookups.discard)
        elif status == "queued":
            self.runs.pop(event.run_id, None)  # its steps in flight start again, wherever it goes on
            if str(data.get("reason") or "").startswith("recovered:"):
                self.m.child(self.m.recoveries, "worker").inc()
        elif status == "running" and data.get("taken_over_from"):
            self.m.child(self.m.recoveries, "takeover").inc()

    async def _count_later(self, run_id: str, status: str) -> None:
        assert self.store is not None
        try:
            run = await asyncio.to_thread(self.store.run, run_id)
            sop_id = run.sop_id if run is not None else UNKNOWN
        except Exception:  # the database is away: counted all the same
            sop_id = UNKNOWN
        self.m.child(self.m.runs, sop_id, status).inc()
