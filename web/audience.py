"""Who watches a run: the feed computes a run's progress only when someone follows it, and takes pictures of
its page (costly screenshots) only while someone watches that run.

Alone (no Redis), the answer is in this server's Socket.IO rooms. With Redis, watchers may be on any server:
each server names itself in a short-lived Redis set per room its clients joined (`sop:watch:run:<id>`,
`sop:watch:runs`), marked when a client joins, marked again every few seconds while the room has members
here, and cleared when it empties. A process executing a run asks Redis at each of the run's events and keeps
the answer for the pictures it takes until the next one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("sop_engine.web.audience")

ALL_RUNS = "runs"
PREFIX = "sop:watch:"
TTL = 15  # seconds a server's mark outlives its last refresh: a server that died stops counting after this
REFRESH = 5.0  # seconds between a server's refreshes of the rooms its clients are in
REMEMBERED = 10_000  # runs whose last answer a process keeps (an ended run's is dropped at its end)
QUIET = 5.0  # seconds a process asks Redis nothing after a failure: each event would wait for its timeout


def run_room(run_id: str) -> str:
    return f"run:{run_id}"


def _rooms(sio: Any) -> dict[str, Any]:
    return sio.manager.rooms.get("/", {})


def _is_feed_room(room: object) -> bool:
    return isinstance(room, str) and (room == ALL_RUNS or room.startswith("run:"))


@dataclass(frozen=True)
class Seen:
    """What a run's audience wants at one of its events."""

    events: bool  # its events may have a listener
    progress: bool  # someone follows the run, or every run


class Audience(Protocol):
    async def look(self, run_id: str) -> Seen: ...

    def watching(self, run_id: str) -> bool: ...

    def forget(self, run_id: str) -> None: ...

    async def mark(self, room: str) -> None: ...

    async def release(self, room: str) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class LocalAudience:
    """This server's rooms: a run nobody here follows needs no events sent at all."""

    def __init__(self, sio: Any) -> None:
        self.sio = sio

    def _has(self, room: str) -> bool:
        return bool(_rooms(self.sio).get(room))

    async def look(self, run_id: str) -> Seen:
        heard = self._has(run_room(run_id)) or self._has(ALL_RUNS)
        return Seen(heard, heard)

    def watching(self, run_id: str) -> bool:
        return self._has(run_room(run_id))

    def forget(self, run_id: str) -> None:
        pass

    async def mark(self, room: str) -> None:
        pass  # the rooms are the answer

    async def release(self, room: str) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class RedisAudience:
    """Watchers on any server, through Redis. `sio`: this server's Socket.IO server, whose rooms it marks; None
    in a process that serves no clients (it only asks)."""

    def __init__(self, redis: Redis, name: str, sio: Any = None) -> None:
        self.redis = redis
        self.name = name
        self.sio = sio
        self._watched: dict[str, bool] = {}  # run id -> watched at its last event
        self._marked: set[str] = set()  # rooms this server is named in
        self._task: asyncio.Task[None] | None = None
        self._quiet_until = 0.0

    # asking ---------------------------------------------------------------------------------

    async def look(self, run_id: str) -> Seen:
        """Events go out while Redis answers (listeners may be anywhere; a publish costs what this question
        does). While it does not, nothing goes out: every event goes through Redis, even to this server's own
        clients, and a publish would make the run wait for Redis at each event; the clients catch up by
        sequence number when it is back."""
        run = every = False
        if time.monotonic() < self._quiet_until:
            return Seen(False, False)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                run, every = await pipe.exists(PREFIX + run_room(run_id)).exists(PREFIX + ALL_RUNS).execute()
        except (RedisError, OSError) as exc:
            self._failed("cannot ask Redis who watches runs", exc)
            return Seen(False, False)
        self._quiet_until = 0.0
        self._remember(run_id, bool(run))
        return Seen(True, bool(run or every))

    def watching(self, run_id: str) -> bool:
        local = self.sio is not None and bool(_rooms(self.sio).get(run_room(run_id)))
        return local or self._watched.get(run_id, False)

    def forget(self, run_id: str) -> None:
        self._watched.pop(run_id, None)

    def _remember(self, run_id: str, watched: bool) -> None:
        self._watched.pop(run_id, None)  # re-inserted last: the oldest answer is the first dropped
        self._watched[run_id] = watched
        if len(self._watched) > REMEMBERED:
            self._watched.pop(next(iter(self._watched)))

    # marking (a server) ---------------------------------------------------------------------

    async def mark(self, room: str) -> None:
        """A client of this server is in the room (called after it joined: a refresh in between keeps it)."""
        self._marked.add(room)
        await self._write([room], [])

    async def release(self, room: str) -> None:
        """A client left the room: when it has no members here any more, this server is no longer named."""
        if self.sio is not None and not _rooms(self.sio).get(room) and room in self._marked:
            self._marked.discard(room)
            await self._write([], [room])

    async def refresh(self) -> None:
        """Names this server again in every room with members here; clears the rooms that emptied (their
        clients disconnected)."""
        rooms = {room for room, members in _rooms(self.sio).items() if members and _is_feed_room(room)}
        gone = self._marked - rooms
        self._marked = rooms
        await self._write(sorted(rooms), sorted(gone))

    async def _write(self, marks: list[str], clears: list[str]) -> None:
        if not marks and not clears:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for room in marks:
                    pipe.sadd(PREFIX + room, self.name).expire(PREFIX + room, TTL)
                for room in clears:
                    pipe.srem(PREFIX + room, self.name)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("cannot tell Redis which runs are watched here", exc)

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            await self.refresh()

    # lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.sio is not None:
            self._task = asyncio.create_task(self._refreshing(), name="watch-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._write([], sorted(self._marked))
        self._marked.clear()
        await self.redis.aclose()

    def _failed(self, what: str, exc: BaseException) -> None:
        if not self._quiet_until:  # once per outage, not once per event
            log.warning("%s: %s", what, exc)
        self._quiet_until = time.monotonic() + QUIET
