"""Runs delivered as Procrastinate jobs on PostgreSQL: one waiting job per run, in priority order; a job is
only delivery (a job whose run cannot be claimed is dropped); the reconciler delivers a queued run that lost
its job and cancels the jobs of runs that ended."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from procrastinate import App, PsycopgConnector

from tests.conftest import ServerProcess, WorkerProcess, post_sop, start_run, wait_for, wait_run
from web.jobs import PRIORITY, TASK, conninfo

QUICK = """
sop: 1
id: SOP_ID
steps:
  - {id: a, action: set, values: {x: 1}}
  - {id: b, action: log, message: done}
"""


@pytest.fixture
def quiet_server(tmp_path, postgres):
    """A server that executes nothing, on a database of the test's own: runs wait with their jobs."""
    url = postgres.new_database("jobs")
    server = ServerProcess(tmp_path / "server", concurrency=0, database_url=url).start()
    yield server, url
    server.stop()


def jobs(url: str) -> list[tuple]:
    with psycopg.connect(conninfo(url)) as conn:
        return conn.execute("SELECT queueing_lock, status, priority FROM procrastinate_jobs ORDER BY id").fetchall()


def test_one_waiting_job_per_run_with_the_runs_priority(quiet_server):
    server, url = quiet_server
    with server.client() as api:
        sop_id = post_sop(api, QUICK)
        runs = {p: start_run(api, sop_id, priority=p) for p in ("low", "normal", "high")}
        rows = [{} for _ in range(5)]
        assert api.post("/api/batches", json={"sop_id": sop_id, "rows": rows, "concurrency": 2}).status_code == 201
        start_run(api, sop_id)  # queues one more: another round of the reconciler, which adds no second job
    waiting = wait_for(lambda: [j for j in jobs(url) if j[1] == "todo"] if len(jobs(url)) >= 6 else None)
    locks = [j[0] for j in waiting]
    assert len(locks) == len(set(locks))  # one job per run
    by_run = {j[0]: j[2] for j in waiting}
    assert by_run.get(runs["high"]) == PRIORITY[0] and by_run.get(runs["normal"]) == PRIORITY[1]
    assert len(locks) == 6
    batch_jobs = [lock for lock in locks if lock not in runs.values()]
    assert len(batch_jobs) == 3  # the extra run, and a batch's runs only as far as its concurrency


def test_a_queued_run_that_lost_its_job_is_delivered_and_runs(tmp_path, quiet_server):
    server, url = quiet_server
    with server.client() as api:
        run_id = start_run(api, post_sop(api, QUICK))
        wait_for(lambda: any(j[0] == run_id for j in jobs(url)))
        with psycopg.connect(conninfo(url)) as conn:  # as if the process died between the two writes
            conn.execute("DELETE FROM procrastinate_jobs")
        worker = WorkerProcess(tmp_path / "w", url, concurrency=1).start()
        try:
            run = wait_run(api, run_id, "completed", timeout=60)
        finally:
            worker.stop()
    assert [s["status"] for s in run["steps"]] == ["completed", "completed"]


def test_a_job_whose_run_cannot_be_claimed_is_dropped(tmp_path, quiet_server):
    server, url = quiet_server
    worker = WorkerProcess(tmp_path / "w", url, concurrency=1).start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, QUICK))
            seq = wait_run(api, run_id, "completed", timeout=60)["seq"]
            asyncio.run(_defer(url, run_id))  # a stray job for a run that ended
            wait_for(lambda: not [j for j in jobs(url) if j[0] == run_id and j[1] in ("todo", "doing")], timeout=60)
            run = api.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "completed" and run["seq"] == seq  # nothing written: the job only delivered
    finally:
        worker.stop()


async def _defer(url: str, run_id: str) -> None:
    app = App(connector=PsycopgConnector(conninfo=conninfo(url)))
    async with app.open_async():
        await app.configure_task(TASK, queue="runs").defer_async(run_id=run_id)


def test_the_job_of_a_run_cancelled_while_queued_is_cancelled(tmp_path, quiet_server):
    server, url = quiet_server
    with server.client() as api:
        run_id = start_run(api, post_sop(api, QUICK))
        wait_for(lambda: (run_id, "todo") in [(j[0], j[1]) for j in jobs(url)])
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
        wait_for(lambda: (run_id, "cancelled") in [(j[0], j[1]) for j in jobs(url)], timeout=30)
        worker = WorkerProcess(tmp_path / "w", url, concurrency=1).start()
        try:
            assert api.get(f"/api/runs/{run_id}").json()["status"] == "cancelled"
        finally:
            worker.stop()
