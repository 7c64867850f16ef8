"""The only module that opens database sessions. Short transactions, one per state change."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from .document import LoadedSop
from .events import Event, utcnow
from .tables import RunEventRow, RunRow, SopDocumentRow, StepRunRow


def data_dir() -> Path:
    return Path(os.environ.get("SOP_DATA_DIR", "data"))


def default_database_url() -> str:
    url = os.environ.get("SOP_DATABASE_URL")
    if url:
        return url
    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'sop.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers go on while a run writes; FULL makes a committed step survive a power cut
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        sa_event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_database_url()
        self.engine = make_engine(self.url)
        SQLModel.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # documents -------------------------------------------------------------------------------

    def save_document(self, loaded: LoadedSop) -> SopDocumentRow:
        """Store a document; the same text again returns the stored version, changed text a new one."""
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
                sop_id=sop.id,
                version=(latest.version + 1) if latest else 1,
                name=sop.name,
                content_hash=loaded.content_hash,
                source=loaded.source,
                created_at=utcnow(),
            )
            s.add(row)
        return row

    def document(self, sop_id: str, version: int | None = None) -> SopDocumentRow | None:
        with self.session() as s:
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
        with self.session() as s:
            return s.get(RunRow, run_id)

    def steps(self, run_id: str) -> list[StepRunRow]:
        with self.session() as s:
            return list(s.exec(select(StepRunRow).where(StepRunRow.run_id == run_id).order_by(StepRunRow.id)))

    def events(self, run_id: str, since: int = 0) -> list[RunEventRow]:
        with self.session() as s:
            query = select(RunEventRow).where(RunEventRow.run_id == run_id, RunEventRow.seq > since)
            return list(s.exec(query.order_by(RunEventRow.seq)))

    def last_seq(self, run_id: str) -> int:
        with self.session() as s:
            return s.exec(select(func.max(RunEventRow.seq)).where(RunEventRow.run_id == run_id)).one() or 0

    # writes of a running run: the state change and its event commit together ----------------

    def record(
        self,
        event: Event,
        *,
        run: dict[str, Any] | None = None,
        step: tuple[str, dict[str, Any]] | None = None,
        new_steps: Iterable[dict[str, Any]] = (),
    ) -> None:
        with self.session() as s, s.begin():
            for values in new_steps:
                s.add(StepRunRow(run_id=event.run_id, **values))
            if run:
                s.execute(update(RunRow).where(RunRow.id == event.run_id).values(**run))
            if step:
                key, values = step
                s.execute(
                    update(StepRunRow).where(StepRunRow.run_id == event.run_id, StepRunRow.key == key).values(**values)
                )
            s.add(RunEventRow(run_id=event.run_id, seq=event.seq, type=event.type, data=event.data, at=event.at))
