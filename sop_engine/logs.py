"""How a process logs. Text for people by default, as it always was; with SOP_LOG_FORMAT=json, one JSON object a
line on stderr (time, level, logger, message, and run_id / step_key when known), every run event among them
(EventLines). Events are masked before any sink sees them, and a line carries no inputs, outputs or values."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import settings

if TYPE_CHECKING:
    from .events import Event, EventSink

EVENTS = "sop_engine.events"  # the logger of run events: INFO in JSON mode, the rest stays at WARNING
TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"  # the lines of long-running processes (worker)
log = logging.getLogger(EVENTS)
# the run (and step) the code logging now works for: set by the runner, read by JsonLines for any record
WHERE: ContextVar[tuple[str, str | None] | None] = ContextVar("sop_engine_where", default=None)


class JsonLines(logging.Formatter):
    """A record as one JSON object: time (UTC), level, logger, message, the record's `fields` (run_id,
    step_key...) and its exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        where = WHERE.get()  # a line logged while a run (or one of its steps) is under way says which
        if where is not None:
            line.setdefault("run_id", where[0])
            if where[1] is not None:
                line.setdefault("step_key", where[1])
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure() -> bool:
    """Sets up the process's logging from SOP_LOG_FORMAT; True when it logs JSON. In text mode nothing is
    changed (each command keeps its own lines)."""
    if settings.current().log_format != "json":
        return False
    handler = logging.StreamHandler()  # stderr: stdout is the command's own output
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    return True


def event_sinks() -> list[EventSink]:
    """What a Runner tells its events to for the logs: a line each in JSON mode, nothing in text mode."""
    return [EventLines()] if settings.current().log_format == "json" else []


class EventLines:
    """An EventSink: each run event as one INFO line of the sop_engine.events logger. Quick, never raises."""

    async def emit(self, event: Event) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        try:
            fields = event_fields(event)
            log.info(_describe(event.type, fields, event.data), extra={"fields": fields})
        except Exception:  # a log line must never stop a run
            pass


def event_fields(event: Event) -> dict[str, Any]:
    """What a line says of an event: never its inputs, outputs or values."""
    data = event.data
    fields: dict[str, Any] = {"event": event.type, "run_id": event.run_id, "seq": event.seq}
    if data.get("key") is not None:
        fields["step_key"] = data["key"]
    for name in ("status", "action", "attempt", "reason", "duration_ms", "wait_s", "sop_id", "worker"):
        if data.get(name) is not None:
            fields[name] = data[name]
    error = data.get("error")
    if error:
        fields["error"] = error.get("message") if isinstance(error, dict) else str(error)
    return fields


def _describe(kind: str, fields: dict[str, Any], data: dict[str, Any]) -> str:
    if kind == "log":
        return str(data.get("message", ""))
    subject = f"step {fields['step_key']}" if "step_key" in fields else "run"
    if kind == "step.retried":
        return f"{subject} retried after attempt {fields.get('attempt')}"
    if kind == "run.restored":
        return "run restored from a checkpoint"
    if kind == "run.created":
        return f"run created ({fields.get('status')})"
    if "status" not in fields:
        return kind
    action = f" ({fields['action']})" if "action" in fields else ""
    return f"{subject} {fields['status']}{action}"
