"""The worker pool of the server process: claims queued runs from the database and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field

from sop_engine.control import RunControl
from sop_engine.document import LoadedSop, load_sop
from sop_engine.runner import Runner
from sop_engine.store import Store

log = logging.getLogger("sop_engine.web.workers")


@dataclass
class LiveRun:
    """A run a worker of this process is executing right now."""

    run_id: str
    control: RunControl
    task: asyncio.Task[object] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerPool:
    def __init__(self, store: Store, runner: Runner, concurrency: int = 4, poll_seconds: float = 1.0) -> None:
        self.store = store
        self.runner = runner
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.live: dict[str, LiveRun] = {}
        self._documents: dict[int, LoadedSop] = {}
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._recover()
        self._workers = [asyncio.create_task(self._work(i), name=f"worker-{i}") for i in range(self.concurrency)]

    async def stop(self) -> None:
        for live in list(self.live.values()):
            live.control.stopping = True
            if live.task is not None:
                live.task.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def wake(self) -> None:
        """A run was queued: a free worker takes it now rather than at its next poll."""
        self._wake.set()

    def _recover(self) -> None:
        """Runs left `running` by a server that stopped go back to the queue, and resume where they were."""
        for run in self.store.runs_with_status("running"):
            self.store.record(
                run.id,
                "run.updated",
                {"status": "queued", "reason": "recovered after a restart"},
                run={"status": "queued", "worker": None},
            )

    def document(self, document_id: int) -> LoadedSop:
        loaded = self._documents.get(document_id)
        if loaded is None:
            row = self.store.document_by_id(document_id)
            if row is None:
                raise LookupError(f"document {document_id} is gone")
            loaded = self._documents[document_id] = load_sop(row.source)
        return loaded

    async def _work(self, number: int) -> None:
        while True:
            run = self.store.claim_next_run(self.name)
            if run is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                continue
            live = LiveRun(run.id, RunControl(breakpoints=set(run.breakpoints or [])))
            self.live[run.id] = live
            try:
                loaded = self.document(run.document_id)
                live.task = asyncio.current_task()
                await self.runner.execute(run.id, loaded, self.runner.inputs_of(run), live.control)
            except asyncio.CancelledError:
                if live.control.stopping:
                    raise
                # a person cancelled the run: the runner has recorded it; this worker goes on
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            except Exception:
                log.exception("run %s crashed its worker", run.id)
                self.store.record(
                    run.id,
                    "run.updated",
                    {"status": "failed", "error": "internal error"},
                    run={"status": "failed", "error": "internal error: see the server log"},
                )
            finally:
                live.done.set()
                self.live.pop(run.id, None)

    async def cancel(self, run_id: str) -> bool:
        """Stops a live run promptly: the step in flight is interrupted and the browser context closed."""
        live = self.live.get(run_id)
        if live is None or live.task is None:
            return False
        live.task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.done.wait(), 15)
        return True
