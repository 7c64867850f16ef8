"""The `sop-engine worker` process: executes queued runs with its own Chromium and browser contexts, serves no
HTTP. It runs on any host that reaches the database; on SIGTERM (or Ctrl-C) it drains: it claims nothing
more, lets its runs finish for SOP_DRAIN_SECONDS, then hands the rest back to the queue."""

from __future__ import annotations

import asyncio
import logging
import signal

from sop_engine import settings, telemetry
from sop_engine.browser import BrowserHost
from sop_engine.logs import event_sinks
from sop_engine.policy import NetworkPolicy
from sop_engine.runner import Runner
from sop_engine.store import Store

from . import metrics
from .feed import feed_for_worker
from .hooks import Dispatcher
from .relay import relay_for_worker
from .workers import WorkerPool

log = logging.getLogger("sop_engine.web.worker")


async def work(concurrency: int, base_url: str | None, headed: bool = False, metered: bool = False) -> None:
    """Until SIGTERM or SIGINT. `base_url`: the server's address, where runs' relative URLs go (its own
    origin stays closed to them but for the demo pages, as in the server). `metered`: it records metrics
    (served on its --metrics-port: web.metrics.expose)."""
    options = settings.current()
    tracing = telemetry.start("worker")  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    store = Store()
    browser = BrowserHost(headed=headed, extra_args=list(options.browser_args))
    own = dict.fromkeys([base_url, options.public_origin])
    policy = NetworkPolicy.for_server(own, base_url=base_url or options.public_origin)
    feed = feed_for_worker(store)  # with SOP_REDIS_URL: its runs' events reach every server's clients
    measured = metrics.observe(store) if metered else []
    sinks = [*([feed] if feed else []), *measured, *event_sinks(), *telemetry.sinks(store)]
    runner = Runner(store, browser, sinks, frames=feed, policy=policy)
    pool = WorkerPool(store, runner, concurrency)
    metrics.watch(pool)
    relay = relay_for_worker(store, pool)  # with SOP_REDIS_URL: controls asked of any server reach its runs
    hooks = Dispatcher(store, NetworkPolicy.for_server(own, base_url=base_url or options.public_origin))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopping.set)
    try:
        if relay is not None:
            await relay.start()
        await pool.start()
        await hooks.start()
        log.warning(
            "worker %s: %d run(s) at once, queue %s, database %s", pool.name, concurrency, pool.queue, store.dialect
        )
        await stopping.wait()
        log.warning("worker %s: draining", pool.name)
        await pool.drain(options.drain_seconds)
    finally:
        await hooks.stop()
        if relay is not None:
            await relay.stop()
        if feed is not None:
            await feed.close()
        await browser.close()
        store.close()
        await asyncio.to_thread(telemetry.stop, tracing)
