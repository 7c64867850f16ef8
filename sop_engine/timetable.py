"""When a schedule fires: a cron expression in a time zone (croniter) or a fixed interval, and which of its
ticks are due at a moment, missed ones included. Pure: no I/O, every moment is passed in.

A cron schedule fires at each wall time that matches, once: a time that a spring-forward skips fires at the
first moment after the gap (croniter's rule), and a time that a fall-back repeats fires at its first pass only.
An interval fires every `interval` seconds from its anchor, whatever the zone."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterError, croniter

CRON_MAX = 200  # characters of a cron expression
ZONE_MAX = 64  # characters of a time zone name
INTERVAL_MAX = 366 * 24 * 3600  # seconds: a year and a day
BURST_MAX = 1000  # ticks one round fires of one schedule; the rest wait for the next round
# croniter's R (random) and H (hashed) would give each server its own times
_UNSHARED = re.compile(r"(?<![A-Za-z])[RH](?![A-Za-z])")


class BadTimetable(ValueError):
    """The cron expression, interval or time zone cannot make a schedule: the message says which and why."""


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one (as SQLite gives them back) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def zone_of(name: str) -> ZoneInfo:
    """An IANA zone: not a file path, nor the machine's own `localtime` (each server could have its own)."""
    if (name not in _iana_names() and name != "UTC") or name == "localtime":
        raise BadTimetable(f"unknown time zone {name[:ZONE_MAX]!r}: use an IANA name like Europe/Berlin or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadTimetable(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin or UTC") from None


@dataclass(frozen=True)
class Timetable:
    cron: str | None  # 5 fields, or 6 with seconds last
    interval: int | None  # seconds
    zone: str  # IANA name; a cron's wall times are in it
    anchor: datetime  # an interval's ticks are anchor + k * interval (UTC, whole seconds)

    @classmethod
    def checked(cls, cron: str | None, interval: int | None, zone: str, anchor: datetime) -> Timetable:
        """Raises BadTimetable naming the problem: not exactly one of cron and interval, a cron croniter
        refuses or that never fires, an interval out of [1 s, a year], an unknown zone."""
        zone_of(zone)
        if (cron is None) == (interval is None):
            raise BadTimetable("give either cron or interval_seconds, not both or neither")
        if interval is not None and not 1 <= interval <= INTERVAL_MAX:
            raise BadTimetable(f"interval_seconds must be from 1 to {INTERVAL_MAX} (a year and a day)")
        if cron is not None:
            _check_cron(cron)
        table = cls(cron, interval, zone, utc(anchor).replace(microsecond=0))
        if cron is not None:
            try:
                table.after(table.anchor)
            except CroniterError:
                raise BadTimetable(f"cron {cron!r} never fires") from None
        return table

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment` (UTC)."""
        moment = utc(moment)
        if self.interval is not None:
            steps = (moment - self.anchor) // timedelta(seconds=self.interval) + 1
            return self.anchor + timedelta(seconds=self.interval * max(steps, 0))
        return next(self._cron_ticks(moment, forward=True))

    def at_or_before(self, moment: datetime) -> datetime | None:
        """The last tick at or before `moment` (UTC); None before an interval's anchor."""
        moment = utc(moment)
        if self.interval is not None:
            if moment < self.anchor:
                return None
            steps = (moment - self.anchor) // timedelta(seconds=self.interval)
            return self.anchor + timedelta(seconds=self.interval * steps)
        # croniter's get_prev is strictly before its start: start one microsecond later
        return next(self._cron_ticks(moment + timedelta(microseconds=1), forward=False), None)

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next `count` ticks after `moment`."""
        found: list[datetime] = []
        for _ in range(count):
            try:
                moment = self.after(moment)
            except CroniterError:
                break
            found.append(moment)
        return found

    def _cron_ticks(self, start: datetime, forward: bool) -> Iterator[datetime]:
        assert self.cron is not None
        ticks = croniter(self.cron, start.astimezone(zone_of(self.zone)))
        step = ticks.get_next if forward else ticks.get_prev
        while True:
            tick = step(datetime)
            if tick.fold == 1 and tick.replace(fold=0).utcoffset() != tick.utcoffset():
                continue  # the second pass of a wall time a fall-back repeats: it fired at the first
            yield utc(tick)


def _check_cron(cron: str) -> None:
    if len(cron) > CRON_MAX:
        raise BadTimetable(f"cron is longer than {CRON_MAX} characters")
    if _UNSHARED.search(cron):
        raise BadTimetable("cron may not use R (random) or H (hashed): every server must compute the same times")
    try:
        valid = croniter.is_valid(cron) and len(cron.split()) in (5, 6)
    except (CroniterBadCronError, CroniterBadDateError, ValueError):
        valid = False
    if not valid:
        raise BadTimetable(
            f"cron {cron!r} is not a cron expression: five fields (minute hour day month weekday), "
            "or six with seconds last, like '30 2 * * *' or '*/10 * * * * *'"
        )


@dataclass(frozen=True)
class Due:
    """What one round does with a schedule: the ticks to fire, the latest missed tick (fired under catch-up
    `once`, recorded as missed under `none`), and the first of the missed ones."""

    fire: list[datetime]
    missed: datetime | None = None
    missed_from: datetime | None = None

    @property
    def last(self) -> datetime | None:
        """The latest tick this round deals with: the next round starts after it."""
        ticks = [*self.fire, *([self.missed] if self.missed else [])]
        return max(ticks) if ticks else None


def due(table: Timetable, after: datetime, now: datetime, grace: float) -> Due:
    """The ticks after `after` up to `now`. Those within `grace` seconds of now are on time and all fire
    (at most BURST_MAX); older ones were missed (the server was down): the caller's catch-up policy decides
    what the latest of them does."""
    after, now = utc(after), utc(now)
    try:
        first = table.after(after)
    except CroniterError:
        return Due([])
    if first > now:
        return Due([])
    cutoff = now - timedelta(seconds=grace)
    missed = table.at_or_before(cutoff) if first <= cutoff else None
    fire: list[datetime] = []
    tick = missed or after
    while len(fire) < BURST_MAX:
        try:
            tick = table.after(tick)
        except CroniterError:
            break
        if tick > now:
            break
        fire.append(tick)
    return Due(fire, missed, first if missed else None)
