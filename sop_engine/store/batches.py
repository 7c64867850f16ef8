"""Batches: their rows and the runs that carry them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, update
from sqlmodel import select

from ..cost import FIGURES, Figures
from ..events import utcnow
from ..tables import (
    BatchItemRow,
    BatchRow,
    RunEventRow,
    RunRow,
)
from .database import Database
from .webhooks import notify_batch


class Batches(Database):
    def create_batch(self, batch: BatchRow, runs: list[RunRow], items: list[BatchItemRow]) -> BatchRow:
        """A batch with all its rows and queued runs (each with its run.created event), in one transaction."""
        now = utcnow()
        with self.session() as s, s.begin():
            s.add(batch)
            s.flush()
            for run in runs:
                run.last_seq = 1
                run.created_by = run.created_by or batch.created_by
                s.add(run)
            s.flush()
            for run in runs:
                data = {
                    "status": "queued",
                    "sop_id": run.sop_id,
                    "inputs": run.inputs,
                    "batch_id": batch.id,
                    "row": run.row_number,
                }
                s.add(RunEventRow(run_id=run.id, seq=1, type="run.created", data=data, at=now))
            for item in items:
                s.add(item)
        return batch

    def batch(self, batch_id: str) -> BatchRow | None:
        with self.reading() as s:
            return s.get(BatchRow, batch_id)

    def batches(self, limit: int = 50) -> list[BatchRow]:
        with self.reading() as s:
            return list(s.exec(select(BatchRow).order_by(BatchRow.created_at.desc()).limit(limit)))

    def update_batch(self, batch_id: str, tell: bool = True, **values: Any) -> None:
        """A batch that ends here (completed, cancelled) from running tells its webhooks, in this transaction,
        unless `tell` is false (its caller tells them with `batch_ended` once the batch's runs are ended too)."""
        with self.session() as s, s.begin():
            was = s.exec(select(BatchRow.status).where(BatchRow.id == batch_id)).first()
            s.execute(update(BatchRow).where(BatchRow.id == batch_id).values(**values))
            if tell and was == "running" and values.get("status") in ("completed", "cancelled"):
                notify_batch(s.connection(), batch_id, utcnow())

    def batch_ended(self, batch_id: str) -> None:
        """Tells the webhooks of a batch that ended (its batch.finished, with its runs' counts now)."""
        with self.session() as s, s.begin():
            notify_batch(s.connection(), batch_id, utcnow())

    def batch_items(
        self, batch_id: str, status: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[tuple[BatchItemRow, RunRow | None]]:
        """The rows of a batch in row order, each with the run that carries it now."""
        with self.reading() as s:
            query = (
                select(BatchItemRow, RunRow)
                .join(RunRow, RunRow.id == BatchItemRow.run_id, isouter=True)  # type: ignore[arg-type]
                .where(BatchItemRow.batch_id == batch_id)
            )
            if status == "invalid":
                query = query.where(BatchItemRow.invalid != None)  # noqa: E711
            elif status is not None:
                query = query.where(RunRow.status == status)
            query = query.order_by(BatchItemRow.row_number).offset(offset)
            return list(s.exec(query.limit(limit) if limit else query).all())

    def restorations_in_batch(self, batch_id: str) -> dict[str, int]:
        """Run id -> how many run.restored events it has, for the batch's runs that have any."""
        with self.reading() as s:
            query = (
                select(RunEventRow.run_id, func.count())
                .join(BatchItemRow, BatchItemRow.run_id == RunEventRow.run_id)  # type: ignore[arg-type]
                .where(BatchItemRow.batch_id == batch_id, RunEventRow.type == "run.restored")
                .group_by(RunEventRow.run_id)
            )
            return dict(s.exec(query).all())

    def batch_cost(self, batch_id: str) -> dict[str, Any] | None:
        """What the batch's runs cost together, summed in the database (one row, however many runs): times,
        bytes and requests add up, the heap's peak is the largest; `runs`: how many had figures. None: none."""
        cost = RunRow.__table__.c.cost  # type: ignore[attr-defined]
        kept = [name for name in FIGURES if name != "js_heap_peak_bytes"]
        columns = [func.sum(cost[name].as_float()).label(name) for name in kept]
        columns.append(func.max(cost["js_heap_peak_bytes"].as_float()).label("js_heap_peak_bytes"))
        columns.append(func.count(cost["wall_ms"].as_float()).label("runs"))
        query = (
            select(*columns)
            .join(BatchItemRow, BatchItemRow.run_id == RunRow.id)  # type: ignore[arg-type]
            .where(BatchItemRow.batch_id == batch_id)
        )
        with self.reading() as s:
            found = s.exec(query).one()._asdict()
        if not found["runs"]:
            return None
        figures = Figures.total(found)
        for name in ("js_heap_peak_bytes", "bytes_received", "requests", "artifact_bytes"):
            value = getattr(figures, name)
            setattr(figures, name, int(value) if value is not None else None)
        return {**figures.as_dict(), "runs": found["runs"]}

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        with self.reading() as s:
            counts = dict(
                s.exec(
                    select(RunRow.status, func.count())
                    .join(BatchItemRow, BatchItemRow.run_id == RunRow.id)  # type: ignore[arg-type]
                    .where(BatchItemRow.batch_id == batch_id)
                    .group_by(RunRow.status)
                ).all()
            )
            invalid = s.exec(
                select(func.count()).where(BatchItemRow.batch_id == batch_id, BatchItemRow.invalid != None)  # noqa: E711
            ).one()
        if invalid:
            counts["invalid"] = invalid
        return counts

    def replace_item_run(self, item_id: int, run: RunRow) -> None:
        """A row's new run (a retry), queued, in one transaction with its run.created event. It belongs to
        the batch's creator unless it names its own."""
        with self.session() as s, s.begin():
            run.last_seq = 1
            if run.created_by is None and run.batch_id is not None:
                run.created_by = s.exec(select(BatchRow.created_by).where(BatchRow.id == run.batch_id)).first()
            s.add(run)
            s.flush()
            data = {
                "status": "queued",
                "sop_id": run.sop_id,
                "inputs": run.inputs,
                "batch_id": run.batch_id,
                "row": run.row_number,
            }
            s.add(RunEventRow(run_id=run.id, seq=1, type="run.created", data=data, at=utcnow()))
            s.execute(
                update(BatchItemRow)
                .where(BatchItemRow.id == item_id)
                .values(run_id=run.id, attempts=BatchItemRow.attempts + 1)
            )
