"""Schedules through a real server process: a schedule every second fires each tick of a window exactly once,
across a restart and with two servers on one database (checked by the recorded `fire_at` values); the API's
validation, next times, roles and secrets."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from sop_engine.store import Store
from sop_engine.timetable import utc
from tests.conftest import BOB, CAROL, VIC, ServerProcess, both_databases, post_sop, wait_for

pytestmark = both_databases

BEAT = """
sop: 1
id: SOP_ID
inputs:
  who: {type: string, default: nobody}
  pw: {type: string, secret: true, default: ""}
steps:
  - {id: a, action: set, inputs: [who], values: {seen: "{{ who }}"}}
"""
EVERY_SECOND = {"cron": "* * * * * *", "overlap": "queue", "catch_up": "once"}
GRACE = "300"  # a restart well within it: the ticks while down are on time, and all fire


def firings(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    reply = client.get(f"/api/schedules/{schedule_id}", params={"firings": 500})
    assert reply.status_code == 200, reply.text
    return reply.json()["firings"]


def recorded(data: Path, database_url: str | None, schedule_id: str) -> list[datetime]:
    store = Store(database_url or f"sqlite:///{data / 'sop.db'}")
    try:
        return [utc(t) for t in store.fire_times(schedule_id)]
    finally:
        store.close()


def assert_every_second_once(times: list[datetime]) -> None:
    assert len(times) == len(set(times)), "a tick fired twice"
    first = times[0]
    assert times == [first + timedelta(seconds=i) for i in range(len(times))], "a tick is missing"


def new_schedule(client: httpx.Client, sop_id: str, **fields: Any) -> dict[str, Any]:
    reply = client.post("/api/schedules", json={"sop_id": sop_id, **fields})
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_a_schedule_every_second_fires_each_tick_once_across_a_restart(tmp_path: Path, database_url: str | None):
    data = tmp_path / "data"
    env = {"SOP_SCHEDULE_GRACE_SECONDS": GRACE}
    server = ServerProcess(data, concurrency=0, env=env, database_url=database_url).start()
    try:
        with server.client() as client:
            sop_id = post_sop(client, BEAT, "beat")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND, inputs={"who": "cron"})
            wait_for(lambda: len(firings(client, schedule["id"])) >= 3, timeout=60)
        server.stop()  # SIGTERM
        before = recorded(data, database_url, schedule["id"])
        server.start()
        with server.client() as client:
            # ticks recorded after the restart, both those that fell while it was down and new ones
            wait_for(lambda: len(firings(client, schedule["id"])) >= len(before) + 3, timeout=60)
            shown = firings(client, schedule["id"])
    finally:
        server.stop()
    times = recorded(data, database_url, schedule["id"])
    assert times[: len(before)] == before
    assert len(times) >= len(before) + 3
    assert_every_second_once(times)
    assert {f["outcome"] for f in shown} == {"fired"}
    runs = [f["run_id"] for f in shown]
    assert len(set(runs)) == len(runs)  # overlap queue: a run of its own for each tick


def test_two_servers_on_one_database_fire_each_tick_once(tmp_path: Path, database_url: str | None):
    data = tmp_path / "data"
    env = {"SOP_SCHEDULE_GRACE_SECONDS": GRACE}
    servers = [ServerProcess(data, concurrency=0, env=env, database_url=database_url) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        with servers[0].client() as client:
            sop_id = post_sop(client, BEAT, "two")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND)
            wait_for(lambda: len(firings(client, schedule["id"])) >= 6, timeout=60)
    finally:
        for server in servers:
            server.stop()
    assert_every_second_once(recorded(data, database_url, schedule["id"]))


# the API, on the tests' shared server (schedules that do not fire while the tests run) --------------


def test_bad_schedules_get_a_422_naming_the_problem(api):
    sop_id = post_sop(api, BEAT, "bad")
    cases = [
        ({"cron": "61 * * * *"}, "not a cron expression"),
        ({"cron": "R * * * *"}, "R (random)"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": "*" * 1000}, "cron"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": 10**15}, "interval_seconds"),
        ({"interval_seconds": 60, "cron": "* * * * *"}, "either cron or interval_seconds"),
        ({}, "either cron or interval_seconds"),
        ({"interval_seconds": 60, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"interval_seconds": 60, "timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"interval_seconds": 60, "sop_id": "no-such-sop"}, "no SOP no-such-sop"),
        ({"interval_seconds": 60, "version": 99}, "version 99"),
        ({"interval_seconds": 60, "inputs": {"whom": 1}}, "inputs do not fit"),
        ({"interval_seconds": 60, "overlap": "sometimes"}, "overlap"),
        ({"interval_seconds": 60, "catch_up": "all"}, "catch_up"),
        ({"interval_seconds": 60, "surprise": 1}, "surprise"),
    ]
    for fields, says in cases:
        reply = api.post("/api/schedules", json={"sop_id": sop_id, **fields})
        assert reply.status_code == 422, (fields, reply.text)
        assert says in reply.text, (fields, reply.text)
    assert api.post("/api/schedules", content=b"[").status_code == 400


def test_schedules_show_their_next_times_and_only_their_creator_controls_them(server, api):
    sop_id = post_sop(api, BEAT, "shown")
    with server.client(BOB) as bob, server.client(CAROL) as carol, server.client(VIC) as vic:
        made = new_schedule(bob, sop_id, interval_seconds=3600, inputs={"who": "bob", "pw": "s3cr3t-pw"})
        assert made["inputs"] == {"who": "bob", "pw": "***"} and "s3cr3t" not in str(made)
        assert vic.post("/api/schedules", json={"sop_id": sop_id, "interval_seconds": 60}).status_code == 403
        listed = {s["id"]: s for s in vic.get("/api/schedules", params={"next": 3}).json()["schedules"]}
        times = [datetime.fromisoformat(t) for t in listed[made["id"]]["next_times"]]
        assert len(times) == 3 and all(b - a == timedelta(hours=1) for a, b in zip(times, times[1:], strict=False))
        assert listed[made["id"]]["may_control"] is False
        path = f"/api/schedules/{made['id']}"
        assert carol.patch(path, json={"enabled": False}).status_code == 403
        assert carol.delete(path).status_code == 403
        off = bob.patch(path, json={"enabled": False}).json()
        assert (off["enabled"], off["next_times"], off["next_fire_at"]) == (False, [], None)
        on = bob.patch(path, json={"enabled": True}).json()
        assert on["enabled"] and len(on["next_times"]) == 5
        assert bob.patch(path, json={"enabled": "maybe"}).status_code == 422
        assert bob.delete(path).status_code == 204
        assert vic.get(path).status_code == 404
    assert api.get("/api/schedules/" + "x" * 5000).status_code == 404


def test_the_readme_example_request_makes_a_nightly_schedule(api):
    from tests.test_web_schedules_page import EXAMPLE_REQUEST, EXAMPLE_SOP

    assert api.post("/api/sops", content=EXAMPLE_SOP).status_code in (200, 201)
    made = new_schedule(api, **EXAMPLE_REQUEST)
    try:
        berlin = ZoneInfo(EXAMPLE_REQUEST["timezone"])
        walls = {datetime.fromisoformat(t).astimezone(berlin).strftime("%H:%M") for t in made["next_times"]}
        assert walls <= {"02:30", "03:00"} and len(made["next_times"]) == 5  # 03:00 only on a spring-forward day
    finally:
        assert api.delete(f"/api/schedules/{made['id']}").status_code == 204
