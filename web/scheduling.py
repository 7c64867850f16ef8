"""The schedules' loop: in every serving process, every SOP_SCHEDULE_TICK_SECONDS, one tick of the
scheduler (sop_engine.scheduler) in a thread; the runs it queued are told to the live feed and the workers.
Several servers tick the same table: each tick of a schedule is recorded once (its unique key), by whichever
server gets there first.

On PostgreSQL too this loop drives the tick, rather than a Procrastinate periodic task: such a task runs in
Procrastinate's job worker, which only processes with a worker pool start (`--concurrency 0` servers have
none) and whose slots are the runs' own, so a tick would wait behind long runs; the unique key keeps the
loop correct with any number of servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sop_engine.events import utcnow
from sop_engine.runner import Runner
from sop_engine.scheduler import Fired, Scheduler

from .workers import WorkerPool

log = logging.getLogger("sop_engine.web.scheduling")


class ScheduleLoop:
    def __init__(self, scheduler: Scheduler, runner: Runner, pool: WorkerPool, every: float) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.pool = pool
        self.every = every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.every > 0:
            self._task = asyncio.create_task(self._ticking(), name="schedules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def round(self) -> list[Fired]:
        """One tick at the present moment; the runs it queued are announced and the workers woken."""
        fired = await asyncio.to_thread(self.scheduler.tick, utcnow())
        for firing in fired:
            if firing.event is not None:
                await self.runner.tell(firing.event)
        if any(f.run_id for f in fired):
            self.pool.wake()
        return fired

    async def _ticking(self) -> None:
        while True:
            try:
                await self.round()
            except Exception as exc:  # the database is away for a moment: the next round tries again
                log.warning("schedules could not tick: %s", str(exc).splitlines()[0] if str(exc) else exc)
            await asyncio.sleep(self.every)
