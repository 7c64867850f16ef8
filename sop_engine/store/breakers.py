"""Circuit breakers per target host: each change one short transaction of conditional UPDATEs, so that two
processes counting failures of one host add up, and only one of them takes the half-open trial."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from ..tables import BreakerRow
from .database import Database


@dataclass(frozen=True)
class BreakerState:
    """A breaker as it may be shown; its times in UTC."""

    host: str
    state: str  # closed, open, half_open
    failures: int
    window_start: datetime | None
    opened_until: datetime | None
    trial_until: datetime | None
    last_error: str | None
    opens: int
    updated_at: datetime

    @classmethod
    def of(cls, row: BreakerRow) -> BreakerState:
        return cls(
            row.host,
            row.state,
            row.failures,
            _utc(row.window_start),
            _utc(row.opened_until),
            _utc(row.trial_until),
            row.last_error,
            row.opens,
            _utc(row.updated_at) or row.updated_at,
        )

    @classmethod
    def closed(cls, host: str, at: datetime) -> BreakerState:
        return cls(host, "closed", 0, None, None, None, None, 0, at)


def _utc(at: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; every time here is UTC."""
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)


class Breakers(Database):
    def breaker(self, host: str) -> BreakerState | None:
        with self.reading() as s:
            row = s.get(BreakerRow, host)
            return BreakerState.of(row) if row is not None else None

    def breakers(self) -> list[BreakerState]:
        with self.reading() as s:
            return [BreakerState.of(row) for row in s.exec(select(BreakerRow).order_by(BreakerRow.host))]

    def breaker_trial(self, host: str, now: datetime, lease: float) -> tuple[BreakerState | None, bool]:
        """The breaker, and whether this caller took its trial: an open one whose cool-down is over, or a
        half-open one whose trial's lease ran out, becomes half-open with a trial held until now + lease."""
        with self.session() as s, s.begin():
            taken = s.execute(
                _changed()
                .where(
                    BreakerRow.host == host,
                    or_(
                        (BreakerRow.state == "open") & (BreakerRow.opened_until <= now),
                        (BreakerRow.state == "half_open")
                        & (or_(BreakerRow.trial_until == None, BreakerRow.trial_until <= now)),  # noqa: E711
                    ),
                )
                .values(state="half_open", trial_until=now + timedelta(seconds=lease), updated_at=now)
            )
            row = _read(s, host)
            return (BreakerState.of(row) if row is not None else None), taken.rowcount == 1

    def breaker_failed(
        self,
        host: str,
        error: str,
        now: datetime,
        *,
        threshold: int,
        window: float,
        cooldown: float,
        trial: bool,
    ) -> tuple[BreakerState, bool]:
        """Counts a failure against the host; the breaker, and whether this failure opened it: the trial's
        failure reopens it; a closed one opens at `threshold` failures within `window` seconds."""
        until = now + timedelta(seconds=cooldown)
        error = error[:1000]
        with self.session() as s, s.begin():
            _ensure(s, host, now)
            if trial:
                done = s.execute(
                    _changed()
                    .where(BreakerRow.host == host, BreakerRow.state == "half_open")
                    .values(
                        state="open",
                        opened_until=until,
                        trial_until=None,
                        failures=BreakerRow.failures + 1,
                        opens=BreakerRow.opens + 1,
                        last_error=error,
                        updated_at=now,
                    )
                )
                opened = done.rowcount == 1
            else:
                since = now - timedelta(seconds=window)
                fresh = or_(BreakerRow.window_start == None, BreakerRow.window_start < since)  # noqa: E711
                s.execute(
                    _changed()
                    .where(BreakerRow.host == host, BreakerRow.state == "closed")
                    .values(
                        failures=case((fresh, 1), else_=BreakerRow.failures + 1),
                        window_start=case((fresh, now), else_=BreakerRow.window_start),
                        last_error=error,
                        updated_at=now,
                    )
                )
                done = s.execute(
                    _changed()
                    .where(BreakerRow.host == host, BreakerRow.state == "closed", BreakerRow.failures >= threshold)
                    .values(state="open", opened_until=until, opens=BreakerRow.opens + 1, updated_at=now)
                )
                opened = done.rowcount == 1
            row = _read(s, host)
            assert row is not None
            return BreakerState.of(row), opened

    def breaker_succeeded(self, host: str, now: datetime, *, trial: bool) -> BreakerState | None:
        """A success against the host: the trial's closes the breaker; any other resets a closed one's count
        (one that opened meanwhile stays open: that request went out before it did)."""
        with self.session() as s, s.begin():
            state = "half_open" if trial else "closed"
            s.execute(
                _changed()
                .where(BreakerRow.host == host, BreakerRow.state == state)
                .values(
                    state="closed",
                    failures=0,
                    window_start=None,
                    opened_until=None,
                    trial_until=None,
                    updated_at=now,
                )
            )
            row = _read(s, host)
            return BreakerState.of(row) if row is not None else None

    def breaker_released(self, host: str, now: datetime) -> None:
        """The trial ended without telling anything of the host (a policy refusal, a cancelled run): the next
        attempt may take it."""
        with self.session() as s, s.begin():
            s.execute(
                _changed()
                .where(BreakerRow.host == host, BreakerRow.state == "half_open")
                .values(trial_until=None, updated_at=now)
            )

    def reset_breaker(self, host: str, now: datetime) -> BreakerState | None:
        """Closes the breaker by hand, its count at zero; None when there is none for that host."""
        with self.session() as s, s.begin():
            s.execute(
                _changed()
                .where(BreakerRow.host == host)
                .values(
                    state="closed",
                    failures=0,
                    window_start=None,
                    opened_until=None,
                    trial_until=None,
                    updated_at=now,
                )
            )
            row = _read(s, host)
            return BreakerState.of(row) if row is not None else None


def _changed() -> Any:
    # the rows are read again after (_read): the session need not follow the UPDATE
    return update(BreakerRow).execution_options(synchronize_session=False)


def _read(s: Session, host: str) -> BreakerRow | None:
    # as the UPDATEs left it, not as the session may remember it
    return s.get(BreakerRow, host, populate_existing=True)


def _ensure(s: Session, host: str, now: datetime) -> None:
    """The host's row, made closed when there is none (two processes making it at once: one wins)."""
    if s.get(BreakerRow, host) is not None:
        return
    try:
        with s.begin_nested():
            s.add(BreakerRow(host=host, updated_at=now))
    except IntegrityError:
        pass
