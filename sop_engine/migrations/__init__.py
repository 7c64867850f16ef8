"""Alembic migrations of the store's tables, configured in code (no alembic.ini), so they run from an
installed wheel as from the checkout. `Store()` calls `bring_up_to_date` at start.

The next revision, written against a database at head:

    from alembic import command
    from sop_engine.migrations import config
    command.revision(config("sqlite:///data/sop.db"), "what changes", autogenerate=True)

Write it dialect-neutral (sa.String, sa.DateTime(timezone=True), named constraints) and alter tables with
`op.batch_alter_table`, so it runs on SQLite as on PostgreSQL."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

BASELINE = "0001_baseline"  # the tables of the release before migrations
HEAD = "0008_rollback"  # the newest revision: a database at it opens without loading Alembic
HERE = Path(__file__).resolve().parent
JOB_TABLE = "procrastinate_jobs"
LOCK_KEY = 0x50E_3A1E  # the PostgreSQL advisory lock that one process at a time migrates under


class NewerDatabase(RuntimeError):
    """The database was migrated by a newer sop-engine than this one."""


def config(url: str | None = None, connection: Connection | None = None) -> Config:
    from alembic.config import Config

    made = Config()
    made.set_main_option("script_location", str(HERE))
    if url is not None:
        made.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        made.attributes["connection"] = connection
    return made


@functools.cache
def scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def bring_up_to_date(engine: Engine, metadata: MetaData) -> None:
    """A new database gets today's tables and is stamped at head (no migration runs: tests make many);
    one made by the release before migrations (tables, no alembic_version) is stamped at the baseline,
    then upgraded; any other is upgraded to head. All in one transaction, which takes the write lock
    (SQLite) or an advisory lock (PostgreSQL) first, so two processes starting at once do not both migrate."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE does this already
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        if conn.dialect.name == "postgresql" and JOB_TABLE not in tables:
            _job_queue_schema(conn)
        if "alembic_version" in tables and _at_head(conn):
            return  # the usual case: Alembic, slow to load, is not needed
        from alembic.migration import MigrationContext

        context = MigrationContext.configure(conn)
        if not tables & set(metadata.tables):
            metadata.create_all(conn)
            context.stamp(scripts(), "heads")
            return
        if "alembic_version" not in tables:
            context.stamp(scripts(), BASELINE)
        current = set(context.get_current_heads())
        if current == set(scripts().get_heads()):
            return
        unknown = [rev for rev in current if _lookup(rev) is None]
        if unknown:
            raise NewerDatabase(
                f"the database is at revision {', '.join(unknown)}, which this sop-engine does not know: "
                "it was upgraded by a newer release"
            )
        from alembic import command

        command.upgrade(config(connection=conn), "heads")


def _at_head(conn: Connection) -> bool:
    return {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))} == {HEAD}


def _job_queue_schema(conn: Connection) -> None:
    """The job queue's tables and functions on PostgreSQL: Procrastinate's own schema, as it ships it, applied
    under the same lock as the migrations (its later releases bring their own migration scripts)."""
    from procrastinate.schema import SchemaManager

    conn.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))


def _lookup(revision: str) -> Any:
    from alembic.util import CommandError

    try:
        return scripts().get_revision(revision)
    except CommandError:
        return None
