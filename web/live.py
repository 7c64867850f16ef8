"""The live feed over Socket.IO: every stored run event, progress, and the browser's frames.

A client connects with its token (`auth: {token}` or the page's cookie), then
`emit("subscribe", {"run_id": ID, "since": SEQ})` replays what it missed and joins the run's room, or
`emit("subscribe", {"all": true})` joins the room of every run. Events carry the run id and sequence number."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import socketio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DBAPIError

from sop_engine.events import Event
from sop_engine.liveness import worker_name
from sop_engine.store import Store

from . import broker
from .access import may_read
from .audience import ALL_RUNS, LocalAudience, RedisAudience, run_room
from .auth import Tokens, token_from_environ
from .feed import SOCKET_NAMES, Feed, socket_name

__all__ = ["ALL_RUNS", "SOCKET_NAMES", "LiveFeed", "client_manager", "run_room"]
log = logging.getLogger("sop_engine.web.live")
SUBSCRIBED_WITHIN = 10.0  # seconds a server waits at start for its Redis subscription, then starts anyway


class Subscribe(BaseModel):
    """`{run_id, since}` for one run, or `{all: true}` for every run."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(None, min_length=1, max_length=64)
    since: int = Field(0, ge=0, le=2**62)
    all: bool = False


def _subscription(data: Any) -> Subscribe | str:
    try:
        found = Subscribe.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors())
        return f"send {{run_id, since}} or {{all: true}} ({where})"
    if not found.all and found.run_id is None:
        return "send {run_id, since} or {all: true}"
    return found


def client_manager(redis_url: str | None) -> socketio.AsyncManager | None:
    """The Socket.IO server's: with Redis, an event emitted by any process reaches the clients of every
    server; None (python-socketio's own, for this process's clients) without it."""
    return broker.socket_manager(redis_url) if redis_url else None


class LiveFeed(Feed):
    """The runner's sink (web/feed.py) in a server, and the Socket.IO handlers."""

    def __init__(self, sio: socketio.AsyncServer, store: Store, tokens: Tokens, redis_url: str | None = None) -> None:
        self.sio = sio
        self.tokens = tokens
        self.redis_url = redis_url
        audience = RedisAudience(broker.connect(redis_url), worker_name(), sio) if redis_url else LocalAudience(sio)
        super().__init__(store, audience, lambda name, data, rooms: sio.emit(name, data, to=rooms))
        sio.on("connect", self.on_connect)
        sio.on("subscribe", self.on_subscribe)
        sio.on("unsubscribe", self.on_unsubscribe)

    # socket handlers -------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        """The origin was checked before (cors_allowed_origins); here the token."""
        try:
            user = await asyncio.to_thread(self.tokens.user, token_from_environ(environ, auth))
        except DBAPIError:
            raise socketio.exceptions.ConnectionRefusedError("the database is unavailable: try again") from None
        if user is None:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: a token is needed")
        await self.sio.save_session(sid, {"user": user})

    async def on_subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        wanted = _subscription(data)
        if isinstance(wanted, str):
            return {"ok": False, "error": wanted}
        user = (await self.sio.get_session(sid)).get("user")
        if wanted.all:
            if not may_read(user, None):
                return {"ok": False, "error": "not allowed"}
            await self.sio.enter_room(sid, ALL_RUNS)
            await self.audience.mark(ALL_RUNS)
            return {"ok": True}
        run_id = str(wanted.run_id)
        run = await asyncio.to_thread(self.store.run, run_id)
        if run is None or not may_read(user, run):
            return {"ok": False, "error": f"no run {run_id}"}
        await self.sio.enter_room(sid, run_room(run_id))
        await self.audience.mark(run_room(run_id))  # whichever process executes it sends progress and frames
        missed = await asyncio.to_thread(self.store.events, run_id, wanted.since, 10_000)
        for row in missed:  # the client drops any it also gets live: it applies a sequence number once
            event = Event(row.run_id, row.seq, row.type, row.data, row.at)
            await self.sio.emit(socket_name(row.type), event.as_dict(), to=sid)
        return {"ok": True, "replayed": len(missed)}

    async def on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        wanted = _subscription(data)
        if isinstance(wanted, str):
            return {"ok": False, "error": wanted}
        room = ALL_RUNS if wanted.all else run_room(str(wanted.run_id))
        await self.sio.leave_room(sid, room)
        await self.audience.release(room)
        return {"ok": True}

    # lifetime -------------------------------------------------------------------------------

    async def start(self) -> None:
        """With Redis, the server listens to the other processes' events from now on, not from its first
        client's connection: a client that subscribes then misses none (its replay covers what came before)."""
        self.audience.start()
        if self.redis_url is None:
            return
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        manager: Any = self.sio.manager
        try:
            async with asyncio.timeout(SUBSCRIBED_WITHIN):
                while manager.pubsub is None or not manager.pubsub.subscribed:
                    await asyncio.sleep(0.01)  # python-socketio's task subscribes; it says so only by this flag
        except TimeoutError:
            log.warning("not subscribed to Redis after %ss: the live feed of other processes waits", SUBSCRIBED_WITHIN)

    async def stop(self) -> None:
        await self.audience.stop()
        task = getattr(self.sio.manager, "thread", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
