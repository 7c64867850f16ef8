"""The Starlette app wrapped by python-socketio. All start-up and shut-down is in Starlette's lifespan;
the Socket.IO wrapper has no hooks of its own (they would replace the wrapped app's lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from sop_engine import settings, telemetry
from sop_engine.batch import Batches
from sop_engine.browser import BrowserHost
from sop_engine.document import DocumentError, load_sop_file
from sop_engine.logs import event_sinks
from sop_engine.policy import NetworkPolicy
from sop_engine.runner import Runner
from sop_engine.scheduler import Scheduler
from sop_engine.store import Store
from sop_engine.trace_files import viewer_folder

from . import api, errors, health, metrics, pages
from .auth import Tokens
from .config import ServerConfig, asset_dir, vendor_dir
from .controls import Controls
from .db import AsyncStore
from .guard import Guard, socket_origin_check
from .hooks import Dispatcher
from .live import LiveFeed, client_manager
from .relay import ControlRelay
from .scheduling import ScheduleLoop
from .state import ServerState
from .workers import WorkerPool

log = logging.getLogger("sop_engine.web")


def load_examples(store: Store, config: ServerConfig) -> None:
    """The example SOPs, as written: their demo URLs are relative (`/demo/todo.html`), so a start on another
    port stores no new version."""
    if config.examples is None or not config.examples.is_dir():
        return
    for path in sorted(config.examples.glob("*.yaml")):
        try:
            store.save_document(load_sop_file(path))
        except DocumentError as exc:
            log.warning("example %s is not valid: %s", path, exc)


def create_app(config: ServerConfig | None = None, tokens: Tokens | None = None) -> ASGIApp:
    config = config or ServerConfig()
    options = settings.current()
    tokens = tokens or Tokens()
    sio = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=socket_origin_check(options.public_origin),
        max_http_buffer_size=64 * 1024,  # a socket message is a small JSON object
        client_manager=client_manager(options.redis_url),
        logger=False,
        engineio_logger=False,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tracing = telemetry.start("server")  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
        store = Store()
        tokens.attach(store)
        load_examples(store, config)
        browser = BrowserHost(headed=config.headed, extra_args=list(options.browser_args))
        feed = LiveFeed(sio, store, tokens, options.redis_url)
        own = dict.fromkeys([config.base_url, config.local_url, options.public_origin])  # in order, once each
        policy = NetworkPolicy.for_server(own, base_url=config.local_url)
        sinks = [feed, *metrics.observe(store), *event_sinks(), *telemetry.sinks(store)]
        runner = Runner(store, browser, sinks, frames=feed, policy=policy)
        pool = WorkerPool(store, runner, config.concurrency)
        metrics.watch(pool)
        db = AsyncStore(store)
        controls = Controls(db, pool)
        relay = ControlRelay.attach(controls, options.redis_url)  # None without Redis
        scheduler = Scheduler(store, runner.vault, documents=pool.document)
        schedules = ScheduleLoop(scheduler, runner, pool, options.schedule_tick_seconds)
        app.state.server = ServerState(
            store, db, browser, runner, pool, feed, controls, tokens, Batches(runner), scheduler
        )
        await feed.start()
        if relay is not None:
            await relay.start()
        await pool.start()
        schedules.start()
        hooks = Dispatcher(store, NetworkPolicy.for_server(own, base_url=config.local_url))
        await hooks.start()
        try:
            yield
        finally:
            await schedules.stop()  # no more runs queued by this process while it drains
            await pool.drain(options.drain_seconds)  # the relay still takes controls for the runs finishing
            await hooks.stop()  # after the drain: the runs that finished in it are in the outbox, sent later
            if relay is not None:
                await relay.stop()
            await feed.stop()
            await browser.close()
            store.close()
            await asyncio.to_thread(telemetry.stop, tracing)  # the spans still buffered are exported

    routes: list[Any] = [Mount("/api", routes=api.routes()), *pages.routes, *health.routes, *metrics.routes(options)]
    routes.append(Mount("/static", app=StaticFiles(directory=asset_dir("static")), name="static"))
    vendor = vendor_dir()
    if vendor is not None:
        routes.insert(-1, Mount("/static/vendor", app=StaticFiles(directory=vendor), name="vendor"))
    if config.sites is not None and config.sites.is_dir():
        routes.append(Mount("/demo", app=StaticFiles(directory=config.sites, html=True), name="demo"))
    viewer = viewer_folder()  # Playwright's own trace viewer, from the installed package: offline, no download
    if viewer is not None:
        routes.append(Mount("/trace-viewer", app=StaticFiles(directory=viewer), name="trace-viewer"))
    starlette = Starlette(routes=routes, lifespan=lifespan, exception_handlers=errors.handlers)
    starlette.state.config = config
    starlette.state.tokens = tokens
    guarded = Guard(starlette, tokens, options.max_body_bytes, options.public_origin)
    return socketio.ASGIApp(sio, other_asgi_app=guarded)
