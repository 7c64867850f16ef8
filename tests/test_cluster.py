"""A whole cluster on loopback: PostgreSQL, Redis, two servers that only serve, three worker processes. Thirty
runs and a 40-row batch, one worker SIGKILLed mid-run twice: every run completes with the outputs it has
alone, no completed step reaches the site twice, every run's events are gap-free, and a page's Socket.IO
client on server A sees every event of a run that a person pauses and resumes through server B."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
import socketio

from tests.conftest import TOKEN, Gate, ServerProcess, WorkerProcess, post_sop, start_run, wait_for, wait_run
from tests.loopback import LoopbackServer, Reply, Request, html_reply, json_reply
from tests.services import Redis

SOP = """
sop: 1
id: SOP_ID
inputs: {base: {}, tag: {}}
outputs: [echo, code]
defaults: {timeout: 20s}
steps:
  - {id: one, action: http, method: POST, url: "{{ base }}/hit?tag={{ tag }}&step=one", inputs: [base, tag]}
  - {id: rest, action: sleep, duration: 300ms}
  - id: two
    action: http
    method: POST
    url: "{{ base }}/hit?tag={{ tag }}&step=two"
    inputs: [base, tag]
    outputs: {code: "{{ result.json.code }}"}
  - {id: open, action: navigate, url: "{{ base }}/page?tag={{ tag }}", inputs: [base, tag]}
  - {id: read, action: extract, selector: "#tag", outputs: {echo: text}}
  - {id: three, action: http, method: POST, url: "{{ base }}/hit?tag={{ tag }}&step=three", inputs: [base, tag]}
"""
STEPS_THAT_HIT = ("one", "two", "three")


class CountingSite:
    """Counts each (tag, step) that reaches it; answers a code made from the tag."""

    def __init__(self) -> None:
        self.hits: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.server = LoopbackServer(self.answer)
        self.url = self.server.url

    def answer(self, request: Request) -> Reply:
        parts = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/hit":
            with self.lock:
                self.hits[(query["tag"], query["step"])] += 1
            return json_reply({"code": f"code-{query['tag']}"})
        return html_reply(f"<!doctype html><p id=tag>{query.get('tag', '')}</p>")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres):
    tmp_path = tmp_path_factory.mktemp("cluster")
    url = postgres.new_database("cluster")
    redis = Redis(tmp_path / "redis").start()
    env = {"SOP_REDIS_URL": redis.url}
    servers = [ServerProcess(tmp_path / f"s{i}", concurrency=0, database_url=url, env=env).start() for i in range(2)]
    workers = [WorkerProcess(tmp_path / f"w{i}", url, concurrency=2, env=env).start() for i in range(3)]
    made = {"servers": servers, "workers": workers, "url": url, "env": env, "folder": tmp_path}
    yield made
    for worker in made["workers"]:
        worker.stop(kill=True)
    for server in servers:
        server.stop()
    redis.stop()


def held_by(api, sop_id: str, pid: int) -> set[str]:
    """Tags of the runs that the worker process `pid` is executing now (from their claim events)."""
    found = set()
    for run in api.get("/api/runs", params={"status": "running", "sop_id": sop_id, "limit": 500}).json()["runs"]:
        claims = [e for e in api.get(f"/api/runs/{run['id']}/events").json()["events"] if "worker" in e["data"]]
        if claims and int(claims[-1]["data"]["worker"].split(":")[1]) == pid:
            found.add(run["inputs"]["tag"])
    return found


def test_a_cluster_survives_killed_workers_and_shows_one_live_feed(cluster):
    site = CountingSite()
    a, b = cluster["servers"]
    with site.server, a.client() as api:
        sop_id = post_sop(api, SOP)
        runs = {f"r{n}": start_run(api, sop_id, {"base": site.url, "tag": f"r{n}"}) for n in range(30)}
        rows = [{"base": site.url, "tag": f"b{n}"} for n in range(40)]
        batch = api.post("/api/batches", json={"sop_id": sop_id, "rows": rows, "concurrency": 6})
        assert batch.status_code == 201, batch.text
        kills = 0
        in_flight: set[str] = set()
        for _ in range(2):  # the same worker slot, killed twice mid-run
            victim = cluster["workers"][0]
            held = wait_for(lambda v=victim: held_by(api, sop_id, v.pid), timeout=120)
            victim.stop(kill=True)
            kills += 1
            in_flight |= set(held)
            cluster["workers"][0] = WorkerProcess(
                cluster["folder"] / f"w0-{kills}", cluster["url"], concurrency=2, env=cluster["env"]
            ).start()
        done = {tag: wait_run(api, run_id, "completed", timeout=240) for tag, run_id in runs.items()}
        batch_id = batch.json()["id"]
        summary = wait_for(lambda: _ended(api.get(f"/api/batches/{batch_id}").json()), timeout=240)
        for tag, run in done.items():
            assert run["outputs"] == {"echo": tag, "code": f"code-{tag}"}
            seqs = [e["seq"] for e in api.get(f"/api/runs/{runs[tag]}/events").json()["events"]]
            assert seqs == list(range(1, len(seqs) + 1))
        assert summary["counts"].get("completed") == 40, summary
    # every step reached the site once; only a step in flight at a kill may have reached it twice
    expected = {(tag, step) for tag in [*runs, *(f"b{n}" for n in range(40))] for step in STEPS_THAT_HIT}
    assert set(site.hits) == expected
    twice = {key: count for key, count in site.hits.items() if count > 1}
    assert all(count == 2 for count in twice.values()), twice
    assert {tag for tag, _ in twice} <= in_flight, (twice, in_flight)
    assert len(twice) <= kills * 2  # at most one step per run in flight (two runs at once per worker)


def _ended(batch: dict) -> dict | None:
    return batch if batch["status"] != "running" else None


HELD = """
sop: 1
id: SOP_ID
inputs: {url: {}}
steps:
  - {id: held, action: http, url: "{{ url }}", inputs: [url], timeout: 60s}
  - {id: after, action: log, message: "went on"}
  - {id: last, action: sleep, duration: 50ms}
