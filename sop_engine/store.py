"""The only module that opens database sessions. Short transactions, one per state change."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, text, update
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, create_engine, select

from . import settings
from .document import LoadedSop
from .events import Event, utcnow
from .migrations import bring_up_to_date
from .tables import (
    ROLES,
    ApiTokenRow,
    AuditRow,
    BatchItemRow,
    BatchRow,
    CheckpointRow,
    RunEventRow,
    RunRow,
    SopDocumentRow,
    StepRunRow,
)

RELEASED = "released: the database was unavailable"
READ = "sop_read_only"  # the execution option of the store's read-only sessions


def data_dir() -> Path:
    return settings.current().data_dir


def default_database_url() -> str:
    return settings.current().database


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while a run writes; FULL makes a committed step survive a power cut
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # a write transaction takes the lock at its start, so two writers queue instead of deadlocking;
    # a read takes none: with WAL it never waits for a writer
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ) else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        sa_event.listen(engine, "connect", _sqlite_pragmas)
        sa_event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


class TokenNameTaken(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name!r} exists already (revoked tokens keep their names)")
        self.name = name


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: everything but its hash."""

    name: str
    role: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiTokenRow) -> TokenInfo:
        return cls(row.name, row.role, row.created_at, row.created_by, row.revoked_at, row.last_used_at)


