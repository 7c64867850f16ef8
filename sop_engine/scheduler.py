"""The schedules' tick: for each enabled schedule that is due, the ticks it has to fire (sop_engine.timetable),
each recorded once under (schedule, fire_at) with the run it queued, in one transaction
(store.schedules.record_firing). Any number of servers may tick at once: a tick another one recorded first
is left to it. `now` is a parameter, so tests drive it with fixed times."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from croniter import CroniterError
from sqlalchemy.exc import DBAPIError

from . import settings
from .document import DocumentError, LoadedSop, load_sop, resolve_inputs
from .events import Event
from .masking import MASK, Masker
from .runner import shown_inputs
from .store import Firing, Store
from .store.runs import new_run_row
from .tables import ScheduleRow
from .timetable import Due, Timetable, due, utc
from .vault import Vault

log = logging.getLogger("sop_engine.scheduler")
PRIORITY = 1  # a scheduled run queues at normal priority
PRUNE_EVERY = timedelta(hours=1)


def timetable_of(row: ScheduleRow) -> Timetable:
    """A stored schedule's timetable (checked when it was created)."""
    return Timetable(row.cron, row.interval_seconds, row.timezone, utc(row.created_at).replace(microsecond=0))


def next_after(table: Timetable, moment: datetime) -> datetime | None:
    try:
        return table.after(moment)
    except CroniterError:
        return None


@dataclass(frozen=True)
class Fired:
    """A tick this process recorded."""

    schedule_id: str
    fire_at: datetime
    outcome: str  # fired, skipped, missed, failed
    run_id: str | None
    event: Event | None  # the run's run.created, for the live feed


