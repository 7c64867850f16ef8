"""`GET /metrics` in Prometheus's text format, for any token (a viewer's is enough); or, with
SOP_METRICS_PORT (or `worker --metrics-port`), on a port of its own without a token, which must then not be
reachable from outside. The queue's gauges are read from the database at each scrape, off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sop_engine import metrics
from sop_engine.breakers import BreakerGauges
from sop_engine.events import EventSink
from sop_engine.settings import Settings

from .access import require
from .roles import Role

if TYPE_CHECKING:
    from sop_engine.store import Store

    from .workers import WorkerPool

log = logging.getLogger("sop_engine.web.metrics")
PRIORITIES = (0, 1, 2)  # high, normal, low: each is said, 0 when none is queued


class QueueGauges:
    """A prometheus_client collector: the runs queued in the database by priority, and how long the
    oldest of each has waited. One grouped query on the runs' status index per scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Any]:
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        try:
            found = {priority: (count, oldest) for priority, count, oldest in self.store.queue_by_priority()}
        except SQLAlchemyError as exc:  # the scrape goes on without them
            log.warning("queue metrics skipped, the database is unavailable: %s", str(exc).splitlines()[0])
            return iter(())
        return self._families(found)

    def _families(self, found: dict[int, tuple[int, datetime]]) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("sop_queue_depth", "Runs queued in the database, by priority.", labels=["priority"])
        oldest = GaugeMetricFamily(
            "sop_queue_oldest_seconds", "How long the oldest queued run has waited, by priority.", labels=["priority"]
        )
        now = datetime.now(UTC)
        for priority in sorted({*PRIORITIES, *found}):
            count, created = found.get(priority, (0, None))
            depth.add_metric([str(priority)], count)
            age = (now - (created if created.tzinfo else created.replace(tzinfo=UTC))) if created else None
            oldest.add_metric([str(priority)], max(age.total_seconds(), 0.0) if age else 0.0)
        yield depth
        yield oldest


_gauges: QueueGauges | None = None  # registered once in the process's registry
_breakers: BreakerGauges | None = None  # the same, for the circuit breakers' state


def observe(store: Store) -> list[EventSink]:
    """Starts this process's metrics (unless SOP_METRICS=off): the sinks its Runner tells its events to."""
    global _gauges
    recording = metrics.start()
    if recording is None:
        return []
    if _gauges is None:
        _gauges = QueueGauges(store)
        recording.registry.register(_gauges)  # type: ignore[arg-type]
    _gauges.store = store  # an app made again in the same process (tests) reads its own store
    global _breakers
    if _breakers is None:
        _breakers = BreakerGauges(store)
        recording.registry.register(_breakers)  # type: ignore[arg-type]
    _breakers.store = store
    return [metrics.RunMetrics(recording, store)]


def watch(pool: WorkerPool) -> None:
    """The pool's slots and runs in flight, read at each scrape."""
    recording = metrics.recording()
    if recording is None:
        return
    recording.slots.set_function(lambda: pool.concurrency)
    recording.slots_used.set_function(lambda: len(pool.live))
    # a run waiting for a person holds its slot but is not executing
    recording.in_flight.set_function(lambda: sum(live.control.waiting is None for live in list(pool.live.values())))


def expose(host: str, port: int) -> Callable[[], None] | None:
    """Serves this process's metrics on `port`, without a token, from a thread of prometheus_client, and
    starts recording them; None with SOP_METRICS=off. Raises OSError when the port cannot be had. Returns
    what stops that server."""
    recording = metrics.start()
    if recording is None:
        return None
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=recording.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


async def scrape(request: Request) -> Response:
    require(request, Role.VIEWER)
    recording = metrics.recording()
    if recording is None:  # the app's lifespan has not started it: nothing recorded yet
        return Response("", media_type="text/plain")
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    body = await asyncio.to_thread(generate_latest, recording.registry)  # the queue's gauges read the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes(options: Settings) -> list[Route]:
    """`/metrics` beside the API, unless SOP_METRICS=off or they are served on SOP_METRICS_PORT."""
    if not options.metrics or options.metrics_port is not None:
        return []
    return [Route("/metrics", scrape, methods=["GET"])]
