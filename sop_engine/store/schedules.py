"""Schedules and their firings. A tick is recorded once: the unique key (schedule, fire_at) makes a second
server's insert fail, and that server then does nothing for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from ..events import Event, utcnow
from ..states import RUN_TERMINAL, RunStatus
from ..tables import RunEventRow, RunRow, ScheduleFiringRow, ScheduleRow
from ..timetable import utc
from .database import Database

GOING = tuple(str(s) for s in RunStatus if s not in RUN_TERMINAL)  # queued, running, paused


@dataclass(frozen=True)
class Firing:
    """What to record for one tick: a run to queue (with its run.created data), or why there is none."""

    schedule_id: str
    fire_at: datetime
    outcome: str  # fired, missed, failed
    detail: str | None = None
    run: RunRow | None = None
    created: dict[str, Any] | None = None  # the run.created event's data


@dataclass(frozen=True)
class Recorded:
    firing: ScheduleFiringRow
    event: Event | None  # the run's run.created, when it made one


class Schedules(Database):
    def create_schedule(self, row: ScheduleRow) -> ScheduleRow:
        with self.session() as s, s.begin():
            s.add(row)
        return row

    def schedule(self, schedule_id: str) -> ScheduleRow | None:
        with self.reading() as s:
            return s.get(ScheduleRow, schedule_id)

    def schedules(self, limit: int = 500) -> list[ScheduleRow]:
        with self.reading() as s:
            return list(s.exec(select(ScheduleRow).order_by(ScheduleRow.created_at).limit(limit)))

    def due_schedules(self, now: datetime, limit: int = 1000) -> list[ScheduleRow]:
        """Enabled schedules whose next tick is at or before `now`, soonest first."""
        with self.reading() as s:
            query = select(ScheduleRow).where(ScheduleRow.enabled == True, ScheduleRow.next_fire_at <= now)  # noqa: E712
            return list(s.exec(query.order_by(ScheduleRow.next_fire_at).limit(limit)))

    def enable_schedule(self, schedule_id: str, enabled: bool, now: datetime, next_fire_at: datetime | None) -> bool:
        """On or off; turned on, the ticks while it was off are passed over (they were not missed: nobody
        wanted them). False when there is no such schedule."""
        values: dict[str, Any] = {"enabled": enabled}
        if enabled:
            values.update(last_fire_at=now, next_fire_at=next_fire_at)
        with self.session() as s, s.begin():
            query = update(ScheduleRow).where(ScheduleRow.id == schedule_id)  # type: ignore[arg-type]
            if enabled:  # already on: its place in time stays
                query = query.where(ScheduleRow.enabled == False)  # noqa: E712  # type: ignore[arg-type]
            s.execute(query.values(**values))
            return s.get(ScheduleRow, schedule_id) is not None

    def delete_schedule(self, schedule_id: str) -> bool:
        """The schedule and its firings; the runs it made stay."""
        with self.session() as s, s.begin():
            if s.get(ScheduleRow, schedule_id) is None:
                return False
            s.execute(delete(ScheduleFiringRow).where(ScheduleFiringRow.schedule_id == schedule_id))  # type: ignore[arg-type]
            s.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id))  # type: ignore[arg-type]
        return True

    def firings(self, schedule_id: str, limit: int = 20) -> list[ScheduleFiringRow]:
        """The schedule's latest firings, newest first."""
        with self.reading() as s:
            query = select(ScheduleFiringRow).where(ScheduleFiringRow.schedule_id == schedule_id)
            return list(s.exec(query.order_by(ScheduleFiringRow.fire_at.desc()).limit(limit)))  # type: ignore[attr-defined]

    def fire_times(self, schedule_id: str) -> list[datetime]:
        """Every tick recorded for the schedule, oldest first."""
        with self.reading() as s:
            query = select(ScheduleFiringRow.fire_at).where(ScheduleFiringRow.schedule_id == schedule_id)
            return list(s.exec(query.order_by(ScheduleFiringRow.fire_at)))

    def prune_firings(self, before: datetime) -> int:
        """Drops every schedule's firings of ticks before `before`, one schedule at a time (on the unique
        key's index). Safe for the once-only rule: a schedule's next ticks are after its last_fire_at,
        which is never earlier than a firing it recorded."""
        dropped = 0
        for schedule_id in [row.id for row in self.schedules(limit=100_000)]:
            with self.session() as s, s.begin():
                done = s.execute(
                    delete(ScheduleFiringRow).where(
                        ScheduleFiringRow.schedule_id == schedule_id,  # type: ignore[arg-type]
                        ScheduleFiringRow.fire_at < before,  # type: ignore[arg-type]
                    )
                )
                dropped += done.rowcount or 0
        return dropped

    def record_firing(self, firing: Firing, overlap: str, next_fire_at: datetime | None) -> Recorded | None:
        """In one transaction: the firing row, its run with the run.created event (unless the schedule's
        previous run is still going and `overlap` is skip: then the firing says so and makes none), and the
        schedule's place in time. None when the tick was recorded already (by another server) or the
        schedule is gone or off."""
        try:
            with self.session() as s, s.begin():
                # the row lock puts two servers' firings of one schedule one after the other (PostgreSQL;
                # SQLite's write transactions are one at a time already)
                found = s.exec(
                    select(ScheduleRow).where(ScheduleRow.id == firing.schedule_id).with_for_update()
                ).first()
                if found is None or not found.enabled:
                    return None
                run, outcome, detail = firing.run, firing.outcome, firing.detail
                if run is not None and overlap == "skip" and (going := _going(s, firing.schedule_id)) is not None:
                    run, outcome, detail = None, "skipped", f"the run {going} of an earlier tick is still going"
                row = ScheduleFiringRow(
                    schedule_id=firing.schedule_id,
                    fire_at=firing.fire_at,
                    run_id=run.id if run else None,
                    outcome=outcome,
                    detail=detail,
                    recorded_at=utcnow(),
                )
                s.add(row)
                s.flush()  # the unique key: another server recorded this tick
                event = None
                if run is not None:
                    run.last_seq = 1
                    s.add(run)
                    s.flush()
                    event = Event(run.id, 1, "run.created", firing.created or {})
                    s.add(RunEventRow(run_id=run.id, seq=1, type=event.type, data=event.data, at=event.at))
                if found.last_fire_at is None or utc(found.last_fire_at) < utc(firing.fire_at):
                    found.last_fire_at = firing.fire_at
                    found.next_fire_at = next_fire_at
                    s.add(found)
        except IntegrityError:
            return None
        return Recorded(row, event)


def _going(s: Any, schedule_id: str) -> str | None:
    """A run of the schedule that has not ended, if any (on the runs' status index, then the firing's)."""
    query = (
        select(RunRow.id)
        .join(ScheduleFiringRow, ScheduleFiringRow.run_id == RunRow.id)  # type: ignore[arg-type]
        .where(RunRow.status.in_(GOING), ScheduleFiringRow.schedule_id == schedule_id)  # type: ignore[attr-defined]
    )
    return s.exec(query.limit(1)).first()