"""


async def test_a_page_on_one_server_sees_a_run_paused_and_resumed_through_the_other(cluster, gate: Gate):
    a, b = cluster["servers"]
    client = socketio.AsyncClient(reconnection=False)
    seen: list[dict] = []
    arrived = asyncio.Event()  # set at each event the client gets

    def keep(data: dict) -> None:
        seen.append(data)
        arrived.set()

    for name in ("run.updated", "step.updated", "log"):
        client.on(name, keep)
    await client.connect(a.url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=10)
    try:
        with a.client() as api_a, b.client() as api_b:
            run_id = await asyncio.to_thread(
                start_run, api_a, await asyncio.to_thread(post_sop, api_a, HELD), {"url": gate.url}
            )
            assert (await client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=10))["ok"]
            assert await asyncio.to_thread(gate.called.wait, 60)
            assert (await asyncio.to_thread(api_b.post, f"/api/runs/{run_id}/pause")).status_code == 200
            gate.open.set()
            await asyncio.to_thread(wait_run, api_b, run_id, "paused", 60)
            assert (await asyncio.to_thread(api_b.post, f"/api/runs/{run_id}/resume")).status_code == 200
            run = await asyncio.to_thread(wait_run, api_a, run_id, "completed", 60)
            last = run["seq"]
            async with asyncio.timeout(30):  # until the run's last event has reached the client
                while not any(e.get("seq") == last for e in seen if e.get("run_id") == run_id):
                    arrived.clear()
                    await arrived.wait()
    finally:
        await client.disconnect()
    seqs = sorted({e["seq"] for e in seen if e.get("run_id") == run_id})
    assert seqs == list(range(1, last + 1))  # every event, none missing, whichever process wrote it
    statuses = [e["data"].get("status") for e in seen if e.get("run_id") == run_id and e["type"] == "run.updated"]
    assert "paused" in statuses and statuses[-1] == "completed"
    controls = [e["data"]["control"] for e in seen if e.get("run_id") == run_id and e["type"] == "control"]
    assert controls == ["pause", "resume"]
