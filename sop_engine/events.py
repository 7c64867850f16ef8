"""Run events: what the runner emits, and the protocol of whoever listens."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    run_id: str
    seq: int  # 1, 2, 3 ... per run, with no gaps
    type: str  # run.created, run.updated, step.updated, step.retried, log
    data: dict[str, Any]
    at: datetime = field(default_factory=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "seq": self.seq, "type": self.type, "data": self.data, "at": self.at.isoformat()}


class EventSink(Protocol):
    """Receives every event of a run after it is stored. Must not raise; must return quickly."""

    async def emit(self, event: Event) -> None: ...
