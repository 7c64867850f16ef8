"""Who holds a run: a worker name (`host:pid`) and a heartbeat, so that a run whose worker died is found."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

from .events import utcnow

HEARTBEAT = 5.0  # seconds between a holder's "still here"
STALE = 30.0  # a run silent for longer than this has lost its worker


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(worker: str | None, heartbeat: datetime | None, me: str, now: datetime | None = None) -> bool:
    """True when the run's worker is gone: a process of this machine that no longer exists (seen at once),
    or any worker whose heartbeat is older than STALE."""
    if worker is None or heartbeat is None:
        return True
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and worker != me and not _alive(int(pid)):
        return True
    beat = heartbeat if heartbeat.tzinfo else heartbeat.replace(tzinfo=UTC)
    return ((now or utcnow()) - beat).total_seconds() > STALE