class Store:
    """Every method lets sqlalchemy's OperationalError through when the database is locked or gone,
    so that callers can retry."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_database_url()
        self.engine = make_engine(self.url)
        self._reads = self.engine.execution_options(**{READ: True})
        try:
            bring_up_to_date(self.engine, SQLModel.metadata)
        except BaseException:
            self.engine.dispose()
            raise
        self._statements: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._writer: Any = None  # one connection for the hot path of run writes, one writer at a time
        self._writing = threading.Lock()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def reading(self) -> Session:
        """A session that only reads: on SQLite it does not take the write lock."""
        return Session(self._reads, expire_on_commit=False)

    # documents -------------------------------------------------------------------------------

    def save_document(self, loaded: LoadedSop, created_by: str | None = None) -> SopDocumentRow:
        """Store a document; the same text again returns the stored version, changed text a new one
        (`created_by` is recorded on a new version only)."""
        sop = loaded.sop
        with self.session() as s, s.begin():
            latest = s.exec(
                select(SopDocumentRow)
                .where(SopDocumentRow.sop_id == sop.id)
                .order_by(SopDocumentRow.version.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.content_hash == loaded.content_hash:
                return latest
            row = SopDocumentRow(
                base_dir=str(loaded.base_dir) if loaded.base_dir else None,
                sop_id=sop.id,
                version=(latest.version + 1) if latest else 1,
                name=sop.name,
                content_hash=loaded.content_hash,
                source=loaded.source,
                created_at=utcnow(),
                created_by=created_by,
            )
            s.add(row)
        return row

    def document_creator(self, sop_id: str) -> str | None:
        """Who stored version 1 of the SOP: the owner of its id."""
        with self.reading() as s:
            query = select(SopDocumentRow.created_by).where(SopDocumentRow.sop_id == sop_id)
            return s.exec(query.where(SopDocumentRow.version == 1)).first()

    def document_by_id(self, document_id: int) -> SopDocumentRow | None:
        with self.reading() as s:
            return s.get(SopDocumentRow, document_id)

    def documents(self) -> list[SopDocumentRow]:
        """The latest version of every SOP, by id."""
        with self.reading() as s:
            latest = select(SopDocumentRow.sop_id, func.max(SopDocumentRow.version).label("v"))
            latest = latest.group_by(SopDocumentRow.sop_id).subquery()
            query = select(SopDocumentRow).join(
                latest, (SopDocumentRow.sop_id == latest.c.sop_id) & (SopDocumentRow.version == latest.c.v)
            )
            return list(s.exec(query.order_by(SopDocumentRow.sop_id)))

    def versions(self, sop_id: str) -> list[SopDocumentRow]:
        with self.reading() as s:
            query = select(SopDocumentRow).where(SopDocumentRow.sop_id == sop_id)
            return list(s.exec(query.order_by(SopDocumentRow.version)))

    def document(self, sop_id: str, version: int | None = None) -> SopDocumentRow | None:
        with self.reading() as s:
            query = select(SopDocumentRow).where(SopDocumentRow.sop_id == sop_id)
            if version is not None:
                query = query.where(SopDocumentRow.version == version)
            return s.exec(query.order_by(SopDocumentRow.version.desc()).limit(1)).first()

    # runs ------------------------------------------------------------------------------------

    def create_run(
        self, document: SopDocumentRow, inputs: dict[str, Any], status: str, priority: int = 1, **extra: Any
    ) -> RunRow:
        run = RunRow(
            id=uuid.uuid4().hex,
            document_id=document.id,
            sop_id=document.sop_id,  # type: ignore[arg-type]
            sop_version=document.version,
            status=status,
            priority=priority,
            inputs=inputs,
            created_at=utcnow(),
            **extra,
        )
        with self.session() as s, s.begin():
            s.add(run)
        return run

    def run(self, run_id: str) -> RunRow | None:
        with self.reading() as s:
            return s.get(RunRow, run_id)

    def runs(
        self,
        status: str | None = None,
        sop_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        created_by: str | None = None,
    ) -> tuple[list[RunRow], int]:
        with self.reading() as s:
            query = select(RunRow)
            counting = select(func.count()).select_from(RunRow)
            filters = ((RunRow.status, status), (RunRow.sop_id, sop_id), (RunRow.created_by, created_by))
            for column, value in filters:
                if value is not None:
                    query = query.where(column == value)
                    counting = counting.where(column == value)
            rows = s.exec(query.order_by(RunRow.created_at.desc()).offset(offset).limit(limit)).all()
            return list(rows), s.exec(counting).one()

    def steps(self, run_id: str) -> list[StepRunRow]:
        with self.reading() as s:
            return list(s.exec(select(StepRunRow).where(StepRunRow.run_id == run_id).order_by(StepRunRow.id)))

    def events(self, run_id: str, since: int = 0, limit: int | None = None) -> list[RunEventRow]:
        with self.reading() as s:
            query = select(RunEventRow).where(RunEventRow.run_id == run_id, RunEventRow.seq > since)
            return list(s.exec(query.order_by(RunEventRow.seq).limit(limit)))

    def last_seq(self, run_id: str) -> int:
        run = self.run(run_id)
        return run.last_seq if run else 0

    def audit(self, run_id: str) -> list[AuditRow]:
        with self.reading() as s:
            return list(s.exec(select(AuditRow).where(AuditRow.run_id == run_id).order_by(AuditRow.id)))

    def step_counts(self, run_id: str) -> dict[str, int]:
        with self.reading() as s:
            query = select(StepRunRow.status, func.count()).where(StepRunRow.run_id == run_id)
            return dict(s.exec(query.group_by(StepRunRow.status)).all())

    def typical_durations(self, sop_id: str, runs: int = 5) -> dict[str, float]:
        """Mean seconds per step id over the SOP's latest completed runs, for ETAs."""
        with self.reading() as s:
            recent = select(RunRow.id).where(RunRow.sop_id == sop_id, RunRow.status == "completed")
            recent = recent.order_by(RunRow.created_at.desc()).limit(runs)
            rows = s.exec(
                select(StepRunRow.step_id, StepRunRow.started_at, StepRunRow.finished_at).where(
                    StepRunRow.run_id.in_(recent),
                    StepRunRow.status == "completed",  # type: ignore[attr-defined]
                )
            ).all()
        totals: dict[str, list[float]] = {}
        for step_id, started, finished in rows:
            if started and finished:
                totals.setdefault(step_id, []).append((finished - started).total_seconds())
        return {k: sum(v) / len(v) for k, v in totals.items()}

    # the queue -------------------------------------------------------------------------------

    def claim_next_run(self, worker: str, batch_id: str | None = None) -> RunRow | None:
        """Takes the queued run of highest priority, oldest first (of one batch, when named), leaving out
        batches that have as many runs going as their concurrency. Safe with several worker processes:
        the conditional update succeeds for one of them only."""
        going = (
            select(func.count())
            .select_from(RunRow.__table__.alias("other"))  # type: ignore[attr-defined]
            .where(text("other.batch_id = runs.batch_id"), text("other.status IN ('running', 'paused')"))
            .scalar_subquery()
        )
        cap = select(BatchRow.concurrency).where(BatchRow.id == RunRow.batch_id).scalar_subquery()
        while True:
            with self.session() as s, s.begin():
                query = select(RunRow.id).where(RunRow.status == "queued")
                query = query.where((RunRow.batch_id == None) | (going < cap))  # noqa: E711
                if batch_id is not None:
                    query = query.where(RunRow.batch_id == batch_id)
                candidate = s.exec(query.order_by(RunRow.priority, RunRow.created_at).limit(1)).first()
                if candidate is None:
                    return None
                taken = s.execute(
                    update(RunRow)
                    .where(RunRow.id == candidate, RunRow.status == "queued")
                    .values(status="running", worker=worker, heartbeat_at=utcnow())
                )
                if taken.rowcount == 1:
                    return s.get(RunRow, candidate)

    def release_claim(self, run_id: str, worker: str) -> bool:
        """Puts a run this worker holds back in the queue, with its run.updated event, in one transaction:
        False when the worker no longer holds it running."""
        runs = RunRow.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            last = conn.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.worker == worker, runs.c.status == "running")
                .values(status="queued", worker=None, heartbeat_at=None, last_seq=runs.c.last_seq + 1)
                .returning(runs.c.last_seq)
            ).scalar_one_or_none()
            if last is None:
                return False
            data = {"status": "queued", "reason": RELEASED}
            conn.execute(
                insert(RunEventRow.__table__),  # type: ignore[attr-defined]
                [{"run_id": run_id, "seq": last, "type": "run.updated", "data": data, "at": utcnow()}],
            )
        return True

    def _statement(self, kind: str, keys: tuple[str, ...]) -> Any:
        """Statements of the hot path, built once per shape and reused (bound parameters v_<column>)."""
        found = self._statements.get((kind, keys))
        if found is None:
            runs, steps = RunRow.__table__, StepRunRow.__table__  # type: ignore[attr-defined]
            if kind == "run":
                found = (
                    update(runs)
                    .where(runs.c.id == bindparam("rid"))
                    .values(last_seq=runs.c.last_seq + bindparam("n"), **{k: bindparam(f"v_{k}") for k in keys})
                    .returning(runs.c.last_seq)
                )
            elif kind == "step":
                found = (
                    update(steps)
                    .where(steps.c.run_id == bindparam("rid"), steps.c.key == bindparam("k"))
                    .values(**{k: bindparam(f"v_{k}") for k in keys})
                )
            else:
                found = insert(RunEventRow.__table__)  # type: ignore[attr-defined]
            self._statements[(kind, keys)] = found
        return found

    @staticmethod
    def _reset(conn: Any, run_id: str, keys: list[str], reason: str | None) -> None:
        steps = StepRunRow.__table__  # type: ignore[attr-defined]
        conn.execute(
            update(steps)
            .where(steps.c.run_id == run_id, steps.c.key.in_(keys))
            .values(status="pending", reason=reason, error=None, outputs=None, sealed_outputs=None, finished_at=None)
        )

    @staticmethod
    def _save_checkpoint(conn: Any, run_id: str, at: Any, checkpoint: dict[str, Any]) -> None:
        table = CheckpointRow.__table__  # type: ignore[attr-defined]
        values = {"key": checkpoint["key"], "at": at, "tabs": checkpoint["tabs"]}
        if "storage" in checkpoint:  # taken less often than the URLs: keep the last one when not retaken
            values["storage"] = checkpoint["storage"]
        done = conn.execute(update(table).where(table.c.run_id == run_id).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(table), [{"run_id": run_id, **values}])

    def checkpoint(self, run_id: str) -> CheckpointRow | None:
        with self.reading() as s:
            return s.get(CheckpointRow, run_id)

    def runs_ended_before(self, cutoff: Any) -> list[str]:
        with self.reading() as s:
            query = select(RunRow.id).where(
                RunRow.status.in_(("completed", "failed", "cancelled")),  # type: ignore[attr-defined]
                RunRow.finished_at != None,  # noqa: E711
                RunRow.finished_at < cutoff,
            )
            return list(s.exec(query))

    def drop_checkpoints(self, run_ids: list[str]) -> None:
        with self.session() as s, s.begin():
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                s.execute(delete(CheckpointRow).where(CheckpointRow.run_id.in_(chunk)))  # type: ignore[attr-defined]

    def heartbeat(self, worker: str, run_ids: list[str]) -> None:
        """The worker still holds these runs."""
        if run_ids:
            with self.session() as s, s.begin():
                s.execute(
                    update(RunRow)
                    .where(RunRow.id.in_(run_ids), RunRow.worker == worker)  # type: ignore[attr-defined]
                    .values(heartbeat_at=utcnow())
                )

    def runs_held(self) -> list[RunRow]:
        """Runs some worker says it is executing."""
        with self.reading() as s:
            return list(s.exec(select(RunRow).where(RunRow.status == "running")))

    def runs_with_status(self, status: str, batch_id: str | None = None) -> list[RunRow]:
        with self.reading() as s:
            query = select(RunRow).where(RunRow.status == status)
            if batch_id is not None:
                query = query.where(RunRow.batch_id == batch_id)
            return list(s.exec(query))

    # batches ---------------------------------------------------------------------------------

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

    def update_batch(self, batch_id: str, **values: Any) -> None:
        with self.session() as s, s.begin():
            s.execute(update(BatchRow).where(BatchRow.id == batch_id).values(**values))

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

    # API tokens: only their hashes -----------------------------------------------------------

    def add_token(self, name: str, role: str, token_hash: str, created_by: str | None = None) -> TokenInfo:
        """Raises TokenNameTaken when the name is used, by a revoked token too; ValueError for a role
        not in ROLES."""
        if role not in ROLES:
            raise ValueError(f"the role {role!r} is none of {', '.join(ROLES)}")
        row = ApiTokenRow(name=name, role=role, token_hash=token_hash, created_at=utcnow(), created_by=created_by)
        try:
            with self.session() as s, s.begin():
                s.add(row)
        except IntegrityError:
            with self.reading() as s:
                if s.exec(select(ApiTokenRow.id).where(ApiTokenRow.name == name)).first() is not None:
                    raise TokenNameTaken(name) from None
            raise
        return TokenInfo.of(row)

    def revoke_token(self, name: str) -> bool:
        """False when no token of that name is still valid."""
        with self.session() as s, s.begin():
            done = s.execute(
                update(ApiTokenRow)
                .where(ApiTokenRow.name == name, ApiTokenRow.revoked_at == None)  # noqa: E711
                .values(revoked_at=utcnow())
            )
            return done.rowcount == 1

    def tokens(self) -> list[TokenInfo]:
        with self.reading() as s:
            return [TokenInfo.of(row) for row in s.exec(select(ApiTokenRow).order_by(ApiTokenRow.name))]

    def token_by_hash(self, token_hash: str) -> ApiTokenRow | None:
        """The token with this hash, unless revoked."""
        with self.reading() as s:
            query = select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)
            return s.exec(query.where(ApiTokenRow.revoked_at == None)).first()  # noqa: E711

    def token_used(self, token_hash: str, at: datetime) -> None:
        with self.session() as s, s.begin():
            s.execute(update(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash).values(last_used_at=at))

    # writes of a run: the state change and its event commit together -----------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        """The hot path's one connection, in a transaction. Dropped after a failure, as it may be broken
        (the database went away): the next write starts on a fresh one."""
        with self._writing:
            if self._writer is None or self._writer.closed:
                self._writer = self.engine.connect()
            try:
                with self._writer.begin():
                    yield self._writer
            except Exception:
                self._writer.close()
                self._writer = None
                raise

    def record(self, run_id: str, type_: str, data: dict[str, Any], **change: Any) -> Event:
        """Applies a state change and appends its event, numbered next in the run's sequence, atomically.
        `change`: run={columns}, step=(key, {columns}), new_steps=[rows], reset=(keys, reason), audit={...},
        checkpoint={key, tabs, storage}."""
        return self.record_many(run_id, [(type_, data, change)])[0]

    def record_many(self, run_id: str, changes: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[Event]:
        """Several state changes of one run, each with its event numbered in order, in one transaction.
        Merged into as few statements as they allow: one update of the run (its sequence moves by as many
        events), new step rows in one insert, one update per step touched, the events in one insert.
        SQLAlchemy Core statements built once, on one connection: the ORM's bookkeeping, and building the
        statements anew, would cost more than the commit itself."""
        at = utcnow()
        run: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        steps: dict[str, dict[str, Any]] = {}
        checkpoint = None
        for _, _, change in changes:
            run.update(change.get("run") or {})
            rows += [{"run_id": run_id, "attempts": 0, "artifacts": [], **v} for v in change.get("new_steps") or ()]
            if change.get("step"):
                key, values = change["step"]
                steps.setdefault(key, {}).update(values)
            checkpoint = change.get("checkpoint") or checkpoint
        with self._write() as conn:
            last = conn.execute(
                self._statement("run", tuple(sorted(run))),
                {"rid": run_id, "n": len(changes), **{f"v_{k}": v for k, v in run.items()}},
            ).scalar_one()
            if rows:
                conn.execute(insert(StepRunRow.__table__), rows)  # type: ignore[attr-defined]
            for key, values in steps.items():
                conn.execute(
                    self._statement("step", tuple(sorted(values))),
                    {"rid": run_id, "k": key, **{f"v_{k}": v for k, v in values.items()}},
                )
            for _, _, change in changes:
                if change.get("reset"):
                    self._reset(conn, run_id, *change["reset"])
                if change.get("audit"):
                    audit = {"run_id": run_id, "at": at, **change["audit"]}
                    conn.execute(insert(AuditRow.__table__), [audit])  # type: ignore[attr-defined]
            if checkpoint:
                self._save_checkpoint(conn, run_id, at, checkpoint)
            first = last - len(changes) + 1
            events = [Event(run_id, first + i, type_, data, at) for i, (type_, data, _) in enumerate(changes)]
            conn.execute(
                self._statement("event", ()),
                [{"run_id": run_id, "seq": e.seq, "type": e.type, "data": e.data, "at": at} for e in events],
            )
        return events
