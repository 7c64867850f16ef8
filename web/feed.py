"""The runner's sink for the live feed: every stored event, a run's progress after each step that ends, and
pictures of its page while someone watches it.

The payloads are the same whoever sends them: a server through its Socket.IO server (LiveFeed, web/live.py),
or a process that executes runs and serves no clients (the `worker` command) through a write-only Redis
manager, which python-socketio's Redis manager of each server hands to its own clients (`feed_for_worker`)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sop_engine import settings
from sop_engine.events import Event
from sop_engine.liveness import worker_name
from sop_engine.progress import ENDED, RunProgress, sized_loops
from sop_engine.states import RUN_TERMINAL
from sop_engine.store import Store

from . import broker
from .audience import ALL_RUNS, Audience, RedisAudience, run_room

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
ENDED_RUN = frozenset(s.value for s in RUN_TERMINAL)

# sends one Socket.IO event to one room or several: (event name, payload, rooms)
Send = Callable[[str, dict[str, Any], list[str] | str], Awaitable[Any]]


def socket_name(event_type: str) -> str:
    return SOCKET_NAMES.get(event_type, "run.updated")


class Feed:
    """An EventSink and FrameSink for the runner."""

    def __init__(self, store: Store, audience: Audience, send: Send) -> None:
        self.store = store
        self.audience = audience
        self.send = send
        self._typical: dict[str, tuple[float, dict[str, float]]] = {}
        self._progress: dict[str, RunProgress] = {}  # runs watched: their progress, kept up to date

    async def emit(self, event: Event) -> None:
        seen = await self.audience.look(event.run_id)
        if event.type == "run.updated" and event.data.get("status") in ENDED_RUN:
            self.audience.forget(event.run_id)
        if not seen.events:
            self._progress.pop(event.run_id, None)  # it would miss events: built again when watched
            return  # nobody watches: the event is in the database for whoever comes later
        rooms = [run_room(event.run_id), ALL_RUNS]
        await self.send(socket_name(event.type), event.as_dict(), rooms)
        tracked = self._progress.get(event.run_id)
        if tracked is not None and tracked.follows(event.type):
            tracked.apply(event.type, event.data)
        elif tracked is not None:  # the run moved (started, paused, ended, retried): read it again when needed
            tracked = self._progress.pop(event.run_id)
        ended = event.type == "step.updated" and event.data.get("status") in ENDED | {"pending"}
        if seen.progress and (ended or event.type == "loop.sized"):
            tracked = self._progress.get(event.run_id)
            if tracked is None:
                tracked = await asyncio.to_thread(self._track, event.run_id)
                self._progress[event.run_id] = tracked
            progress = {"run_id": event.run_id, "seq": event.seq, **tracked.figures(), "eta_s": tracked.eta_s()}
            await self.send("progress", progress, rooms)

    def _track(self, run_id: str) -> RunProgress:
        """The run's progress read from the store once; the events that follow keep it up to date. Its ETA:
        seconds left, from how long the steps still pending took in the SOP's earlier runs; none once the run
        ended."""
        run = self.store.run(run_id)
        typical: dict[str, float] = {}
        if run is not None and run.status not in RUN_TERMINAL:
            cached = self._typical.get(run.sop_id)
            if cached is None or time.monotonic() - cached[0] > 30:
                cached = self._typical[run.sop_id] = (time.monotonic(), self.store.typical_durations(run.sop_id))
            typical = cached[1]
        sized = sized_loops(self.store.events_of(run_id, "loop.sized"))
        return RunProgress(self.store.step_states(run_id), sized, typical)

    def watching(self, run_id: str) -> bool:
        return self.audience.watching(run_id)

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None:
        image = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        await self.send("frame", {"run_id": run_id, "key": key, "image": image}, run_room(run_id))


class WorkerFeed(Feed):
    """The feed of a process that serves no Socket.IO clients: what it sends reaches the servers' clients
    through Redis."""

    def __init__(self, store: Store, url: str) -> None:
        self.manager = broker.socket_manager(url, write_only=True)
        super().__init__(store, RedisAudience(broker.connect(url), worker_name()), self._publish)

    async def _publish(self, name: str, data: dict[str, Any], rooms: list[str] | str) -> None:
        await self.manager.emit(name, data, namespace="/", room=rooms)  # logs a failure; never raises

    async def close(self) -> None:
        await self.audience.stop()
        if self.manager.redis is not None:
            await self.manager.redis.aclose()


def feed_for_worker(store: Store) -> WorkerFeed | None:
    """The runner's EventSink and FrameSink in a process without a Socket.IO server (`Runner(store, browser,
    [feed], frames=feed)`; `await feed.close()` at its end); None without SOP_REDIS_URL: nobody would hear it."""
    url = settings.current().redis_url
    return WorkerFeed(store, url) if url else None
