"""The live feed over Socket.IO: every stored run event, progress, and the browser's frames.

A client connects with its token (`auth: {token}` or the page's cookie), then
`emit("subscribe", {"run_id": ID, "since": SEQ})` replays what it missed and joins the run's room, or
`emit("subscribe", {"all": true})` joins the room of every run. Events carry the run id and sequence number."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import socketio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DBAPIError

from sop_engine.events import Event
from sop_engine.progress import ENDED
from sop_engine.states import RUN_TERMINAL
from sop_engine.store import Store

from .access import may_read
from .auth import Tokens, token_from_environ

SOCKET_NAMES = {
    "run.created": "run.updated",
    "run.updated": "run.updated",
    "step.updated": "step.updated",
    "step.retried": "step.updated",
    "steps.added": "step.updated",
    "control": "run.updated",
    "run.restored": "run.updated",
    "loop.sized": "step.updated",
    "log": "log",
}
_TERMINAL = ENDED


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


def run_room(run_id: str) -> str:
    return f"run:{run_id}"


ALL_RUNS = "runs"


class LiveFeed:
    """An EventSink and FrameSink for the runner, and the Socket.IO handlers."""

    def __init__(self, sio: socketio.AsyncServer, store: Store, tokens: Tokens) -> None:
        self.sio = sio
        self.store = store
        self.tokens = tokens
        self._typical: dict[str, tuple[float, dict[str, float]]] = {}
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
            return {"ok": True}
        run_id = str(wanted.run_id)
        run = await asyncio.to_thread(self.store.run, run_id)
        if run is None or not may_read(user, run):
            return {"ok": False, "error": f"no run {run_id}"}
        await self.sio.enter_room(sid, run_room(run_id))
        missed = await asyncio.to_thread(self.store.events, run_id, wanted.since, 10_000)
        for row in missed:  # the client drops any it also gets live: it applies a sequence number once
            event = Event(row.run_id, row.seq, row.type, row.data, row.at)
            await self.sio.emit(SOCKET_NAMES.get(row.type, "run.updated"), event.as_dict(), to=sid)
        return {"ok": True, "replayed": len(missed)}

    async def on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        wanted = _subscription(data)
        if isinstance(wanted, str):
            return {"ok": False, "error": wanted}
        await self.sio.leave_room(sid, ALL_RUNS if wanted.all else run_room(str(wanted.run_id)))
        return {"ok": True}

    # sinks ----------------------------------------------------------------------------------

    def _listeners(self, run_id: str) -> bool:
        rooms = self.sio.manager.rooms.get("/", {})
        return bool(rooms.get(run_room(run_id))) or bool(rooms.get(ALL_RUNS))

    async def emit(self, event: Event) -> None:
        if not self._listeners(event.run_id):
            return  # nobody watches: the event is in the database for whoever comes later
        rooms = [run_room(event.run_id), ALL_RUNS]
        await self.sio.emit(SOCKET_NAMES.get(event.type, "run.updated"), event.as_dict(), to=rooms)
        ended = event.type == "step.updated" and event.data.get("status") in _TERMINAL | {"pending"}
        if ended or event.type == "loop.sized":
            progress = await asyncio.to_thread(self.progress, event.run_id, event.seq)
            await self.sio.emit("progress", progress, to=rooms)

    def progress(self, run_id: str, seq: int) -> dict[str, Any]:
        return {"run_id": run_id, "seq": seq, **self.store.progress(run_id), "eta_s": self.eta(run_id)}

    def eta(self, run_id: str) -> float | None:
        """Seconds left, from how long the steps still pending took in the SOP's earlier runs; none once the
        run ended."""
        run = self.store.run(run_id)
        if run is None or run.status in RUN_TERMINAL:
            return None
        cached = self._typical.get(run.sop_id)
        if cached is None or time.monotonic() - cached[0] > 30:
            cached = self._typical[run.sop_id] = (time.monotonic(), self.store.typical_durations(run.sop_id))
        typical = cached[1]
        if not typical:
            return None
        left = [row.step_id for row in self.store.steps(run_id) if row.status in ("pending", "running")]
        return round(sum(typical.get(step_id, 0.0) for step_id in left), 1)

    def watching(self, run_id: str) -> bool:
        return bool(self.sio.manager.rooms.get("/", {}).get(run_room(run_id)))

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None:
        image = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        await self.sio.emit("frame", {"run_id": run_id, "key": key, "image": image}, to=run_room(run_id))
