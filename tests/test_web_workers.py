"""The queue of the server: priority order, the concurrency limit, and queued runs surviving a restart."""

from __future__ import annotations

from datetime import datetime

import pytest

from sop_engine.store import Store
from sop_engine.vault import Vault
from tests.conftest import ServerProcess, post_sop, start_run, wait_run

NAP = """
sop: 1
id: SOP_ID
inputs:
  ms: {type: integer, default: 300}
  pin: {type: string, secret: true, default: "0000"}
outputs: [pin_length]
steps:
  - {id: first, action: sleep, duration: "{{ ms }}ms", inputs: [ms]}
  - {id: second, action: set, inputs: [pin], values: {pin_length: "{{ pin | length }}"}}
"""


@pytest.fixture
def own_server(tmp_path):
    servers: list[ServerProcess] = []

    def start(concurrency: int, data=None) -> ServerProcess:
        process = ServerProcess(data or tmp_path / "data", concurrency).start()
        servers.append(process)
        return process

    yield start
    for process in servers:
        process.stop(kill=True)


def when(run: dict, field: str) -> datetime:
    return datetime.fromisoformat(run[field])


def test_higher_priority_runs_first(own_server):
    server = own_server(1)
    with server.client() as api:
        sop_id = post_sop(api, NAP.replace('duration: "{{ ms }}ms"', "duration: 50ms"))
        blocker = start_run(api, sop_id, breakpoints=["first"])  # holds the only worker while paused
        wait_run(api, blocker, "paused")
        low = start_run(api, sop_id, priority="low")
        normal = start_run(api, sop_id, priority="normal")
        high = start_run(api, sop_id, priority="high")
        normal_too = start_run(api, sop_id, priority="normal")
        assert api.get(f"/api/runs/{low}").json()["status"] == "queued"
        api.post(f"/api/runs/{blocker}/resume")
        runs = {rid: wait_run(api, rid, "completed") for rid in (low, normal, high, normal_too)}
        order = sorted(runs, key=lambda rid: when(runs[rid], "started_at"))
        assert order == [high, normal, normal_too, low]


def test_no_more_runs_at_once_than_the_concurrency(own_server):
    server = own_server(2)
    with server.client() as api:
        sop_id = post_sop(api, NAP)
        ids = [start_run(api, sop_id, {"ms": 400}) for _ in range(5)]
        runs = [wait_run(api, rid, "completed") for rid in ids]
    edges = sorted([(when(r, "started_at"), 1) for r in runs] + [(when(r, "finished_at"), -1) for r in runs])
    running, most = 0, 0
    for _, change in edges:
        running += change
        most = max(most, running)
    assert most == 2


@pytest.mark.parametrize("kill", [False, True], ids=["stopped", "killed"])
def test_queued_and_interrupted_runs_survive_a_restart(own_server, tmp_path, kill):
    server = own_server(1)
    with server.client() as api:
        sop_id = post_sop(api, NAP)
        ids = [start_run(api, sop_id, {"ms": 1500, "pin": "4-2-4-2-4"}) for _ in range(3)]
        wait_run(api, ids[0], "running")
    server.stop(kill=kill)
    restarted = own_server(1, data=server.data)
    with restarted.client() as api:
        statuses = {api.get(f"/api/runs/{rid}").json()["status"] for rid in ids}
        assert statuses <= {"queued", "running", "completed"}
        runs = [wait_run(api, rid, "completed", timeout=40) for rid in ids]
    first = runs[0]
    assert [s["status"] for s in first["steps"]] == ["completed", "completed"]
    # the secret input came back from its encrypted copy after the restart, and never shows in clear
    # (pin_length read the secret: it is secret whole, and its real value is sealed)
    assert all(r["outputs"] == {"pin_length": "***"} and r["inputs"]["pin"] == "***" for r in runs)
    vault, store = (
        Vault((server.data / "secret.key").read_bytes().strip()),
        Store(f"sqlite:///{server.data / 'sop.db'}"),
    )
    try:
        assert {vault.open(store.steps(rid)[-1].sealed_outputs)["pin_length"] for rid in ids} == {len("4-2-4-2-4")}
    finally:
        store.close()
    for path in server.data.glob("sop.db*"):
        assert b"4-2-4-2-4" not in path.read_bytes()
    events = [e["seq"] for e in first_events(restarted, ids[0])]
    assert events == list(range(1, len(events) + 1))


def first_events(server: ServerProcess, run_id: str) -> list[dict]:
    with server.client() as api:
        return api.get(f"/api/runs/{run_id}/events").json()["events"]
