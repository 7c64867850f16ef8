"""Schema migrations: a database of release 0.1.0 upgrades at start without loss; a new one is stamped at head;
the migrations build exactly the tables of tables.py, on SQLite and (as SQL) on PostgreSQL."""

from __future__ import annotations

import io
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from sop_engine import migrations
from sop_engine.document import load_sop
from sop_engine.events import utcnow
from sop_engine.migrations import BASELINE, HEAD, NewerDatabase, scripts
from sop_engine.store import RELEASED, Store
from sop_engine.tables import BatchItemRow, BatchRow, RunRow
from tests.conftest import both_databases

OLD = Path(__file__).resolve().parent / "fixtures_db" / "sop-0.1.0.db"
TABLES = ("sop_documents", "batches", "batch_items", "runs", "step_runs", "run_events", "audit", "checkpoints")

LATER = {"created_by", "cost", "trace", "trace_context", "rollback"}  # columns added since the release


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    copy = tmp_path / "sop.db"
    shutil.copyfile(OLD, copy)
    return copy


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the release's tables, in the release's columns."""
    with sqlite3.connect(path) as conn:
        rows = {}
        for table in TABLES:
            columns = [c[1] for c in conn.execute(f"PRAGMA table_info({table})") if c[1] not in LATER]
            rows[table] = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1").fetchall()
    return rows


def revision_of(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]


def columns_of(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {c[1] for c in conn.execute(f"PRAGMA table_info({table})")}


def test_the_head_is_the_newest_revision():
    # HEAD is what a store opening a database at head checks without Alembic: it must be Alembic's head
    assert scripts().get_heads() == [HEAD] == ["0008_rollback"]
    chain = [HEAD]
    while (down := scripts().get_revision(chain[-1]).down_revision) is not None:
        chain.append(down)
    assert chain == [
        HEAD,
        "0007_breaker",
        "0006_hooks",
        "0005_sched",
        "0004_dead",
        "0003_observability",
        "0002_creators_and_tokens",
        BASELINE,
    ]


def test_an_old_database_upgrades_at_start_without_loss(old_db: Path):
    before = dump(old_db)
    assert {t: len(rows) for t, rows in before.items()} == {
        "sop_documents": 1,
        "batches": 1,
        "batch_items": 2,
        "runs": 2,
        "step_runs": 2,
        "run_events": 10,
        "audit": 2,
        "checkpoints": 1,
    }
    assert "created_by" not in columns_of(old_db, "runs")

    store = Store(f"sqlite:///{old_db}")
    try:
        [run], total = store.runs(status="completed")
        assert total == 1 and run.outputs == {"greeting": "Hello, Ada"} and run.created_by is None
        assert [(s.key, s.status) for s in store.steps(run.id)] == [("open", "completed"), ("read", "completed")]
        assert [e.seq for e in store.events(run.id)] == list(range(1, 10))
        assert [(a.who, a.action) for a in store.audit(run.id)] == [("alice", "pause"), ("alice", "resume")]
        assert store.checkpoint(run.id).tabs == "sealed-tabs"  # type: ignore[union-attr]
        assert store.document("greet").source.startswith("sop: 1")  # type: ignore[union-attr]
        assert store.document_creator("greet") is None
        assert store.batch_counts("batch-1") == {"queued": 1, "invalid": 1}
        assert store.tokens() == []
    finally:
        store.close()

    assert dump(old_db) == before
    assert revision_of(old_db) == [HEAD]
    for table in ("runs", "batches", "sop_documents"):
        assert "created_by" in columns_of(old_db, table)
    assert {"cost", "trace", "trace_context"} <= columns_of(old_db, "runs")
    assert "cost" in columns_of(old_db, "step_runs")
    assert columns_of(old_db, "api_tokens") == {
        "id",
        "name",
        "role",
        "token_hash",
        "created_at",
        "created_by",
        "revoked_at",
        "last_used_at",
    }
    Store(f"sqlite:///{old_db}").close()  # at head now: opens without migrating again
    assert dump(old_db) == before and revision_of(old_db) == [HEAD]


def test_the_upgraded_old_database_writes_like_a_new_one(old_db: Path):
    store = Store(f"sqlite:///{old_db}")
    try:
        document = store.document("greet")
        assert document is not None
        run = store.create_run(document, {"who": "Cy"}, "queued", created_by="alice")
        assert store.runs(created_by="alice")[0] == [store.run(run.id)]
        assert store.record(run.id, "run.created", {"status": "queued"}).seq == 1
    finally:
        store.close()


def test_a_new_database_is_made_from_the_tables_and_stamped_at_head(tmp_path: Path):
    path = tmp_path / "new.db"
    Store(f"sqlite:///{path}").close()
    assert revision_of(path) == [HEAD]
    assert "created_by" in columns_of(path, "runs")


def schema_differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_tables(tmp_path: Path, old_db: Path):
    """From nothing through every revision, and from 0.1.0's own file: the same schema as tables.py."""
    path = tmp_path / "migrated.db"
    command.upgrade(migrations.config(f"sqlite:///{path}"), "head")
    assert revision_of(path) == [HEAD]
    assert schema_differences(f"sqlite:///{path}") == []
    Store(f"sqlite:///{old_db}").close()
    assert schema_differences(f"sqlite:///{old_db}") == []


def test_the_second_revision_downgrades_and_upgrades_again(old_db: Path):
    Store(f"sqlite:///{old_db}").close()
    before = dump(old_db)
    command.downgrade(migrations.config(f"sqlite:///{old_db}"), BASELINE)
    assert revision_of(old_db) == [BASELINE] and "created_by" not in columns_of(old_db, "runs")
    assert dump(old_db) == before
    Store(f"sqlite:///{old_db}").close()
    assert revision_of(old_db) == [HEAD] and dump(old_db) == before


