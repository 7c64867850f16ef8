"""Schedules: their timetables (croniter in a zone, across DST; intervals), and the tick that fires each of
their ticks once, with explicit times: catch-up after downtime, overlap, two stores on one database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sop_engine.document import DocumentError, load_sop
from sop_engine.scheduler import Scheduler
from sop_engine.store import Store
from sop_engine.timetable import BadTimetable, Timetable, due, utc
from tests.conftest import both_databases

BERLIN = ZoneInfo("Europe/Berlin")
SOP = "sop: 1\nid: beat\ninputs: {who: {type: string, default: x}}\nsteps:\n  - {id: a, action: navigate, url: 'http://127.0.0.1:1/'}\n"
SECRET_SOP = (
    "sop: 1\nid: hush\ninputs: {pw: {type: string, secret: true}}\n"
    "steps:\n  - {id: a, action: navigate, url: 'http://127.0.0.1:1/'}\n"
)
T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def daily_0230(start: datetime, until: datetime) -> list[datetime]:
    table = Timetable.checked("30 2 * * *", None, "Europe/Berlin", start)
    return due(table, start, until, grace=10**9).fire


# timetables ---------------------------------------------------------------------------------------


def test_a_daily_0230_fires_once_on_the_spring_forward_day_and_once_on_the_fall_back_day():
    spring = daily_0230(datetime(2026, 3, 28, 12, tzinfo=BERLIN), datetime(2026, 3, 30, 12, tzinfo=BERLIN))
    # 29 March 2026: 02:00 jumps to 03:00, so 02:30 does not exist: it fires once, at 03:00 CEST
    assert spring == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC), datetime(2026, 3, 30, 0, 30, tzinfo=UTC)]
    fall = daily_0230(datetime(2026, 10, 24, 12, tzinfo=BERLIN), datetime(2026, 10, 26, 12, tzinfo=BERLIN))
    # 25 October 2026: 03:00 goes back to 02:00, so 02:30 happens twice: it fires at the first (CEST)
    assert fall == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]


def test_the_latest_tick_at_or_before_skips_the_repeated_wall_time_too():
    table = Timetable.checked("30 2 * * *", None, "Europe/Berlin", datetime(2026, 10, 1, tzinfo=UTC))
    assert table.at_or_before(datetime(2026, 10, 25, 12, tzinfo=UTC)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert table.upcoming(datetime(2026, 10, 24, 12, tzinfo=UTC), 2) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]


def test_an_interval_ticks_from_its_anchor_in_whole_seconds():
    table = Timetable.checked(None, 5, "UTC", at(0.7))
    assert table.anchor == T0
    assert table.after(at(0)) == at(5) and table.after(at(4.9)) == at(5) and table.after(at(5)) == at(10)
    assert table.at_or_before(at(14.9)) == at(10) and table.at_or_before(at(-1)) is None


@pytest.mark.parametrize(
    ("cron", "interval", "zone", "says"),
    [
        ("61 * * * *", None, "UTC", "not a cron expression"),
        ("not a cron", None, "UTC", "not a cron expression"),
        ("* * * *", None, "UTC", "not a cron expression"),
        ("R * * * *", None, "UTC", "R (random)"),
        ("H * * * *", None, "UTC", "H (hashed)"),
        ("0 0 31 2 *", None, "UTC", "never fires"),
        ("*" * 300, None, "UTC", "longer than 200"),
        (None, 0, "UTC", "interval_seconds must be from 1"),
        (None, 10**12, "UTC", "interval_seconds must be from 1"),
        (None, None, "UTC", "either cron or interval_seconds"),
        ("* * * * *", 5, "UTC", "either cron or interval_seconds"),
        ("* * * * *", None, "Mars/Olympus", "unknown time zone"),
        ("* * * * *", None, "../../etc/passwd", "unknown time zone"),
        ("* * * * *", None, "x" * 500, "unknown time zone"),
        ("* * * * *", None, "localtime", "unknown time zone"),
    ],
)
def test_a_bad_timetable_says_what_is_wrong(cron, interval, zone, says):
    with pytest.raises(BadTimetable, match=None) as caught:
        Timetable.checked(cron, interval, zone, T0)
    assert says in str(caught.value)


def test_ticks_within_grace_all_fire_and_older_ones_were_missed():
    table = Timetable.checked(None, 1, "UTC", T0)
    on_time = due(table, at(0), at(3.5), grace=10)
    assert (on_time.fire, on_time.missed) == ([at(1), at(2), at(3)], None)
    late = due(table, at(0), at(100.5), grace=10)
    assert (late.missed_from, late.missed) == (at(1), at(90))
    assert late.fire == [at(s) for s in range(91, 101)]


# the tick, with explicit times ------------------------------------------------------------------


def scheduler(store: Store, grace: float = 10) -> Scheduler:
    store.save_document(load_sop(SOP))
    return Scheduler(store, grace=grace)


def fired_at(store: Store, schedule_id: str) -> list[datetime]:
    return [utc(t) for t in store.fire_times(schedule_id)]


@both_databases
def test_every_tick_of_a_window_fires_exactly_once_whatever_the_rounds(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1)
    for now in (at(0.2), at(1.0), at(1.1), at(3.9), at(3.9), at(4.0), at(7.5)):
        ticks.tick(now)
    assert fired_at(store, row.id) == [at(s) for s in range(1, 8)]
    assert store.runs(sop_id="beat")[1] == 1  # overlap skip: the first run is still queued, the rest skipped
    outcomes = [f.outcome for f in store.firings(row.id, limit=100)]
    assert outcomes == ["skipped"] * 6 + ["fired"]
    assert utc(store.schedule(row.id).next_fire_at) == at(8)


@both_databases
def test_overlap_queue_makes_a_run_for_every_tick(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1, overlap="queue", inputs={"who": "q"})
    fired = ticks.tick(at(3))
    assert [f.outcome for f in fired] == ["fired"] * 3
    runs, total = store.runs(sop_id="beat")
    assert total == 3 and {r.inputs["who"] for r in runs} == {"q"} and {r.status for r in runs} == {"queued"}
    assert [e.data["schedule_id"] for e in (f.event for f in fired) if e] == [row.id] * 3


@both_databases
def test_overlap_skip_fires_again_once_the_previous_run_ended(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1)
    [first] = ticks.tick(at(1))
    assert [f.outcome for f in ticks.tick(at(2))] == ["skipped"]
    _end(store, first.run_id)
    assert [f.outcome for f in ticks.tick(at(3))] == ["fired"]
    assert store.firings(row.id)[1].detail == f"the run {first.run_id} of an earlier tick is still going"


def _end(store: Store, run_id: str) -> None:
    """The run ends (as a worker would have it: claimed, then completed through the gate)."""
    store.claim_run(run_id, "w1")
    store.record_many(run_id, [("run.updated", {"status": "completed"}, {"run": {"status": "completed"}})], "w1")


@both_databases
def test_catch_up_once_fires_only_the_latest_missed_tick(store: Store):
    ticks = scheduler(store, grace=30)
    row = ticks.create("beat", T0, cron="* * * * *", overlap="queue")  # every minute, on the minute
    ticks.tick(at(60))
    # down from 10:01:30 to 10:10:15: 10:02 … 10:09 were missed; 10:10 is on time (within 30 s)
    fired = ticks.tick(at(615))
    assert [(f.fire_at, f.outcome) for f in fired] == [(at(540), "fired"), (at(600), "fired")]
    assert fired_at(store, row.id) == [at(60), at(540), at(600)]
    catch_up = store.firings(row.id)[1]
    assert "stands for the ticks from 2026-01-05 10:02:00 to 2026-01-05 10:09:00 UTC" in catch_up.detail
    assert store.runs(sop_id="beat")[1] == 3


@both_databases
def test_catch_up_none_fires_no_missed_tick_and_moves_on(store: Store):
    ticks = scheduler(store, grace=30)
    row = ticks.create("beat", T0, cron="* * * * *", catch_up="none", overlap="queue")
    ticks.tick(at(60))
    fired = ticks.tick(at(615))
    assert [(f.fire_at, f.outcome, f.run_id is None) for f in fired] == [
        (at(540), "missed", True),
        (at(600), "fired", False),
    ]
    assert store.runs(sop_id="beat")[1] == 2
    assert utc(store.schedule(row.id).next_fire_at) == at(660)
    assert ticks.tick(at(616)) == []


@both_databases
def test_two_stores_on_one_database_never_fire_a_tick_twice(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1, overlap="queue")
    other = Store()
    try:
        second = Scheduler(other, grace=10)
        stale = other.schedule(row.id)
        assert len(ticks.tick(at(3))) == 3
        assert second.tick_schedule(stale, at(3)) == []  # the same ticks, seen from an old row: refused by the key
        # both ticking at once, over and over
        fired: list[list] = [[], []]

        def ticking(which: int, scheduler_: Scheduler) -> None:
            for step in range(4, 40):
                fired[which] += scheduler_.tick(at(step))

        threads = [threading.Thread(target=ticking, args=(i, t)) for i, t in enumerate((ticks, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    mine = {f.fire_at for f in fired[0]}
    assert not mine & {f.fire_at for f in fired[1]}
    assert fired_at(store, row.id) == [at(s) for s in range(1, 40)]
    assert store.runs(sop_id="beat", limit=500)[1] == 39


@both_databases
def test_secret_inputs_stay_sealed_in_the_schedule_and_its_runs(store: Store):
    store.save_document(load_sop(SECRET_SOP))
    ticks = Scheduler(store, grace=10)
    row = ticks.create("hush", T0, interval=1, inputs={"pw": "hunter2-topsecret"})
    assert row.inputs == {"pw": "***"} and "hunter2" not in (row.secrets or "")
    [fired] = ticks.tick(at(1))
    run = store.run(fired.run_id)
    assert run.inputs == {"pw": "***"} and ticks.vault.open(run.secrets) == {"pw": "hunter2-topsecret"}
    assert "hunter2" not in repr(store.events(run.id)) + repr(store.schedule(row.id))
    # a later version no longer says the input is secret, and wants a number: the failure does not show it
    store.save_document(load_sop(SECRET_SOP.replace("{type: string, secret: true}", "{type: integer}")))
    _end(store, fired.run_id)
    [failed] = ticks.tick(at(2))
    detail = store.firings(row.id)[0].detail
    assert failed.outcome == "failed" and "must be integer" in detail and "hunter2" not in detail


@both_databases
def test_a_tick_whose_inputs_no_longer_fit_the_latest_version_says_so(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1, inputs={"who": "x"})
    store.save_document(load_sop(SOP.replace("{who: {type: string, default: x}}", "{whom: {type: string}}")))
    [fired] = ticks.tick(at(1))
    assert (fired.outcome, fired.run_id) == ("failed", None)
    assert "version 2" in store.firings(row.id)[0].detail


@both_databases
def test_creation_refuses_unknown_sops_versions_and_unfit_inputs(store: Store):
    ticks = scheduler(store)
    with pytest.raises(LookupError, match="no SOP nope"):
        ticks.create("nope", T0, interval=1)
    with pytest.raises(LookupError, match="version 9"):
        ticks.create("beat", T0, interval=1, version=9)
    with pytest.raises(DocumentError):
        ticks.create("beat", T0, interval=1, inputs={"whom": 1})


@both_databases
def test_a_disabled_schedule_does_not_fire_and_enabled_again_passes_over_the_ticks_while_off(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1, overlap="queue")
    ticks.tick(at(1))
    assert store.enable_schedule(row.id, False, at(1), None)
    assert ticks.tick(at(5)) == []
    assert store.enable_schedule(row.id, True, at(20.5), at(21))
    assert [f.fire_at for f in ticks.tick(at(22))] == [at(21), at(22)]
    assert store.delete_schedule(row.id) and store.schedule(row.id) is None and store.fire_times(row.id) == []


@both_databases
def test_old_firings_are_dropped_and_their_ticks_never_fire_again(store: Store):
    ticks = scheduler(store)
    row = ticks.create("beat", T0, interval=1, overlap="queue")
    ticks.tick(at(5))
    assert store.prune_firings(at(4)) == 3  # the ticks at 1, 2 and 3 s
    assert fired_at(store, row.id) == [at(4), at(5)]
    assert ticks.tick_schedule(store.schedule(row.id), at(6)) != [] and fired_at(store, row.id) == [at(4), at(5), at(6)]
    # the tick itself prunes, once an hour: what is older than SOP_SCHEDULE_KEEP_DAYS goes
    ticks.keep = timedelta(seconds=2)
    ticks._pruned_at = None
    ticks.tick(at(7))
    assert fired_at(store, row.id) == [at(5), at(6), at(7)]
