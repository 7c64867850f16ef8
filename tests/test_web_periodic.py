"""On PostgreSQL, Procrastinate's periodic task drives the schedules' tick, in real `serve --concurrency 0`
processes: every firing is counted under `by="procrastinate"` in the servers' metrics (none by the loop),
Procrastinate's periodic deferrer recorded the task's seconds, each tick of a window fires exactly once (its
`fire_at`), with two servers and across a restart; SOP_SCHEDULE_TICK_SECONDS=0 starts no schedules worker;
a stopped server leaves no Procrastinate worker registered and nothing in its log; one that stopped in an
outage is started again. On SQLite the loop still ticks."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import SECRET_KEY, ServerProcess, post_sop, wait_for
from tests.test_web_schedules import (
    BEAT,
    EVERY_SECOND,
    GRACE,
    assert_every_second_once,
    firings,
    new_schedule,
    recorded,
)
from web.jobs import conninfo
from web.scheduling import APPLICATION, QUEUE, TASK

SAMPLE = re.compile(r'^sop_schedule_firings_total\{by="(\w+)"\} ([0-9.e+]+)$', re.M)


@pytest.fixture
def url(postgres, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SOP_SECRET_KEY", SECRET_KEY)  # the test's own Store opens the servers' database
    return postgres.new_database("periodic")


def counted(server: ServerProcess) -> dict[str, int]:
    """The server's firings by what drove their tick, from its /metrics."""
    with server.client() as client:
        reply = client.get("/metrics")
    assert reply.status_code == 200, reply.text
    return {by: int(float(n)) for by, n in SAMPLE.findall(reply.text)}


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(conninfo(url)) as conn:
        return conn.execute(sql).fetchall()


def periodic_defers(url: str) -> list[tuple]:
    return query(url, "SELECT task_name, periodic_id, defer_timestamp FROM procrastinate_periodic_defers")


def workers(url: str) -> int:
    return query(url, "SELECT count(*) FROM procrastinate_workers")[0][0]


def assert_quiet_stop(server: ServerProcess) -> None:
    """SIGTERM ended it cleanly (uvicorn ends by raising the signal again): no traceback, no warning, no task
    left pending."""
    assert server.proc.returncode in (0, -15)
    text = server.log.read_text()
    for bad in ("Traceback", "Warning", "Task was destroyed", "never awaited", "ERROR"):
        assert bad not in text, text[-3000:]


def test_two_servers_fire_each_tick_once_by_the_periodic_job(tmp_path: Path, url: str):
    data = tmp_path / "data"
    env = {"SOP_SCHEDULE_GRACE_SECONDS": GRACE}
    servers = [ServerProcess(data, concurrency=0, env=env, database_url=url) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        with servers[0].client() as client:
            sop_id = post_sop(client, BEAT, "periodic")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND)
            wait_for(lambda: len(firings(client, schedule["id"])) >= 6, timeout=60)
            assert workers(url) == 2  # a schedules worker in each `--concurrency 0` server, and nothing else
            reply = client.patch(f"/api/schedules/{schedule['id']}", json={"enabled": False})
            assert reply.status_code == 200, reply.text
        times = recorded(data, url, schedule["id"])
        # every firing was counted by the server that recorded it, and all came from the periodic job
        wait_for(
            lambda: sum(counted(s).get("procrastinate", 0) for s in servers) == len(recorded(data, url, schedule["id"]))
        )
        assert all("loop" not in counted(s) for s in servers)
        defers = periodic_defers(url)
        assert [(task, periodic) for task, periodic, _ in defers] == [(TASK, QUEUE)]
        assert defers[0][2] >= int(times[-1].timestamp())  # it deferred the second of the latest firing, or later
    finally:
        for server in servers:
            server.stop()
    assert_every_second_once(recorded(data, url, schedule["id"]))
    for server in servers:
        assert_quiet_stop(server)
    assert workers(url) == 0  # each schedules worker unregistered on SIGTERM
    assert (
        query(url, f"SELECT count(*) FROM procrastinate_jobs WHERE queue_name = '{QUEUE}' AND status = 'doing'")[0][0]
        == 0
    )


