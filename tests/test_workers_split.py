"""Servers that only serve and `worker` processes that only execute, on one PostgreSQL database: runs reach
the workers as Procrastinate jobs, a worker drains on SIGTERM, a process without the shared key refuses."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import psycopg

from tests.conftest import (
    ROOT,
    SECRET_KEY,
    Gate,
    ServerProcess,
    WorkerProcess,
    both_databases,
    post_sop,
    start_run,
    wait_for,
    wait_run,
)
from web.jobs import conninfo

STEPS = """
sop: 1
id: SOP_ID
inputs: {n: {type: integer}}
outputs: [total]
steps:
  - {id: a, action: set, values: {x: "{{ n }}"}, inputs: [n], outputs: [x]}
  - {id: b, action: sleep, duration: 50ms}
  - {id: c, action: set, values: {total: "{{ x | int * 2 }}"}, inputs: [x], outputs: [total]}
"""

HELD = """
sop: 1
id: SOP_ID
inputs: {url: {}}
steps:
  - {id: before, action: log, message: ready}
  - {id: held, action: http, url: "{{ url }}", inputs: [url], timeout: 60s}
  - {id: after, action: log, message: done}
"""


def test_a_server_that_only_serves_and_workers_that_execute(tmp_path, postgres):
    url = postgres.new_database("split")
    server = ServerProcess(tmp_path / "server", concurrency=0, database_url=url).start()
    workers = [WorkerProcess(tmp_path / f"w{i}", url, concurrency=2).start() for i in range(2)]
    try:
        assert server.health["database"] == "postgresql"
        assert server.health["queue"] == "procrastinate" and server.health["executes"] == 0
        with server.client() as api:
            sop_id = post_sop(api, STEPS)
            runs = [start_run(api, sop_id, {"n": n}) for n in range(8)]
            done = [wait_run(api, run_id, "completed", timeout=60) for run_id in runs]
        assert [run["outputs"] for run in done] == [{"total": 2 * n} for n in range(8)]
        holders = {e["data"]["worker"] for e in _claims(server, runs)}
        assert len(_claims(server, runs)) == len(runs)  # each claimed once
        assert {int(name.split(":")[1]) for name in holders} <= {w.pid for w in workers}  # the server ran none
        with psycopg.connect(conninfo(url)) as conn:
            waiting = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'").fetchone()
        assert waiting == (0,)
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def _claims(server: ServerProcess, runs: list[str]) -> list[dict]:
    with server.client() as api:
        events = [e for run_id in runs for e in api.get(f"/api/runs/{run_id}/events").json()["events"]]
    return [e for e in events if e["type"] == "run.updated" and "worker" in e["data"]]


def test_a_worker_told_to_stop_finishes_its_run_first(tmp_path, postgres, gate: Gate):
    url = postgres.new_database("drain")
    server = ServerProcess(tmp_path / "server", concurrency=0, database_url=url).start()
    worker = WorkerProcess(tmp_path / "w", url, concurrency=1, env={"SOP_DRAIN_SECONDS": "120"}).start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, HELD), {"url": gate.url})
            assert gate.called.wait(60)
            worker.proc.terminate()  # SIGTERM while the step is in flight: the worker lets it finish
            wait_for(lambda: "draining" in worker.log.read_text(), timeout=30)
            gate.open.set()
            assert worker.proc.wait(timeout=60) == 0
            run = wait_run(api, run_id, "completed", timeout=10)
        assert [s["status"] for s in run["steps"]] == ["completed"] * 3
        assert gate.calls == 1
    finally:
        worker.stop(kill=True)
        server.stop()


def test_a_worker_that_must_stop_at_once_hands_its_run_to_another(tmp_path, postgres, gate: Gate):
    url = postgres.new_database("handback")
    server = ServerProcess(tmp_path / "server", concurrency=0, database_url=url).start()
    first = WorkerProcess(tmp_path / "w1", url, concurrency=1).start()  # SOP_DRAIN_SECONDS=0
    second = None
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, HELD), {"url": gate.url})
            assert gate.called.wait(60)
            assert first.stop() == 0  # handed back at once: the step in flight will run again (at least once)
            run = api.get(f"/api/runs/{run_id}").json()
            assert run["status"] == "queued"
            second = WorkerProcess(tmp_path / "w2", url, concurrency=1).start()
            run = wait_run(api, run_id, "completed", timeout=60)
        assert next(s for s in run["steps"] if s["key"] == "before")["attempts"] == 1  # not repeated
    finally:
        if second is not None:
            second.stop()
        server.stop()


def test_processes_on_postgresql_refuse_to_start_without_the_shared_key(tmp_path, postgres):
    url = postgres.new_database("nokey")
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "SOP_DATABASE_URL": url}
    env.pop("SOP_SECRET_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "web", "worker", "--base-url", "ftp://x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "--base-url" in done.stderr
    for command in (["worker"], ["serve", "--port", "1"], ["db", "upgrade"]):
        done = subprocess.run(
            [sys.executable, "-m", "web", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "SOP_SECRET_KEY is not set" in done.stderr
    env["SOP_SECRET_KEY"] = SECRET_KEY
    done = subprocess.run(
        [sys.executable, "-m", "web", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "postgresql database at revision" in done.stdout


@both_databases
def test_healthz_needs_no_token_and_says_what_the_server_is(server):
    health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["version"] and health["executes"] == server.concurrency
    assert health["queue"] == {"sqlite": "local", "postgresql": "procrastinate"}[health["database"]]