def test_the_migrations_render_for_postgresql():
    """Dialect-neutral: the whole chain renders as PostgreSQL DDL (offline, no server needed)."""
    sql = io.StringIO()
    config = migrations.config("postgresql://localhost/sop")
    config.output_buffer = sql
    command.upgrade(config, "head", sql=True)
    text = sql.getvalue()
    assert "CREATE TABLE api_tokens" in text
    assert "ALTER TABLE runs ADD COLUMN created_by VARCHAR" in text
    assert "TIMESTAMP WITH TIME ZONE" in text


def test_a_database_of_a_newer_release_is_refused(tmp_path: Path):
    path = tmp_path / "newer.db"
    Store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    with pytest.raises(NewerDatabase, match="0099_from_the_future"):
        Store(f"sqlite:///{path}")


def test_two_processes_opening_an_old_database_at_once_migrate_it_once(old_db: Path):
    before = dump(old_db)
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            Store(f"sqlite:///{old_db}").close()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert revision_of(old_db) == [HEAD] and dump(old_db) == before


# what the second revision brings: creators --------------------------------------------------


SOP = "sop: 1\nid: mine\nsteps:\n  - {id: a, action: navigate, url: 'http://127.0.0.1:1/'}\n"


@both_databases
def test_creators_of_documents_runs_and_batches(store: Store):
    first = store.save_document(load_sop(SOP), created_by="alice")
    assert store.save_document(load_sop(SOP), created_by="bob").created_by == "alice"  # same text, same row
    second = store.save_document(load_sop(SOP + "name: again\n"), created_by="bob")
    assert (first.version, second.version, second.created_by) == (1, 2, "bob")
    assert store.document_creator("mine") == "alice"
    assert store.document_creator("nobody") is None

    mine = store.create_run(second, {}, "queued", created_by="bob")
    store.create_run(second, {}, "queued")
    assert [r.id for r in store.runs(created_by="bob")[0]] == [mine.id]
    assert store.runs(created_by="bob", status="running") == ([], 0)

    now = utcnow()
    batch = BatchRow(
        id="b1", document_id=second.id, sop_id="mine", sop_version=2, source="x.csv", concurrency=1,
        created_at=now, created_by="carol",
    )  # fmt: skip
    row_run = RunRow(
        id="r1", document_id=second.id, sop_id="mine", sop_version=2, status="queued", batch_id="b1",
        row_number=1, created_at=now,
    )  # fmt: skip
    store.create_batch(batch, [row_run], [BatchItemRow(batch_id="b1", row_number=1, run_id="r1")])
    assert store.batch("b1").created_by == "carol"  # type: ignore[union-attr]
    assert store.run("r1").created_by == "carol"  # type: ignore[union-attr]
    [(item, _)] = store.batch_items("b1")
    retry = RunRow(
        id="r2", document_id=second.id, sop_id="mine", sop_version=2, status="queued", batch_id="b1",
        row_number=1, created_at=utcnow(),
    )  # fmt: skip
    store.replace_item_run(item.id, retry)  # type: ignore[arg-type]
    assert store.run("r2").created_by == "carol"  # type: ignore[union-attr]


@both_databases
def test_a_released_claim_puts_the_run_back_in_the_queue_with_its_event(store: Store):
    document = store.save_document(load_sop(SOP))
    run = store.create_run(document, {}, "queued")
    store.record(run.id, "run.created", {"status": "queued"})
    assert store.claim_next_run("w1").run.id == run.id  # type: ignore[union-attr]
    assert store.release_claim(run.id, "w2") is False  # not its run
    assert store.release_claim(run.id, "w1") is True
    again = store.run(run.id)
    assert (again.status, again.worker, again.last_seq) == ("queued", None, 3)  # type: ignore[union-attr]
    [_, claimed, released] = store.events(run.id)
    assert claimed.data == {"status": "running", "worker": "w1"}
    assert (released.seq, released.type) == (3, "run.updated")
    assert released.data == {"status": "queued", "reason": RELEASED}
    assert store.release_claim(run.id, "w1") is False  # queued now, not running
    assert store.claim_next_run("w3").run.id == run.id  # type: ignore[union-attr]


def test_a_locked_database_raises_operational_error_and_the_store_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Nothing swallowed: writers see OperationalError and may retry, and the next write works once
    unlocked; reads do not wait for the lock."""
    from sqlalchemy.exc import OperationalError

    from sop_engine.store import database as store_module

    original = store_module._sqlite_pragmas

    def impatient(dbapi_connection: Any, record: Any) -> None:
        original(dbapi_connection, record)
        dbapi_connection.execute("PRAGMA busy_timeout=0")  # fail at once instead of waiting 10 s

    monkeypatch.setattr(store_module, "_sqlite_pragmas", impatient)
    path = tmp_path / "sop.db"
    store = Store(f"sqlite:///{path}")
    try:
        document = store.save_document(load_sop(SOP))
        run = store.create_run(document, {}, "queued")
        store.record(run.id, "run.created", {"status": "queued"})
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            for write in (
                lambda: store.record(run.id, "log", {"message": "x"}),
                lambda: store.claim_next_run("w1"),
                lambda: store.release_claim(run.id, "w1"),
                lambda: store.add_token("alice", "viewer", "hash"),
                lambda: store.create_run(document, {}, "queued"),
            ):
                with pytest.raises(OperationalError, match="locked"):
                    write()
            assert store.run(run.id).last_seq == 1  # type: ignore[union-attr]  (reads go on: WAL, no lock)
            assert [e.seq for e in store.events(run.id)] == [1] and store.token_by_hash("hash") is None
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.record(run.id, "log", {"message": "y"}).seq == 2
    finally:
        store.close()
