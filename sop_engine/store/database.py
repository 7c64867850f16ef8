"""The database: its engine, SQLite's settings, sessions for reading and for writing."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel, create_engine

from .. import settings
from ..migrations import bring_up_to_date
from ..states import TransitionError

READ = "sop_read_only"  # the execution option of the store's read-only sessions


def data_dir() -> Path:
    return settings.current().data_dir


def default_database_url() -> str:
    return settings.current().database


class CannotOpen(RuntimeError):
    """The store will not open: the message says why and what to do."""


def _shared_key_check(url: str) -> None:
    # every process of a cluster must open the sealed inputs and checkpoints that any other one wrote
    if not url.startswith("sqlite") and not settings.current().secret_key:
        raise CannotOpen(
            "SOP_SECRET_KEY is not set: with a shared database every process (servers and workers) needs the "
            "same key, or none can open what another sealed. Make one with: "
            'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
        )


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
    # a read takes none: with WAL it never waits for a writer. On the driver's connection: this runs before
    # every step's commit, and SQLAlchemy's execution costs more than the statement (store.prepared)
    begin = "BEGIN" if conn.get_execution_options().get(READ) else "BEGIN IMMEDIATE"
    try:
        conn.connection.dbapi_connection.execute(begin)
    except sqlite3.Error as exc:  # a locked database: SQLAlchemy's OperationalError, which callers retry
        raise DBAPIError.instance(begin, (), exc, sqlite3.Error, dialect=conn.dialect) from exc


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        sa_event.listen(engine, "connect", _sqlite_pragmas)
        sa_event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """The engine and its sessions. Every method of the store lets sqlalchemy's OperationalError through
    when the database is locked or gone, so that callers can retry."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_database_url()
        _shared_key_check(self.url)
        self.engine = make_engine(self.url)
        self._reads = self.engine.execution_options(**{READ: True})
        try:
            bring_up_to_date(self.engine, SQLModel.metadata)
        except BaseException:
            self.engine.dispose()
            raise
        self._statements: dict[tuple[Any, ...], Any] = {}
        self._writer: Any = None  # one connection for the hot path of run writes, one writer at a time
        self._writing = threading.Lock()

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`: what the server reports, so a silent fallback shows."""
        return self.engine.dialect.name

    def ping(self) -> None:
        """Raises when the database does not answer."""
        with self.reading() as s:
            s.execute(text("SELECT 1"))

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
            except TransitionError:  # refused by the gate: rolled back, the connection is sound
                raise
            except Exception:
                self._writer.close()
                self._writer = None
                raise
