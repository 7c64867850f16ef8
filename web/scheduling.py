"""What drives the schedules' tick (sop_engine.scheduler) in every serving process; the runs a tick queued
are told to the live feed and the workers. Several servers tick the same table: each tick of a schedule is
recorded once (its unique key), by whichever server gets there first.

On PostgreSQL, Procrastinate's periodic task drives it: a task on a queue of its own (`schedules`) with a
six-field cron (every second). Every serving process runs a second, small Procrastinate worker on just that
queue (one job at a time, on an app and connections of its own), apart from the runs' worker: `serve
--concurrency 0` servers tick too, and a tick never waits behind long runs. Each worker's periodic deferrer
defers the job for a second; Procrastinate's `procrastinate_periodic_defers` key keeps that to one job per
second across all of them, and a queueing lock to one waiting job (a slow tick is not followed by a
backlog). The job ticks at the present moment, not at its own timestamp (a job that waited while no server
ran is only a late wake-up); the firings' unique key keeps any overlap harmless. A worker that stops (the
database was away) is started again after a pause; the loop below is not run on PostgreSQL.

On SQLite a loop ticks every SOP_SCHEDULE_TICK_SECONDS. SOP_SCHEDULE_TICK_SECONDS=0: this server never
fires schedules (no loop, no periodic task, no schedules worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status

from sop_engine import metrics
from sop_engine.events import utcnow
from sop_engine.liveness import STALE
from sop_engine.runner import Runner
from sop_engine.scheduler import Fired, Scheduler

from .jobs import HEARTBEAT, conninfo
from .workers import WorkerPool

log = logging.getLogger("sop_engine.web.scheduling")
TASK = "sop.tick_schedules"
QUEUE = "schedules"
CRON = "* * * * * *"  # every second (croniter's sixth field: seconds)
RESTART = 5.0  # seconds before a stopped schedules worker is started again
STOPPING = 10.0  # seconds the worker gets, on shutdown, to finish its tick and unregister
APPLICATION = "sop-schedules"  # its connections' name in pg_stat_activity
LATE = 60  # seconds: a periodic job older than this is logged as a late wake-up (it still ticks now)


class ScheduleLoop:
    def __init__(self, scheduler: Scheduler, runner: Runner, pool: WorkerPool, every: float) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.pool = pool
        self.every = every
        self.periodic: PeriodicTicks | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.every <= 0:
            return
        if self.pool.jobs is not None:  # PostgreSQL: Procrastinate's periodic task drives the tick
            self.periodic = PeriodicTicks(self.pool.store.url, self, f"{self.pool.name}-schedules")
            self.periodic.start()
        else:
            self._task = asyncio.create_task(self._ticking(), name="schedules")

    async def stop(self) -> None:
        if self.periodic is not None:
            await self.periodic.stop()
            self.periodic = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def round(self, by: str = "loop") -> list[Fired]:
        """One tick at the present moment; the runs it queued are announced and the workers woken. `by`:
        what drove it (loop, procrastinate), for the metrics."""
        fired = await asyncio.to_thread(self.scheduler.tick, utcnow())
        recording = metrics.recording()
        if recording is not None and fired:
            recording.child(recording.schedule_firings, by).inc(len(fired))
        for firing in fired:
            if firing.event is not None:
                await self.runner.tell(firing.event)
        if any(f.run_id for f in fired):
            self.pool.wake()
        return fired

    async def _ticking(self) -> None:
        while True:
            await self.safe_round("loop")
            await asyncio.sleep(self.every)

    async def safe_round(self, by: str) -> None:
        try:
            await self.round(by)
        except Exception as exc:  # the database is away for a moment: the next round tries again
            log.warning("schedules could not tick: %s", str(exc).splitlines()[0] if str(exc) else exc)


class PeriodicTicks:
    """Procrastinate's periodic task for the tick, and this process's worker for its queue."""

    def __init__(self, database_url: str, loop: ScheduleLoop, name: str) -> None:
        self.loop = loop
        self.name = name
        connector = PsycopgConnector(
            conninfo=conninfo(database_url), min_size=1, max_size=3, kwargs={"application_name": APPLICATION}
        )
        self.app = App(connector=connector)
        task = self.app.task(name=TASK, queue=QUEUE, pass_context=False)(self._job)
        self.app.periodic(cron=CRON, periodic_id=QUEUE, queueing_lock=TASK)(task)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _job(self, timestamp: int) -> None:
        """One tick, now: `timestamp` (the second Procrastinate deferred it for) only says how late it is."""
        late = time.time() - timestamp
        if late > LATE:
            log.info("a schedules job for %d ran %.0f s late: ticking at the present moment", timestamp, late)
        await self.loop.safe_round("procrastinate")  # a failed tick is not kept as a failed job

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervising(), name="schedules-worker")

    async def _supervising(self) -> None:
        """Opens the app and runs the worker; when it stops (a side task of Procrastinate's failed: the
        database was away), starts it again after a pause, until `stop`."""
        opened = False
        try:
            while True:
                try:
                    if not opened:
                        await self.app.open_async()
                        opened = True
                    await self._clear_stalled()
                    await self.app.run_worker_async(
                        queues=[QUEUE],
                        name=self.name,
                        concurrency=1,
                        install_signal_handlers=False,  # the process stops it on SIGTERM
                        update_heartbeat_interval=HEARTBEAT,
                        stalled_worker_timeout=STALE,
                        shutdown_graceful_timeout=STOPPING,
                        fetch_job_polling_interval=1.0,
                        delete_jobs="successful",
                    )
                    log.warning("the schedules worker stopped: starting it again in %.0f s", RESTART)
                except Exception as exc:
                    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), repr(exc))
                    log.warning("the schedules worker stopped (%s): starting it again in %.0f s", first, RESTART)
                await asyncio.sleep(RESTART)
        finally:
            if opened:
                with contextlib.suppress(Exception):
                    await self.app.close_async()

    async def _clear_stalled(self) -> None:
        """Jobs of this queue whose worker was killed mid-tick: the next job ticks anyway, so they are
        dropped rather than run again."""
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALE):
            with contextlib.suppress(Exception):  # another process dropped it first
                await manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=True)

    async def stop(self) -> None:
        """Procrastinate's worker stops on a cancel (once: a second one would cut its shutdown short): it
        lets its tick end, unregisters, and the app's connections close."""
        if self._task is None:
            return
        if not self._stopping:
            self._stopping = True
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._task), STOPPING + 5)
        self._task = None
