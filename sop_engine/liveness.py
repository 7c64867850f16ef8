"""Who holds a run: a worker name (`host:pid:start`, the process's start time, as PIDs are reused) and a
heartbeat, so that a run whose worker died is found."""

from __future__ import annotations

import functools
import os
import socket
from datetime import UTC, datetime

HEARTBEAT = 5.0  # seconds between a holder's "still here"
STALE = 30.0  # a run silent for longer than this has lost its worker


def _started(pid: int) -> str | None:
    """When a process of this machine started, in clock ticks since boot (Linux); None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[19].decode() if len(fields) > 19 else None


@functools.cache
def _me(pid: int) -> str:
    started = _started(pid)
    return f"{socket.gethostname()}:{pid}" + (f":{started}" if started else "")


def worker_name() -> str:
    return _me(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gone(worker: str) -> bool:
    """True when the worker is a process of this machine that no longer runs (or whose PID now belongs to
    another process)."""
    host, _, rest = worker.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if not _alive(int(pid)):
        return True
    return bool(started) and _started(int(pid)) not in (None, started)


def orphaned(worker: str | None, heartbeat: datetime | None, me: str, now: datetime | None = None) -> bool:
    """True when the run's worker is gone: a process of this machine that no longer exists (seen at once),
    or any worker whose heartbeat is older than STALE."""
    if worker is None or heartbeat is None:
        return True
    if worker != me and gone(worker):
        return True
    beat = heartbeat if heartbeat.tzinfo else heartbeat.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - beat).total_seconds() > STALE
