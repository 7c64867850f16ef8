"""What the server's routes share, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from sop_engine.batch import Batches
from sop_engine.browser import BrowserHost
from sop_engine.runner import Runner
from sop_engine.scheduler import Scheduler
from sop_engine.store import Store

from .auth import Tokens
from .controls import Controls
from .db import AsyncStore
from .live import LiveFeed
from .workers import WorkerPool


@dataclass
class ServerState:
    store: Store
    db: AsyncStore  # the same store, each call in a thread
    browser: BrowserHost
    runner: Runner
    pool: WorkerPool
    feed: LiveFeed
    controls: Controls
    tokens: Tokens
    batches: Batches
    scheduler: Scheduler | None = None  # schedules' creation and tick (web/scheduling.py)


def state_of(conn: HTTPConnection) -> ServerState:
    return conn.app.state.server
