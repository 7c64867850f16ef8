"""The hot path's statements, compiled once for the database's dialect and run on the driver's cursor.

A run writes one transaction per step: its run row, its step row and its events. Through SQLAlchemy's
`Connection.execute`, three quarters of that transaction's time went to SQLAlchemy itself (the execution
context, the parameters built anew each time, result objects), not to the database. The statements are still
written once, as SQLAlchemy Core (the gate's conditions among them); here they are compiled once per shape,
and each execution only converts its values with the column types' own bind processors and hands them to the
driver. What the driver raises comes out as SQLAlchemy's exception for it (OperationalError, IntegrityError),
as from `Connection.execute`, so that callers tell a refused write from a broken one the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement compiled for one dialect: `run` executes it once, `many` once per row of values."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        self.dialect = dialect
        binds = compiled.binds
        # the names in the order the driver takes them (positional paramstyles), or by name
        self.names: list[str] = list(compiled.positiontup or ()) if compiled.positional else list(binds)
        self.positional = compiled.positional
        self.processors: dict[str, Processor] = {
            name: binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.names
        }
        # values written into the statement (the statuses a gated change may come from)
        self.fixed = {name: bind.value for name, bind in binds.items() if not bind.required}

    def _values(self, given: Mapping[str, Any]) -> Any:
        values = []
        for name in self.names:
            value = given[name] if name in given else self.fixed[name]
            process = self.processors[name]
            values.append(value if process is None else process(value))
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))

    def run(self, conn: Connection, given: Mapping[str, Any]) -> tuple[int, Any]:
        """Executes once; returns the count of rows it changed, and the first row it returned (or None)."""
        values = self._values(given)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(self.sql, values)
            return cursor.rowcount, cursor.fetchone() if cursor.description else None
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._translated(exc, values) from exc
        finally:
            cursor.close()

    def many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        values = [self._values(row) for row in rows]
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(self.sql, values)
        except self.dialect.loaded_dbapi.Error as exc:
            raise self._translated(exc, values) from exc
        finally:
            cursor.close()

    def _translated(self, exc: Exception, values: Any) -> DBAPIError:
        return DBAPIError.instance(self.sql, values, exc, self.dialect.loaded_dbapi.Error, dialect=self.dialect)
