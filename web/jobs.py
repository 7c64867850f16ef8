"""Delivery of queued runs to worker processes as Procrastinate jobs, on PostgreSQL.

A job is only delivery: it carries a run's id, and the worker that gets it claims the run through the gate
(sop_engine.store.queue.claim_run), which stays the one authority over who executes it. A job whose run
cannot be claimed (taken, ended, held by a live worker) is acknowledged and dropped. One job waits per run
(Procrastinate's queueing lock: the run's id). The reconciler, in every process, defers a job for any queued
run that has none (a crash between the two writes, a run handed back, a batch's next rows), cancels jobs
whose run ended, and hands the jobs of a worker whose heartbeat stopped back to the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Status
from sqlalchemy.engine import make_url

from sop_engine.liveness import STALE

if TYPE_CHECKING:
    from .workers import WorkerPool

log = logging.getLogger("sop_engine.web.jobs")
TASK = "sop.execute_run"
QUEUE = "runs"
HEARTBEAT = 5.0  # seconds between a worker's heartbeats in Procrastinate's table
STOPPING = 30.0  # seconds Procrastinate's worker gets to record its last jobs' ends and unregister
PRIORITY = {0: 20, 1: 10, 2: 0}  # the run's (0 high) as Procrastinate's (higher first)


def conninfo(database_url: str) -> str:
    """psycopg's connection string for SQLAlchemy's `postgresql+psycopg://…` URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class JobQueue:
    """Procrastinate's app for one process: it defers jobs always, and executes them with `work` when the
    process has a worker pool."""

    def __init__(self, database_url: str, pool: WorkerPool) -> None:
        self.pool = pool
        self.app = App(connector=PsycopgConnector(conninfo=conninfo(database_url), min_size=1, max_size=8))
        self.app.task(name=TASK, queue=QUEUE)(self._job)
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self._due = asyncio.Event()

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    # delivering ------------------------------------------------------------------------------

    async def defer(self, run_id: str, priority: int) -> bool:
        """A job for the run; False when one waits already (the queueing lock)."""
        deferrer = self.app.configure_task(TASK, queueing_lock=run_id, priority=PRIORITY.get(priority, 10))
        try:
            await deferrer.defer_async(run_id=run_id)
        except AlreadyEnqueued:
            return False
        return True

    def due(self) -> None:
        """Runs were queued: deliver them now rather than at the next round."""
        self._due.set()

    async def reconcile(self) -> int:
        """Jobs for queued runs that have none; cancelled jobs for runs that ended; stalled jobs retried.
        Returns how many jobs it deferred."""
        store = self.pool.store
        deferred = 0
        for run in await asyncio.to_thread(store.undelivered_runs):
            deferred += await self.defer(run.run_id, run.priority)
        for job_id in await asyncio.to_thread(store.needless_jobs):
            await self.app.job_manager.cancel_job_by_id_async(job_id)
        for job in await self.app.job_manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALE):
            await self._stalled(job)
        return deferred

    async def _stalled(self, job: Any) -> None:
        """A job whose worker went silent waits again (its run, once recovery queued it, goes to whoever takes
        it); when another job waits for that run already, the stalled one is closed instead."""
        manager = self.app.job_manager
        try:
            await manager.retry_job(job)
        except Exception:  # the queueing lock: one waiting job per run
            with contextlib.suppress(Exception):  # another process closed it first
                await manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=True)

    async def reconciling(self, every: float) -> None:
        """The reconciler's loop: every `every` seconds, and at once when runs were queued."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), every)
            self._due.clear()
            try:
                async with self.pool.claiming:  # a control queues under this lock: deliver after it committed
                    pass
                deferred = await self.reconcile()
            except Exception as exc:  # the database is away for a moment: the next round tries again
                log.warning("the job queue could not be reconciled: %s", str(exc).splitlines()[0] if str(exc) else exc)
                continue
            if deferred:
                log.debug("deferred %d job(s)", deferred)

    # executing -------------------------------------------------------------------------------

    async def _job(self, run_id: str) -> None:
        await self.pool.take(run_id)

    def work(self, concurrency: int) -> None:
        """Executes jobs, `concurrency` at once, until `stop`."""
        self._worker = asyncio.create_task(
            self.app.run_worker_async(
                queues=[QUEUE],
                name=self.pool.name,
                concurrency=concurrency,
                install_signal_handlers=False,  # the process drains itself on SIGTERM
                update_heartbeat_interval=HEARTBEAT,
                stalled_worker_timeout=STALE,
                fetch_job_polling_interval=2.0,
                delete_jobs="successful",
            ),
            name="procrastinate-worker",
        )

    def stop_fetching(self) -> None:
        """Fetches no more jobs: Procrastinate's worker stops on a cancel (once: a second one would cut its
        shutdown short), then waits for the jobs in flight."""
        if self._worker is not None and not self._stopping:
            self._stopping = True
            self._worker.cancel()

    async def stop(self) -> None:
        """Once the jobs in flight ended (their runs done or handed back): the worker unregisters."""
        if self._worker is None:
            return
        self.stop_fetching()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self._worker), STOPPING)
        self._worker = None


def queue_for(database_url: str, pool: WorkerPool) -> JobQueue | None:
    """The job queue on PostgreSQL; None on SQLite, where the pool's own workers poll the runs table."""
    return JobQueue(database_url, pool) if make_url(database_url).get_backend_name() == "postgresql" else None
