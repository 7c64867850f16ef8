"""The only package that opens database sessions. Short transactions, one per state change."""

from __future__ import annotations

from .batches import Batches
from .breakers import Breakers, BreakerState
from .database import READ, CannotOpen, Database, data_dir, default_database_url, make_engine
from .dead_letters import DeadLetters
from .deliveries import Deliveries, Undelivered
from .documents import Documents
from .journal import Journal
from .queue import RELEASED, Claim, Queue, RunHeld
from .runs import Runs
from .schedules import Firing, Recorded, Schedules
from .tokens import TokenInfo, TokenNameTaken, Tokens
from .webhooks import Due, Webhooks

__all__ = [
    "READ",
    "BreakerState",
    "CannotOpen",
    "Claim",
    "Firing",
    "Recorded",
    "Due",
    "RELEASED",
    "RunHeld",
    "Store",
    "TokenInfo",
    "TokenNameTaken",
    "Undelivered",
    "data_dir",
    "default_database_url",
    "make_engine",
]


class Store(
    Documents, Runs, Queue, Journal, Batches, Tokens, Deliveries, DeadLetters, Schedules, Webhooks, Breakers, Database
):
    """Every method lets sqlalchemy's OperationalError through when the database is locked or gone,
    so that callers can retry."""
