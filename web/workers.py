"""The worker pool of the server process: claims queued runs from the database and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from sop_engine.control import RunControl
from sop_engine.document import LoadedSop, load_sop
from sop_engine.events import utcnow
from sop_engine.liveness import STALE, orphaned, worker_name
from sop_engine.metrics import claimed
from sop_engine.runner import Runner, StoreUnavailable
from sop_engine.states import RUN_TERMINAL, TransitionError
from sop_engine.store import Store

log = logging.getLogger("sop_engine.web.workers")
# the database went away under a run: the runner retried its writes, then gave up
STORE_DOWN: tuple[type[BaseException], ...] = (DBAPIError, StoreUnavailable)
BACKOFF = (0.5, 10.0)  # seconds a worker waits after a database failure, doubling up to the second


@dataclass
class LiveRun:
    """A run a worker of this process is executing right now."""

    run_id: str
    control: RunControl
    task: asyncio.Task[Any] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerPool:
    CHECK_EVERY = 5.0  # seconds between looks for runs whose worker stopped

    def __init__(self, store: Store, runner: Runner, concurrency: int = 4, poll_seconds: float = 1.0) -> None:
        from .jobs import queue_for

        self.store = store
        self.runner = runner
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.name = worker_name()
        self.live: dict[str, LiveRun] = {}
        self._documents: dict[int, LoadedSop] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # a claim and its registration in `live` happen under this lock, and so does every control: a control
        # comes wholly before a claim (which then reads it from the database) or after the run is live here
        self.claiming = asyncio.Lock()
        self.draining = False  # on its way out: it claims nothing more
        # on PostgreSQL, runs come as Procrastinate jobs; on SQLite, the pool's workers poll the runs table
        self.jobs = queue_for(store.url, self)

    @property
    def queue(self) -> str:
        """How runs reach this pool: `procrastinate` (PostgreSQL) or `local` (polling the runs table)."""
        return "procrastinate" if self.jobs is not None else "local"

    async def start(self) -> None:
        await self.recover()
        if self.jobs is not None:
            await self.jobs.open()
            await self.jobs.reconcile()
            if self.concurrency > 0:
                self.jobs.work(self.concurrency)
            self._tasks = [asyncio.create_task(self.jobs.reconciling(self.CHECK_EVERY), name="reconciler")]
        else:
            self._tasks = [asyncio.create_task(self._work(i), name=f"worker-{i}") for i in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._watch(), name="recovery"))

    async def drain(self, grace: float) -> None:
        """SIGTERM: claims nothing more, lets the runs going here finish for up to `grace` seconds, then hands
        back the rest (paused ones at once: they wait for a person) and stops."""
        self.draining = True
        if self.jobs is not None:
            self.jobs.stop_fetching()
        going = [live for live in self.live.values() if live.control.waiting is None]
        if going and grace > 0:
            log.info("draining: waiting up to %.0f s for %d run(s) to finish", grace, len(going))
            await asyncio.wait([asyncio.ensure_future(live.done.wait()) for live in going], timeout=grace)
        await self.stop()

    async def stop(self) -> None:
        """Runs in flight go back to the queue (paused ones stay paused), to go on after a restart."""
        self.draining = True
        skips = {run_id: set(live.control.skips) for run_id, live in self.live.items()}
        for live in list(self.live.values()):
            live.control.stopping = True
            if live.task is not None:
                live.task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for run_id, keys in skips.items():
            await self._keep_skips(run_id, keys)
        if self.jobs is not None:
            await self.jobs.stop()
            with contextlib.suppress(Exception):  # jobs for the runs handed back; else another process's round
                await self.jobs.reconcile()
            await self.jobs.close()

    def wake(self) -> None:
        """A run was queued: a free worker takes it now rather than at its next poll (on PostgreSQL: its job
        is deferred now rather than at the reconciler's next round)."""
        if self.jobs is not None:
            self.jobs.due()
        self._wake.set()

    async def take(self, run_id: str) -> None:
        """A job delivered this run: the worker claims it through the gate and executes it, or drops the job
        when the run cannot be claimed (another worker has it, it ended, or this process drains)."""
        if self.draining or run_id in self.live:
            return
        async with self.claiming:
            if self.draining:  # SIGTERM came while a control held the lock
                return
            try:
                claim = await asyncio.to_thread(self.store.claim_run, run_id, self.name, queued_only=True)
            except TransitionError as exc:  # RunHeld included: a live worker executes it
                log.debug("job for run %s dropped: %s", run_id, exc)
                return
            if claim.event is None:  # this process holds it already
                return
            live = self._register(claim.run)
        try:
            await self.runner.tell(claim.event)
            await self._execute(claim.run, live)
        except asyncio.CancelledError:
            raise
        except Exception:  # a worker outlives any run
            log.exception("run %s ended with an error", run_id)

    async def record(self, run_id: str, type_: str, data: dict[str, Any], **values: Any) -> None:
        """A state change made outside a run's execution, stored and sent to the feed like any other."""
        event = await asyncio.to_thread(self.store.record, run_id, type_, data, **values)
        for sink in self.runner.sinks:
            await sink.emit(event)

    async def recover(self) -> list[str]:
        """Runs whose worker is gone go back to the queue and resume where they were: a worker of this
        machine whose process is dead, or any worker silent for longer than STALE seconds. So a run is
        never stuck in `running`."""
        recovered = []
        for run in await asyncio.to_thread(self.store.runs_held):
            if run.id in self.live or not orphaned(run.worker, run.heartbeat_at, self.name):
                continue
            try:  # only if that worker still holds it: the gate refuses if anyone moved it meanwhile
                await self.record(
                    run.id,
                    "run.updated",
                    {"status": "queued", "reason": f"recovered: its worker {run.worker} stopped"},
                    holder=run.worker,
                    run={"status": "queued", "worker": None, "heartbeat_at": None},
                )
            except TransitionError:
                continue
            recovered.append(run.id)
        if recovered:
            log.warning("recovered %d run(s) whose worker stopped", len(recovered))
            self.wake()
        return recovered

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(min(self.CHECK_EVERY, STALE / 3))
            try:
                await self.recover()
            except STORE_DOWN as exc:
                log.warning("recovery skipped, the database is unavailable: %s", str(exc).splitlines()[0])

    def document(self, document_id: int) -> LoadedSop:
        loaded = self._documents.get(document_id)
        if loaded is None:
            row = self.store.document_by_id(document_id)
            if row is None:
                raise LookupError(f"document {document_id} is gone")
            loaded = self._documents[document_id] = load_sop(row.source, base_dir=row.base_dir_path)
        return loaded

    async def _work(self, number: int) -> None:
        """Claims and runs queued runs, for as long as the pool lives: a database failure makes it wait and
        try again, never ends it."""
        pause = BACKOFF[0]
        while not self.draining:
            try:
                async with self.claiming:
                    if self.draining:
                        return
                    claim = await asyncio.to_thread(self.store.claim_next_run, self.name)
                    live = self._register(claim.run) if claim is not None else None
            except STORE_DOWN as exc:
                log.warning("worker %d cannot claim, the database is unavailable: %s", number, _first(exc))
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF[1])
                continue
            pause = BACKOFF[0]
            if claim is None or live is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                continue
            try:
                await self.runner.tell(claim.event)
                await self._execute(claim.run, live)
            except Exception:  # a worker outlives any run: it goes on with the next one
                log.exception("worker %d: run %s ended with an error", number, claim.run.id)

    def _register(self, run: Any) -> LiveRun:
        claimed(run)  # metrics: the run's SOP, and how long it waited in the queue
        live = self.live[run.id] = LiveRun(run.id, RunControl(breakpoints=set(run.breakpoints or [])))
        return live

    async def _execute(self, run: Any, live: LiveRun) -> None:
        try:
            live.task = asyncio.current_task()
            loaded = await asyncio.to_thread(self.document, run.document_id)
            await self.runner.execute(run.id, loaded, self.runner.inputs_of(run), live.control, worker=self.name)
        except asyncio.CancelledError:
            if live.control.stopping:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self._settle_cancelled(run.id, live)
        except STORE_DOWN as exc:
            await self._release(run.id, exc)
        except Exception:
            log.exception("run %s crashed its worker", run.id)
            # when even this fails (the database is down, or the run ended meanwhile), recovery finds it later
            with contextlib.suppress(*STORE_DOWN, TransitionError):
                await self.record(
                    run.id,
                    "run.updated",
                    {"status": "failed", "error": "internal error"},
                    run={"status": "failed", "error": "internal error: see the server log"},
                )
        finally:
            live.done.set()
            self.live.pop(run.id, None)
            if run.batch_id:  # the batch's next row may go now
                self.wake()

    async def _release(self, run_id: str, exc: BaseException) -> None:
        """The database failed under the run for longer than the runner waits: the run goes back to the
        queue, to go on from its last committed step when the database is back (or, when even the release
        cannot be written, when recovery finds its heartbeat stale)."""
        log.warning("run %s released, the database is unavailable: %s", run_id, _first(exc))
        try:
            await asyncio.to_thread(self.store.release_claim, run_id, self.name)
            self.wake()
        except STORE_DOWN as again:
            log.warning("run %s could not be released (%s): recovery will take it back", run_id, _first(again))

    async def _settle_cancelled(self, run_id: str, live: LiveRun) -> None:
        """A person cancelled the run, or a control took it back (handing it back to the queue): the runner
        has recorded which, unless the cancel came before it could; then it is recorded here."""
        if live.control.handing_back:
            return
        run = await asyncio.to_thread(self.store.run, run_id)
        if run is not None and run.status not in RUN_TERMINAL:
            with contextlib.suppress(TransitionError):  # it ended meanwhile: the gate keeps what it became
                await self.record(
                    run_id,
                    "run.updated",
                    {"status": "cancelled", "error": "cancelled"},
                    run={"status": "cancelled", "error": "cancelled", "worker": None},
                )

    async def cancel(self, run_id: str, hand_back: bool = False) -> bool:
        """Stops a live run promptly: the step in flight is interrupted and the browser context closed.
        With `hand_back`, the run is not cancelled: it is released (for a control that changes it and
        queues it again). Returns once the worker has let go of it."""
        live = self.live.get(run_id)
        if live is None or live.task is None:
            return False
        live.control.handing_back = hand_back
        live.task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.done.wait(), 15)
        if hand_back:
            await self._keep_skips(run_id, live.control.skips)
        return True

    async def _keep_skips(self, run_id: str, keys: set[str]) -> None:
        """Steps a person skipped in a live run that it had not reached when it let go of the run: recorded
        now, so that the next execution finds them skipped (the runner skips them itself when it is live)."""
        reason = "skipped by a person"
        for key in sorted(keys):
            with contextlib.suppress(TransitionError, *STORE_DOWN):  # reached meanwhile, or the database is gone
                await self.record(
                    run_id,
                    "step.updated",
                    {"key": key, "status": "skipped", "reason": reason},
                    step=(key, {"status": "skipped", "reason": reason, "finished_at": utcnow()}),
                )


def _first(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
