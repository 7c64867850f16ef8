"""Runs the migrations on the connection `bring_up_to_date` passes (config.attributes["connection"]), inside
its transaction; or, from Alembic's own commands, on an engine made from the URL given to `config(url)`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from sop_engine import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

OPTIONS = {"target_metadata": SQLModel.metadata, "render_as_batch": True, "compare_type": True}


def run(connection: object) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    from sop_engine.store import make_engine

    engine = make_engine(url or "")
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()


main()
