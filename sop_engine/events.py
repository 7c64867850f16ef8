"""Run events: what the runner emits, the protocol of whoever listens, and the journal that writes them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import tenacity
from sqlalchemy.exc import DBAPIError, OperationalError

from . import metrics, settings
from .states import ClaimLost

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("sop_engine.runner")
T = TypeVar("T")
Change = tuple[str, dict[str, Any], dict[str, Any]]  # event type, event data, state change (Store.record)

WRITE_BEHIND = 0.05  # seconds a step's start may wait to be written with its result
STORE_RETRY_FIRST, STORE_RETRY_MAX = 0.1, 5.0  # seconds between tries of a refused database call: doubling


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    run_id: str
    seq: int  # 1, 2, 3 ... per run, with no gaps
    type: str  # run.created, run.updated, step.updated, step.retried, log
    data: dict[str, Any]
    at: datetime = field(default_factory=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq, "type": self.type, "data": self.data, "at": self.at.isoformat()}


class EventSink(Protocol):
    """Receives every event of a run after it is stored. Must not raise; must return quickly."""

    async def emit(self, event: Event) -> None: ...


class StoreUnavailable(Exception):
    """The database refused a run's writes (locked, read-only, unreachable) for longer than
    `write_retry_seconds`. The execution stops without recording anything more: what it had committed is
    consistent, the run is still `running` under its worker, and whoever holds the claim lets it go (the run
    goes on from its last committed step). Exported by sop_engine.runner."""


def refused(exc: BaseException) -> bool:
    """The database could not take the call now (locked, read-only, gone away): another try may do."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


async def call_store(call: Callable[..., T], *args: Any, what: str = "a database call") -> T:
    """Runs a blocking store call in a thread. Refused, it is tried again with backoff (doubling from
    STORE_RETRY_FIRST to STORE_RETRY_MAX seconds) for up to `write_retry_seconds`, the caller waiting; then
    StoreUnavailable. A store call is one transaction, all or nothing: a try that failed wrote nothing."""
    try:  # the usual case, without building a retry loop (it costs more than the thread hop)
        return await asyncio.to_thread(call, *args)
    except DBAPIError as exc:
        if not refused(exc):
            raise
        refusal = exc
    return await _call_again(call, args, what, refusal)


async def _call_again(call: Callable[..., T], args: tuple[Any, ...], what: str, refusal: DBAPIError) -> T:
    def say(error: BaseException | None, wait: float) -> None:
        first = str(error).splitlines()[0] if error else ""
        log.warning("%s was refused (%s); trying again in %.1fs", what, first, wait)

    limit = settings.current().write_retry_seconds
    tries = tenacity.AsyncRetrying(
        # the first try failed already: the waits go on from the second
        wait=tenacity.wait_exponential(multiplier=2 * STORE_RETRY_FIRST, min=STORE_RETRY_FIRST, max=STORE_RETRY_MAX),
        stop=tenacity.stop_after_delay(max(limit - STORE_RETRY_FIRST, 0)),
        retry=tenacity.retry_if_exception(refused),
        before_sleep=lambda state: say(state.outcome.exception() if state.outcome else None, state.upcoming_sleep),
        reraise=True,
    )
    try:
        if limit <= 0:
            raise refusal
        say(refusal, STORE_RETRY_FIRST)
        await asyncio.sleep(STORE_RETRY_FIRST)
        async for attempt in tries:
            with attempt:
                return await asyncio.to_thread(call, *args)
    except DBAPIError as exc:
        if not refused(exc):
            raise
        first = str(exc.orig or exc).splitlines()[0]
        raise StoreUnavailable(f"{what} was refused for {limit}s: {first}") from exc
    raise AssertionError("unreachable: tenacity reraises the last error")


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Marks a background task's exception as seen: whoever needs it learns it another way."""
    if not task.cancelled():
        task.exception()


class Journal:
    """A run's writes, in order. A change waited for is committed at once, with those asked for before it;
    one not waited for (a step's start, new step rows) goes with the next, or WRITE_BEHIND seconds later: a
    quick step's start and result share one commit. Each commit is told to the sinks, in order. A commit the
    database refuses is tried again while the run waits (call_store); when it gives up, its changes stay
    queued, in order, and this and every later flush raise StoreUnavailable."""

    def __init__(self, store: Store, run_id: str, sinks: Sequence[EventSink], holder: str | None = None) -> None:
        """`holder`: the worker executing the run; every write is made only while it holds the run."""
        self.holder = holder
        self.store = store
        self.run_id = run_id
        self.sinks = sinks
        self.queued: list[Change] = []  # asked for, not yet committed
        self._timer: asyncio.TimerHandle | None = None
        self._order = asyncio.Lock()
        self._last_write: asyncio.Future[None] | None = None  # a commit whose flush was cancelled: it goes on
        self._unavailable: StoreUnavailable | ClaimLost | None = None
        recording = metrics.recording()
        self._timed = recording.writes if recording is not None else None  # sop_event_write_seconds

    async def write(self, change: Change, wait: bool = True) -> None:
        self.queued.append(change)
        if wait:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(WRITE_BEHIND, self._flush_soon)

    def commit_now(self, change: Change) -> asyncio.Future[None]:
        """Starts committing `change` (with those queued before it) and returns at once: the caller awaits
        the returned future before anything that must come after the commit."""
        self.queued.append(change)
        return asyncio.ensure_future(self.flush())

    def _flush_soon(self) -> None:
        self._timer = None
        # a refused commit is raised again by the next flush: here it is only marked seen
        asyncio.ensure_future(self.flush()).add_done_callback(_retrieved)

    async def flush(self) -> None:
        """Commits the changes queued so far, in one transaction, then tells the sinks."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        async with self._order:
            if self._last_write is not None:
                earlier, self._last_write = self._last_write, None
                await asyncio.wait([earlier])
            if self._unavailable is not None:
                raise type(self._unavailable)(str(self._unavailable))
            changes, self.queued = self.queued, []
            if not changes:
                return
            writing = asyncio.ensure_future(self._commit(changes))
            writing.add_done_callback(_retrieved)
            try:
                await asyncio.shield(writing)
            except asyncio.CancelledError:
                if not writing.done():  # a transaction under way goes to its end; the next flush waits for it
                    self._last_write = writing
                raise

    async def _commit(self, changes: list[Change]) -> None:
        started = time.perf_counter()
        try:
            events = await call_store(
                self.store.record_many, self.run_id, changes, self.holder, what=f"a write of run {self.run_id}"
            )
        except ClaimLost as exc:  # the run is no longer this worker's: nothing more of it is written
            self._unavailable = exc
            raise
        except BaseException as exc:
            self.queued[:0] = changes  # none of them was written: they go first, in order
            if isinstance(exc, StoreUnavailable):
                self._unavailable = exc
            raise
        if self._timed is not None:
            self._timed.observe(time.perf_counter() - started)
        for event in events:
            for sink in self.sinks:
                await sink.emit(event)
