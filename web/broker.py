"""Redis, as the processes of a cluster reach it (SOP_REDIS_URL). Every command waits a bounded time: a Redis
that stops answering delays an event or a control by seconds, and never hangs it. A subscription waits for as
long as it must (redis-py reads one without the socket timeout)."""

from __future__ import annotations

from typing import Any

import socketio
from redis.asyncio import Redis

OPTIONS: dict[str, Any] = {"socket_timeout": 3.0, "socket_connect_timeout": 3.0}


def connect(url: str) -> Redis:
    return Redis.from_url(url, **OPTIONS)


def socket_manager(url: str, write_only: bool = False) -> socketio.AsyncRedisManager:
    """python-socketio's Redis manager: a server's hands the events any process sends to its own clients; a
    write-only one sends them from a process without clients."""
    return socketio.AsyncRedisManager(url, write_only=write_only, redis_options=dict(OPTIONS))
