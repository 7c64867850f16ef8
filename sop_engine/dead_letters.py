"""Dead letters: runs that ended `failed` after their retries, classified and grouped so a person can act on
many at once. Pure: what an error's kind is, what message a group shares, what the filters of a search are."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ErrorKind

OTHER = "other"  # a failed run without a classified failed step (an internal error, a lost start)
ERROR_KINDS = (*(k.value for k in ErrorKind), OTHER)
BULK_ACTIONS = ("retry", "rerun", "delete")
BULK_MAX = 500  # runs one bulk request may name or act on
GROUP_RUNS_SHOWN = 100  # run ids listed with each group (the group's `count` says how many there are)
GROUP_SCAN_MAX = 5000  # failed runs, newest first, that one grouping reads
MESSAGE_MAX = 500  # characters of a group's message kept

# what varies between two failures of the same cause, each collapsed to a placeholder, in this order
_VARYING = (
    (re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>)]+", re.I), "<url>"),
    (re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b[0-9a-f]{16,}\b", re.I), "<id>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def error_kind(step_error: dict[str, Any] | None) -> str:
    """The kind of a failed run's error: that of the step that failed it (sop_engine.errors.ErrorKind, as the
    runner stored it in the step's error), else `other`."""
    kind = step_error.get("kind") if isinstance(step_error, dict) else None
    return kind if kind in ERROR_KINDS else OTHER


def normalised(message: str | None) -> str:
    """The message with what varies from one failure to the next collapsed: URLs to <url>, ids (UUIDs, long
    hex) to <id>, numbers to <n> (timings, ports, loop indexes), runs of spaces to one. `timeout after 3001 ms`
    and `timeout after 3004 ms` read the same."""
    text = (message or "(no error message)")[: MESSAGE_MAX * 4]
    for pattern, placeholder in _VARYING:
        text = pattern.sub(placeholder, text)
    return text.strip()[:MESSAGE_MAX]


def group_key(message: str | None) -> str:
    """A short stable key of a group of failures: the SHA-256 of the normalised message, 16 hex digits."""
    return hashlib.sha256(normalised(message).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunFilter:
    """What a search of runs keeps (every field that is set); `since`/`until` bound when the run ended."""

    status: str | None = None
    sop_id: str | None = None
    created_by: str | None = None
    error_kind: str | None = None
    batch_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
