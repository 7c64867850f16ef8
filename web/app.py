"""The Starlette app wrapped by python-socketio. All start-up and shut-down is in Starlette's lifespan;
the Socket.IO wrapper has no hooks of its own (they would replace the wrapped app's lifespan)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import socketio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from sop_engine.batch import Batches
from sop_engine.browser import BrowserHost
from sop_engine.document import DocumentError, load_sop_file
from sop_engine.runner import Runner
from sop_engine.store import Store

from . import api, pages
from .auth import Tokens, token_of
from .config import ServerConfig, asset_dir, vendor_dir
from .controls import Controls
from .live import LiveFeed
from .state import ServerState
from .workers import WorkerPool

log = logging.getLogger("sop_engine.web")
DEMO_PREFIX = "http://127.0.0.1:8765/"
_OPEN = ("/static/", "/demo/", "/login", "/favicon.ico")


class TokenGate:
    """Every route but static files, the demo pages and the login needs a token: 401 for the API,
    a redirect to the login page for pages."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_OPEN):
            await self.app(scope, receive, send)
            return
        from starlette.requests import HTTPConnection

        who = self.tokens.who(token_of(HTTPConnection(scope)))
        if who is None:
            if scope["path"].startswith("/api/"):
                response: Any = JSONResponse({"error": "unauthorized: send Authorization: Bearer <token>"}, 401)
            else:
                response = RedirectResponse("/login", status_code=303)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["who"] = who
        await self.app(scope, receive, send)


def load_examples(store: Store, config: ServerConfig) -> None:
    """The example SOPs, their demo URLs pointed at this server's /demo/ pages."""
    if config.examples is None or not config.examples.is_dir():
        return
    for path in sorted(config.examples.glob("*.yaml")):
        try:
            loaded = load_sop_file(path)
        except DocumentError as exc:
            log.warning("example %s is not valid: %s", path, exc)
            continue
        text = loaded.source.replace(DEMO_PREFIX, f"{config.base_url}/demo/")
        from sop_engine.document import load_sop

        store.save_document(load_sop(text, base_dir=loaded.base_dir))


def create_app(config: ServerConfig | None = None, tokens: Tokens | None = None) -> ASGIApp:
    config = config or ServerConfig()
    tokens = tokens or Tokens.from_env()
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[], logger=False, engineio_logger=False)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = Store()
        load_examples(store, config)
        browser = BrowserHost(headed=config.headed)
        feed = LiveFeed(sio, store, tokens)
        runner = Runner(store, browser, [feed], frames=feed, local_files=False)
        pool = WorkerPool(store, runner, config.concurrency)
        controls = Controls(store, pool)
        app.state.server = ServerState(store, browser, runner, pool, feed, controls, tokens, Batches(runner))
        await pool.start()
        try:
            yield
        finally:
            await pool.stop()
            await browser.close()
            store.close()

    routes: list[Any] = [Mount("/api", routes=api.routes), *pages.routes]
    routes.append(Mount("/static", app=StaticFiles(directory=asset_dir("static")), name="static"))
    vendor = vendor_dir()
    if vendor is not None:
        routes.insert(-1, Mount("/static/vendor", app=StaticFiles(directory=vendor), name="vendor"))
    if config.sites is not None and config.sites.is_dir():
        routes.append(Mount("/demo", app=StaticFiles(directory=config.sites, html=True), name="demo"))
    starlette = Starlette(routes=routes, lifespan=lifespan)
    starlette.state.config = config
    starlette.state.tokens = tokens
    return socketio.ASGIApp(sio, other_asgi_app=TokenGate(starlette, tokens))
