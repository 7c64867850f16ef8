"""Batches: one SOP over the rows of a data file, a run per row, kept busy N at a time."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import uuid
from typing import Any

from . import telemetry
from .datafile import Row
from .document import LoadedSop, load_sop
from .events import call_store, utcnow
from .liveness import orphaned, worker_name
from .runner import Runner, shown_inputs
from .states import RunStatus, TransitionError
from .store import RunHeld
from .store.runs import new_run_row
from .tables import BatchItemRow, BatchRow, RunRow
from .vault import Vault

ENDED = {"completed", "failed", "cancelled"}
ROW_STATUSES = ("completed", "failed", "running", "queued", "paused", "cancelled", "invalid")  # a result line's


def default_concurrency() -> int:
    """Browser flows mostly wait on pages: two runs per core keep a Chromium busy."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class Batches:
    """Creates batches, runs them embedded (no server), resumes and retries them, reports results."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.store = runner.store
        self._documents: dict[int, LoadedSop] = {}

    def _new_run(
        self,
        loaded: LoadedSop,
        document_id: int,
        version: int,
        batch_id: str,
        row: Row,
        priority: int,
        vault: Vault | None,
    ) -> RunRow:
        assert row.inputs is not None
        return new_run_row(
            document_id,
            loaded.sop.id,
            version,
            shown_inputs(loaded, row.inputs),
            RunStatus.QUEUED.value,
            priority,
            secrets=vault.seal(row.inputs) if vault else None,
            batch_id=batch_id,
            row_number=row.number,
            trace_context=telemetry.traceparent(),  # the request's (or command's) that made the row's run
        )

    def create(
        self,
        loaded: LoadedSop,
        rows: list[Row],
        source: str,
        concurrency: int,
        priority: int = 1,
        created_by: str | None = None,
    ) -> BatchRow:
        """A batch and its runs (which record the same creator)."""
        document = self.store.save_document(loaded, created_by=created_by)
        vault = Vault() if loaded.sop.secret_inputs else None
        batch = BatchRow(
            id=uuid.uuid4().hex,
            document_id=document.id,
            sop_id=document.sop_id,  # type: ignore[arg-type]
            sop_version=document.version,
            source=source,
            concurrency=concurrency,
            priority=priority,
            rows=len(rows),
            created_at=utcnow(),
            created_by=created_by,
        )
        runs, items = [], []
        for row in rows:
            run = None
            if row.inputs is not None:
                run = self._new_run(loaded, document.id, document.version, batch.id, row, priority, vault)  # type: ignore[arg-type]
                runs.append(run)
            items.append(
                BatchItemRow(
                    batch_id=batch.id, row_number=row.number, run_id=run.id if run else None, invalid=row.error
                )
            )
        return self.store.create_batch(batch, runs, items)

    def document(self, document_id: int) -> LoadedSop:
        if document_id not in self._documents:
            row = self.store.document_by_id(document_id)
            assert row is not None
            self._documents[document_id] = load_sop(row.source)
        return self._documents[document_id]

    async def run(self, batch_id: str, concurrency: int | None = None) -> None:
        """Runs the batch's queued rows in this process, `concurrency` at a time, until none is left.
        The store is called from threads (call_store): the event loop serves the runs meanwhile."""
        batch = await call_store(self.store.batch, batch_id)
        assert batch is not None
        name = worker_name()

        async def worker() -> None:
            claim_next = self.store.claim_next_run
            while (claim := await call_store(claim_next, name, batch_id, what="claiming a row")) is not None:
                await self.runner.tell(claim.event)
                loaded = await call_store(self.document, claim.run.document_id)
                await self.runner.execute(claim.run.id, loaded, self.runner.inputs_of(claim.run), worker=name)

        await asyncio.gather(*(worker() for _ in range(concurrency or batch.concurrency)))
        await call_store(self.finish_if_done, batch_id)

    def finish_if_done(self, batch_id: str) -> None:
        counts = self.store.batch_counts(batch_id)
        if not set(counts) - ENDED - {"invalid"}:
            self.store.update_batch(batch_id, status="completed", finished_at=utcnow())

    def resume(self, batch_id: str, force: bool = False) -> int:
        """After the process running the batch died: its runs left `running` or `paused` go back to the
        queue, and pick up where they were (completed steps are not run again). Returns how many. Raises
        RunHeld (nothing changed) when a live worker still holds one of them, unless `force`."""
        interrupted = self.store.runs_with_status("running", batch_id) + self.store.runs_with_status("paused", batch_id)
        me = worker_name()
        if not force:
            for run in interrupted:
                if not orphaned(run.worker, run.heartbeat_at, me):
                    raise RunHeld(run.id, run.worker or "?", run.heartbeat_at)
        for run in interrupted:
            self.store.claim_run(run.id, me, force=force)  # taken from its dead holder, with its event
            self.store.release_claim(run.id, me, reason="resumed")
        self.store.update_batch(batch_id, status="running", finished_at=None)
        return len(interrupted)

    def retry_failed(self, batch_id: str) -> list[int]:
        """A new run, from the start, for every row whose run failed. Returns their row numbers."""
        batch = self.store.batch(batch_id)
        assert batch is not None
        loaded = self.document(batch.document_id)
        vault = Vault() if loaded.sop.secret_inputs else None
        retried = []
        for item, run in self.store.batch_items(batch_id, status="failed"):
            assert run is not None
            inputs = self.runner.inputs_of(run)
            row = Row(item.row_number, inputs)
            new = self._new_run(loaded, batch.document_id, batch.sop_version, batch_id, row, run.priority, vault)
            self.store.replace_item_run(item.id, new)  # type: ignore[arg-type]
            retried.append(item.row_number)
        if retried:
            self.store.update_batch(batch_id, status="running", finished_at=None)
        return retried

    def cancel(self, batch_id: str) -> int:
        """Cancels the rows still queued; returns how many. The batch is cancelled first, so that its last run
        cancelled here does not finish it as completed (sop_engine.store.webhooks.finish_batch); its webhooks
        hear of it once its rows are cancelled."""
        was = self.store.batch(batch_id)
        self.store.update_batch(batch_id, tell=False, status="cancelled", finished_at=utcnow())
        cancelled = 0
        for run in self.store.runs_with_status("queued", batch_id):
            try:
                self.store.record(
                    run.id,
                    "run.updated",
                    {"status": "cancelled", "error": "batch cancelled"},
                    run={"status": "cancelled", "error": "batch cancelled", "finished_at": utcnow()},
                )
            except TransitionError:  # a worker claimed it meanwhile: it is no longer queued
                continue
            cancelled += 1
        if was is not None and was.status == "running":
            self.store.batch_ended(batch_id)
        return cancelled

    # results ---------------------------------------------------------------------------------

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        """One line per row, in row order: row number, status, outputs, error, run id, and `restored`: how
        many times the row's browser was rebuilt from a checkpoint (what it held in memory was lost)."""
        lines = []
        rebuilt = self.store.restorations_in_batch(batch_id)
        for item, run in self.store.batch_items(batch_id):
            if run is None:
                lines.append(
                    {
                        "row": item.row_number,
                        "status": "invalid",
                        "outputs": None,
                        "error": item.invalid,
                        "run_id": None,
                        "restored": 0,
                    }
                )
            else:
                lines.append(
                    {
                        "row": item.row_number,
                        "status": run.status,
                        "outputs": run.outputs,
                        "error": run.error,
                        "run_id": run.id,
                        "restored": rebuilt.get(run.id, 0),
                    }
                )
        return lines

    async def current_summary(self, batch_id: str) -> dict[str, Any]:
        """`summary`, read in a thread, without the cost: for a progress display next to running rows."""
        return await call_store(self.summary, batch_id, False, what=f"reading batch {batch_id}")

    def summary(self, batch_id: str, cost: bool = True) -> dict[str, Any]:
        """The batch, its counts, its rate; with `cost`, what its runs cost together (sop_engine.cost)."""
        batch = self.store.batch(batch_id)
        assert batch is not None
        counts = self.store.batch_counts(batch_id)
        ended = sum(counts.get(s, 0) for s in ENDED)
        end = _aware(batch.finished_at) if batch.finished_at else utcnow()
        elapsed = (end - _aware(batch.created_at)).total_seconds()
        rate = ended / elapsed if elapsed > 0 and ended else 0.0
        left = counts.get("queued", 0) + counts.get("running", 0) + counts.get("paused", 0)
        status = batch.status
        if status == "running" and not left:
            status = "completed"
            if batch.finished_at is None:
                self.finish_if_done(batch_id)
        shown = {
            "id": batch.id,
            "sop_id": batch.sop_id,
            "sop_version": batch.sop_version,
            "source": batch.source,
            "status": status,
            "rows": batch.rows,
            "concurrency": batch.concurrency,
            "counts": {s: counts.get(s, 0) for s in ROW_STATUSES},
            "rate_per_s": round(rate, 3),
            "eta_s": round(left / rate, 1) if rate else None,
            "created_at": batch.created_at.isoformat(),
            "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        }
        if cost:
            shown["cost"] = self.store.batch_cost(batch_id)
        return shown


def _aware(moment: Any) -> Any:
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def results_csv(lines: list[dict[str, Any]], outputs: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "status", "run_id", "error", *outputs])
    for line in lines:
        values = line["outputs"] or {}
        cells = [
            v if isinstance(v, str) else "" if v is None else json.dumps(v)
            for v in (values.get(name) for name in outputs)
        ]
        writer.writerow([line["row"], line["status"], line["run_id"] or "", line["error"] or "", *cells])
    return buffer.getvalue()


def results_jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, default=str) + "\n" for line in lines)