def test_the_periodic_job_fires_each_tick_once_across_a_restart(tmp_path: Path, url: str):
    data = tmp_path / "data"
    server = ServerProcess(data, concurrency=0, env={"SOP_SCHEDULE_GRACE_SECONDS": GRACE}, database_url=url).start()
    try:
        with server.client() as client:
            sop_id = post_sop(client, BEAT, "restart")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND)
            wait_for(lambda: len(firings(client, schedule["id"])) >= 3, timeout=60)
        assert counted(server).get("procrastinate", 0) >= 1
        server.stop()
        assert_quiet_stop(server)
        assert workers(url) == 0
        before = recorded(data, url, schedule["id"])
        server.start()
        with server.client() as client:
            wait_for(lambda: len(firings(client, schedule["id"])) >= len(before) + 3, timeout=60)
        # the ticks that fell while it was down and the new ones: all by the periodic job
        after = counted(server)
        assert after.get("procrastinate", 0) >= 3 and "loop" not in after
    finally:
        server.stop()
    times = recorded(data, url, schedule["id"])
    assert times[: len(before)] == before
    assert_every_second_once(times)


def test_a_server_with_tick_seconds_zero_runs_no_schedules_worker(tmp_path: Path, url: str):
    data = tmp_path / "data"
    never = ServerProcess(data, concurrency=0, env={"SOP_SCHEDULE_TICK_SECONDS": "0"}, database_url=url)
    ticking = ServerProcess(data, concurrency=0, database_url=url)
    try:
        never.start()
        assert workers(url) == 0 and periodic_defers(url) == []
        ticking.start()
        with never.client() as client:
            sop_id = post_sop(client, BEAT, "zero")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND)
            wait_for(lambda: len(firings(client, schedule["id"])) >= 3, timeout=60)
        assert workers(url) == 1  # the ticking server's schedules worker only
        assert counted(never) == {}
        assert counted(ticking).get("procrastinate", 0) >= 3
    finally:
        never.stop()
        ticking.stop()


def allow_connections(url: str, allowed: bool) -> None:
    name = make_url(url).database
    with psycopg.connect(conninfo(url.rsplit("/", 1)[0] + "/postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')


def test_a_schedules_worker_that_stopped_is_started_again(tmp_path: Path, url: str):
    data = tmp_path / "data"
    server = ServerProcess(data, concurrency=0, env={"SOP_SCHEDULE_GRACE_SECONDS": GRACE}, database_url=url).start()
    try:
        with server.client() as client:
            sop_id = post_sop(client, BEAT, "cut")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND)
            wait_for(lambda: len(firings(client, schedule["id"])) >= 2, timeout=60)
            # its connections cut and no new one allowed: Procrastinate's worker stops (its listener cannot
            # reconnect); the server's store keeps the connections it has
            with psycopg.connect(conninfo(url), autocommit=True) as conn:
                allow_connections(url, False)
                cut = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE application_name = '{APPLICATION}' AND datname = current_database()"
                ).fetchall()
            assert cut
            try:
                wait_for(lambda: "the schedules worker stopped" in server.log.read_text(), timeout=60)
            finally:
                allow_connections(url, True)
            count = len(firings(client, schedule["id"]))
            wait_for(lambda: len(firings(client, schedule["id"])) >= count + 3, timeout=60)
        assert "loop" not in counted(server)
    finally:
        server.stop()
    assert_every_second_once(recorded(data, url, schedule["id"]))


def test_on_sqlite_the_servers_loop_still_drives_the_tick(tmp_path: Path):
    server = ServerProcess(tmp_path / "data", concurrency=0).start()
    try:
        with server.client() as client:
            sop_id = post_sop(client, BEAT, "sqlite")
            schedule = new_schedule(client, sop_id, **EVERY_SECOND)
            wait_for(lambda: len(firings(client, schedule["id"])) >= 3, timeout=60)
        found = counted(server)
        assert found.get("loop", 0) >= 3 and "procrastinate" not in found
    finally:
        server.stop()
    assert_quiet_stop(server)
