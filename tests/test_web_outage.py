"""The database becomes unwritable under a running server (another process holds its write lock): writes
answer 503 with Retry-After, the login page and reads keep answering, no worker dies, and everything goes on
by itself once the database is back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from tests.conftest import ServerProcess, post_sop, start_run, wait_for, wait_run
from tests.test_web_resources import while_answering

SLOW = """
sop: 1
id: SOP_ID
steps:
  - {id: wait, action: sleep, duration: 1500ms}
  - {id: after, action: log, message: done}
"""
QUICK = "sop: 1\nid: SOP_ID\nsteps:\n  - {id: a, action: log, message: hi}\n"


@pytest.fixture
def outage_server(tmp_path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", concurrency=1, env={"SOP_WRITE_RETRY_SECONDS": "2"}).start()
    yield process
    process.stop()


def test_workers_outlive_a_locked_database_and_writes_answer_503(outage_server):
    server = outage_server
    with server.client() as api:
        slow, quick = post_sop(api, SLOW), post_sop(api, QUICK)
        first = start_run(api, slow)
        wait_run(api, first, "running")
        second = start_run(api, quick)  # queued behind the first: the pool has one worker
        lock = sqlite3.connect(server.data / "sop.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            refused = while_answering(server, lambda: api.post("/api/sops", content=QUICK.replace("SOP_ID", "later")))
            assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
            assert api.get(f"/api/runs/{first}").status_code == 200  # reads go on
            # the first run's writes fail for longer than the runner waits: its worker lets go and keeps claiming
            wait_for(lambda: "database is unavailable" in server.log.read_text(), timeout=90, interval=0.2)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert wait_run(api, second, "completed", timeout=60)["status"] == "completed"
        assert api.post("/api/sops", content=QUICK.replace("SOP_ID", "later")).status_code == 201
        run = api.get(f"/api/runs/{first}").json()
        assert run["status"] in ("running", "queued", "completed")  # never lost: recovery takes it back
        seqs = [e["seq"] for e in api.get(f"/api/runs/{first}/events").json()["events"]]
        assert seqs == list(range(1, len(seqs) + 1))