class Scheduler:
    def __init__(
        self,
        store: Store,
        vault: Vault | None = None,
        documents: Callable[[int], LoadedSop] | None = None,
        grace: float | None = None,
    ) -> None:
        self.store = store
        self.vault = vault or Vault()
        self._documents = documents
        self._loaded: dict[int, LoadedSop] = {}
        options = settings.current()
        self.grace = options.schedule_grace_seconds if grace is None else grace
        self.keep = timedelta(days=options.schedule_keep_days)
        self._pruned_at: datetime | None = None

    def create(
        self,
        sop_id: str,
        now: datetime,
        *,
        version: int | None = None,
        cron: str | None = None,
        interval: int | None = None,
        zone: str = "UTC",
        inputs: dict[str, Any] | None = None,
        overlap: str = "skip",
        catch_up: str = "once",
        created_by: str | None = None,
    ) -> ScheduleRow:
        """A new schedule, its first tick the first after `now`. Raises BadTimetable (the cron, interval or
        zone), LookupError (no such SOP or version), DocumentError (the inputs do not fit that version, or
        the latest one)."""
        table = Timetable.checked(cron, interval, zone, now)
        document = self.store.document(sop_id, version)
        if document is None:
            raise LookupError(f"no SOP {sop_id}" + (f" version {version}" if version else ""))
        loaded = self._document(document.id)  # type: ignore[arg-type]
        resolve_inputs(loaded.sop, inputs or {})  # raises DocumentError when they do not fit
        given = dict(inputs or {})  # as given: a later version fills in its own defaults when it fires
        row = ScheduleRow(
            id=uuid.uuid4().hex,
            sop_id=sop_id,
            version=version,
            cron=cron,
            interval_seconds=interval,
            timezone=zone,
            inputs=shown_inputs(loaded, given) if loaded.sop.secret_inputs else given,
            secrets=self.vault.seal(given) if loaded.sop.secret_inputs else None,
            overlap=overlap,
            catch_up=catch_up,
            created_by=created_by,
            created_at=table.anchor,
            last_fire_at=table.anchor,
            next_fire_at=next_after(table, table.anchor),
        )
        return self.store.create_schedule(row)

    def tick(self, now: datetime) -> list[Fired]:
        """Fires every due schedule's ticks up to `now`; once an hour, drops firings older than
        SOP_SCHEDULE_KEEP_DAYS (a schedule every second records 86,400 a day)."""
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            self.store.prune_firings(now - self.keep)
        fired: list[Fired] = []
        for row in self.store.due_schedules(now):
            try:
                fired += self.tick_schedule(row, now)
            except DBAPIError:  # the database is away: the caller's next round tries again
                raise
            except Exception:  # one broken schedule does not stop the others
                log.exception("schedule %s could not fire", row.id)
        return fired

    def tick_schedule(self, row: ScheduleRow, now: datetime) -> list[Fired]:
        """One schedule's due ticks, as `row` says it stands (a stale row is fine: the unique key refuses
        a tick recorded already)."""
        table = timetable_of(row)
        plan = due(table, row.last_fire_at or row.created_at, now, self.grace)
        fired = []
        for firing in self._firings(row, plan):
            recorded = self.store.record_firing(firing, row.overlap, next_after(table, firing.fire_at))
            if recorded is not None:
                f = recorded.firing
                fired.append(Fired(row.id, firing.fire_at, f.outcome, f.run_id, recorded.event))
        return fired

    def _firings(self, row: ScheduleRow, plan: Due) -> list[Firing]:
        firings = []
        if plan.missed is not None:
            span = f"the ticks from {plan.missed_from:%Y-%m-%d %H:%M:%S} to {plan.missed:%Y-%m-%d %H:%M:%S} UTC"
            if row.catch_up == "once":
                firings.append(self._firing(row, plan.missed, f"catch-up: stands for {span}, missed while down"))
            else:
                firings.append(Firing(row.id, plan.missed, "missed", f"{span} were missed while down (catch-up none)"))
        return firings + [self._firing(row, tick) for tick in plan.fire]

    def _firing(self, row: ScheduleRow, tick: datetime, detail: str | None = None) -> Firing:
        """The run for a tick, or why there is none (the SOP or version is gone, the inputs no longer fit)."""
        document = self.store.document(row.sop_id, row.version)
        if document is None:
            gone = f"SOP {row.sop_id}" + (f" version {row.version}" if row.version else "") + " is gone"
            return Firing(row.id, tick, "failed", gone)
        given: dict[str, Any] = dict(row.inputs)
        try:
            given = self.vault.open(row.secrets) if row.secrets else given
            loaded = self._document(document.id)  # type: ignore[arg-type]
            inputs = _resolved(loaded, given)
        except (DocumentError, ValueError, LookupError) as exc:
            # the values secret when the schedule was made stay masked, whatever this version declares
            masker = Masker([given.get(n) for n, shown in row.inputs.items() if shown == MASK])
            return Firing(row.id, tick, "failed", f"version {document.version}: {masker(str(exc))[:500]}")
        shown = shown_inputs(loaded, inputs)
        sealed = self.vault.seal(inputs) if loaded.sop.secret_inputs else None
        run = new_run_row(
            document.id,  # type: ignore[arg-type]
            document.sop_id,
            document.version,
            shown,
            "queued",
            PRIORITY,
            secrets=sealed,
            created_by=row.created_by,
        )
        created: dict[str, Any] = {"status": "queued", "sop_id": run.sop_id, "inputs": shown}
        created.update(schedule_id=row.id, fire_at=tick.isoformat())
        return Firing(row.id, tick, "fired", detail, run, created)

    def _document(self, document_id: int) -> LoadedSop:
        if self._documents is not None:
            return self._documents(document_id)
        loaded = self._loaded.get(document_id)
        if loaded is None:
            row = self.store.document_by_id(document_id)
            if row is None:
                raise LookupError(f"document {document_id} is gone")
            loaded = self._loaded[document_id] = load_sop(row.source, base_dir=row.base_dir_path)
        return loaded


def _resolved(loaded: LoadedSop, given: dict[str, Any]) -> dict[str, Any]:
    try:
        return resolve_inputs(loaded.sop, given)
    except DocumentError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise ValueError(f"the inputs no longer fit: {problems}") from None
