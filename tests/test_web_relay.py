"""The live feed and the controls across processes, through a real Redis: server A serves the API and the feed
and executes nothing (`--concurrency 0`), server B executes runs; both share one SQLite database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import socketio
from cryptography.fernet import Fernet
from redis.asyncio import Redis as AsyncRedis

from sop_engine.document import load_sop
from sop_engine.runner import Runner
from sop_engine.store import Store
from sop_engine.vault import Vault
from tests.conftest import SECRET_KEY, TOKEN, ServerProcess, free_port, post_sop, start_run, wait_run
from tests.services import Redis
from web import broker
from web.audience import ALL_RUNS, RedisAudience, Seen, run_room
from web.feed import feed_for_worker
from web.relay import ACK, control_channel, relay_for_worker, reply_channel
from web.workers import WorkerPool

HELD = """
sop: 1
id: SOP_ID
outputs: [last]
steps:
  - {id: one, action: http, url: "GATE"}
  - {id: two, action: sleep, duration: 100ms}
  - {id: three, action: sleep, duration: 100ms}
  - {id: four, action: set, values: {last: done}}
"""

QUICK = """
sop: 1
id: SOP_ID
steps:
  - {id: one, action: sleep, duration: 50ms}
  - {id: two, action: log, message: "hello"}
  - {id: three, action: set, values: {said: yes}}
"""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_server: Redis) -> Iterator[SimpleNamespace]:
    folder = tmp_path_factory.mktemp("cluster")
    env = {
        "SOP_DATABASE_URL": f"sqlite:///{folder / 'shared.db'}",
        "SOP_SECRET_KEY": SECRET_KEY,
        "SOP_REDIS_URL": redis_server.url,
    }
    a = ServerProcess(folder / "a", concurrency=0, env=env).start()  # one at a time: each migrates the database
    b = ServerProcess(folder / "b", concurrency=1, env=env).start()
    with a.client() as api_a, b.client() as api_b:
        yield SimpleNamespace(a=a, b=b, api=api_a, api_b=api_b, database=env["SOP_DATABASE_URL"])
    a.stop()
    b.stop()


class Watcher:
    """A Socket.IO client of one server that keeps what it gets and wakes whoever waits for it."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Condition()
        for name in ("run.updated", "step.updated", "log", "progress", "frame"):
            self.client.on(name, self._keeper(name))

    def _keeper(self, name: str) -> Callable[[dict[str, Any]], Any]:
        async def keep(data: dict[str, Any]) -> None:
            async with self.arrived:
                self.events.append((name, data))
                self.arrived.notify_all()

        return keep

    async def connect(self, server: ServerProcess) -> Watcher:
        await self.client.connect(server.url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=10)
        return self

    async def until(self, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(predicate)
        return predicate()

    def seqs(self, run_id: str) -> list[int]:
        return sorted(d["seq"] for n, d in self.events if n not in ("progress", "frame") and d["run_id"] == run_id)

    def statuses(self, run_id: str) -> list[str]:
        return [
            d["data"]["status"]
            for n, d in self.events
            if n == "run.updated" and d["run_id"] == run_id and "status" in d["data"]
        ]


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking HTTP call from an async test: the client's events go on meanwhile."""
    return await asyncio.to_thread(function, *args, **kwargs)


def held_by(api: httpx.Client, run_id: str) -> str:
    """The worker that claimed the run, from its events."""
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    return next(e["data"]["worker"] for e in events if e["type"] == "run.updated" and "worker" in e["data"])


def audit_of(api: httpx.Client, run_id: str) -> list[tuple[str, str, str | None]]:
    return [(a["who"], a["action"], a["target"]) for a in api.get(f"/api/runs/{run_id}/audit").json()["audit"]]


@pytest.fixture
async def watcher(cluster: SimpleNamespace) -> Any:
    made = await Watcher().connect(cluster.a)
    yield made
    await made.client.disconnect()


# the feed ---------------------------------------------------------------------------------------


async def test_a_client_of_one_server_sees_every_event_of_a_run_another_executes(cluster, watcher):
    assert await watcher.client.call("subscribe", {"all": True}, timeout=5) == {"ok": True}
    run_id = await call(start_run, cluster.api, await call(post_sop, cluster.api, QUICK))

    await watcher.until(lambda: "completed" in watcher.statuses(run_id))
    last = (await call(cluster.api.get, f"/api/runs/{run_id}")).json()["seq"]
    assert watcher.seqs(run_id) == list(range(1, last + 1))  # every one, once, none missing
    ended = [d for n, d in watcher.events if n == "run.updated" and d["run_id"] == run_id][-1]
    assert ended["seq"] == last and ended["data"]["status"] == "completed"
    worker = await call(held_by, cluster.api, run_id)
    assert str(cluster.b.proc.pid) in worker.split(":")  # B executed it: A executes nothing
    progress = [d for n, d in watcher.events if n == "progress" and d["run_id"] == run_id]
    assert progress and progress[-1]["completed"] == progress[-1]["total"] == 3  # B knew A's client follows
    assert [d["data"]["message"] for n, d in watcher.events if n == "log" and d["run_id"] == run_id] == ["hello"]


async def test_frames_of_a_run_another_server_executes_reach_its_watcher(cluster, watcher, gate):
    text = HELD.replace("GATE", gate.url).replace(
        "{id: two, action: sleep, duration: 100ms}",
        f'{{id: two, action: navigate, url: "{cluster.b.url}/demo/todo.html"}}',
    )
    run_id = await call(start_run, cluster.api, await call(post_sop, cluster.api, text))
    assert await call(gate.called.wait, 60)
    reply = await watcher.client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=5)
    assert reply["ok"]  # A has named the run watched in Redis: B's next event learns it
    gate.open.set()
    await watcher.until(lambda: any(n == "frame" and d["run_id"] == run_id for n, d in watcher.events))
    frame = next(d for n, d in watcher.events if n == "frame")
    assert frame["key"] == "two" and frame["image"].startswith("data:image/jpeg;base64,")
    await call(wait_run, cluster.api, run_id, "completed")


# controls across processes ----------------------------------------------------------------------


async def test_a_run_paused_and_resumed_through_one_server_while_another_executes_it(cluster, watcher, gate):
    run_id = await call(start_run, cluster.api, await call(post_sop, cluster.api, HELD.replace("GATE", gate.url)))
    assert await call(gate.called.wait, 60)  # B executes step one until the gate opens
    assert (await watcher.client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=5))["ok"]

    paused = await call(cluster.api.post, f"/api/runs/{run_id}/pause")
    assert paused.status_code == 200, paused.text  # applied by B, which holds the run's RunControl
    gate.open.set()
    await watcher.until(lambda: "paused" in watcher.statuses(run_id))
    run = await call(wait_run, cluster.api, run_id, "paused")
    assert run["waiting"]["kind"] == "pause" and run["waiting"]["key"] == "two"
    again = await call(cluster.api.post, f"/api/runs/{run_id}/pause")
    assert (again.status_code, again.json()["error"]) == (409, "the run is paused; pause needs a running run")

    assert (await call(cluster.api.post, f"/api/runs/{run_id}/resume")).status_code == 200
    await watcher.until(lambda: "completed" in watcher.statuses(run_id))
    assert (await call(wait_run, cluster.api, run_id, "completed"))["outputs"] == {"last": "done"}
    assert await call(audit_of, cluster.api, run_id) == [("admin", "pause", None), ("admin", "resume", None)]
    seen = sorted(set(watcher.seqs(run_id)))  # the replay and the live events overlap: a client applies each once
    assert seen == list(range(1, seen[-1] + 1))


async def test_a_cancel_through_one_server_stops_the_step_another_executes(cluster, gate):
    run_id = await call(start_run, cluster.api, await call(post_sop, cluster.api, HELD.replace("GATE", gate.url)))
    assert await call(gate.called.wait, 60)
    assert (await call(cluster.api.post, f"/api/runs/{run_id}/cancel")).status_code == 200
    run = await call(wait_run, cluster.api, run_id, "cancelled")  # the gate is still closed: B interrupted it
    assert {s["key"]: s["status"] for s in run["steps"]}["one"] == "cancelled"
    assert await call(audit_of, cluster.api, run_id) == [("admin", "cancel", None)]


FORM = """
sop: 1
id: SOP_ID
outputs: [code]
steps:
  - id: ask
    action: input
    message: The code?
    fields:
      code: {type: string, secret: true}
"""


async def test_a_form_answered_through_one_server_reaches_the_run_another_executes(cluster, redis_server):
    spy = AsyncRedis.from_url(redis_server.url)
    heard = spy.pubsub()
    try:
        run_id = await call(start_run, cluster.api, await call(post_sop, cluster.api, FORM))
        await call(wait_run, cluster.api, run_id, "paused")
        holder = await call(held_by, cluster.api, run_id)
        await heard.subscribe(control_channel(holder))  # what goes through Redis
        assert (await heard.get_message(timeout=5))["type"] == "subscribe"
        bad = await call(cluster.api.post, f"/api/runs/{run_id}/steps/ask/submit", json={"values": {"code": 3}})
        assert (bad.status_code, bad.json()["error"]) == (422, "'code' must be string")  # B checked the form
        given = {"values": {"code": "s3cr3t-code"}}
        assert (await call(cluster.api.post, f"/api/runs/{run_id}/steps/ask/submit", json=given)).status_code == 200
        run = await call(wait_run, cluster.api, run_id, "completed")
        assert run["outputs"] == {"code": "***"}
        assert await call(audit_of, cluster.api, run_id) == [("admin", "submit", "ask")]
        sent = []
        while (message := await heard.get_message(timeout=1)) is not None:
            sent.append(message["data"])
        assert len(sent) == 2 and all(b"s3cr3t-code" not in m for m in sent)  # sealed
    finally:
        await heard.aclose()
        await spy.aclose()


async def held_run(cluster: SimpleNamespace, worker: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A run the database says `worker` executes (a process the test makes up)."""
    monkeypatch.setenv("SOP_DATABASE_URL", cluster.database)
    monkeypatch.setenv("SOP_SECRET_KEY", SECRET_KEY)
    store = Store()
    try:
        loaded = load_sop(QUICK.replace("SOP_ID", f"held-{worker.split(':')[0]}"))
        row = await Runner(store, None).create_run(loaded, {}, claimed_by=worker)  # type: ignore[arg-type]
    finally:
        store.close()
    return row.id


async def test_a_holder_nobody_hears_gets_a_503_but_a_cancel_goes_through_the_gate(cluster, monkeypatch):
    run_id = await held_run(cluster, "gone-host:4242:1", monkeypatch)
    reply = await call(cluster.api.post, f"/api/runs/{run_id}/pause")
    assert (reply.status_code, reply.json()["error"]) == (  # its heartbeat is fresh: it may be reconnecting
        503,
        "the run is executed by gone-host:4242:1, out of Redis's reach now: try again",
    )
    assert (await call(cluster.api.post, f"/api/runs/{run_id}/cancel")).status_code == 200  # through the gate
    assert (await call(cluster.api.get, f"/api/runs/{run_id}")).json()["status"] == "cancelled"


async def test_a_holder_that_does_not_answer_gets_a_503_in_bounded_time(cluster, redis_server, monkeypatch):
    mute = "mute-host:4343:1"
    run_id = await held_run(cluster, mute, monkeypatch)
    listener = AsyncRedis.from_url(redis_server.url)
    heard = listener.pubsub()
    try:
        await heard.subscribe(control_channel(mute))  # hears, never answers: a process whose loop is stuck
        assert (await heard.get_message(timeout=5))["type"] == "subscribe"
        started = time.monotonic()
        reply = await call(cluster.api.post, f"/api/runs/{run_id}/pause")
        assert reply.status_code == 503 and mute in reply.json()["error"]
        assert time.monotonic() - started < ACK + 10  # the holder's silence is noticed, never waited out
        sealed = (await heard.get_message(timeout=5))["data"]  # only the cluster's key opens it
        request = json.loads(Vault(SECRET_KEY.encode()).open_message(sealed, 60))
        assert (request["control"], request["run_id"], request["who"]) == ("pause", run_id, "admin")
    finally:
        await heard.aclose()
        await listener.aclose()
    assert await call(audit_of, cluster.api, run_id) == []  # nothing was applied
    assert (await call(cluster.api.post, f"/api/runs/{run_id}/cancel")).status_code == 200  # nobody listens now


async def test_malformed_messages_on_the_channels_are_ignored(cluster, redis_server, gate):
    run_id = await call(start_run, cluster.api, await call(post_sop, cluster.api, HELD.replace("GATE", gate.url)))
    assert await call(gate.called.wait, 60)
    holder = await call(held_by, cluster.api, run_id)
    sender = AsyncRedis.from_url(redis_server.url)
    try:
        replies = [c.decode() for c in await sender.pubsub_channels("sop:reply:*")]
        assert reply_channel(holder) in replies and len(replies) == 2  # A's and B's
        good = {"id": "0" * 32, "sender": "someone", "control": "pause", "run_id": run_id, "who": "eve"}
        ours, stranger = Vault(SECRET_KEY.encode()), Vault(Fernet.generate_key())
        sealed_junk = [
            "[1, 2]",
            json.dumps({**good, "control": "format-disk"}),
            json.dumps({**good, "extra": 1}),
            json.dumps({**good, "id": "../../etc"}),
            json.dumps({"id": "0" * 32, "state": "maybe"}),
        ]
        forged = [json.dumps(good).encode(), stranger.seal_message(json.dumps(good))]  # a request, without the key
        for channel in (control_channel(holder), *replies):
            for junk in (b"\xff not json", *forged, *map(ours.seal_message, sealed_junk), b"x" * 300_000):
                assert await sender.publish(channel, junk) >= 1
    finally:
        await sender.aclose()
    assert (await call(cluster.api.post, f"/api/runs/{run_id}/pause")).status_code == 200  # both still answer
    gate.open.set()
    await call(wait_run, cluster.api, run_id, "paused")
    assert (await call(cluster.api.post, f"/api/runs/{run_id}/resume")).status_code == 200
    await call(wait_run, cluster.api, run_id, "completed")
    assert await call(audit_of, cluster.api, run_id) == [("admin", "pause", None), ("admin", "resume", None)]
    assert "ignored a control request that does not fit" in cluster.b.log.read_text()
    assert "not sealed with this cluster's key" in cluster.b.log.read_text()
    assert "ignored an answer that does not fit" in cluster.a.log.read_text()


# a process that executes runs and serves no clients (the worker command) ----------------------------


@pytest.fixture
def in_cluster(cluster: SimpleNamespace, redis_server: Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """This test process as one more process of the cluster: its store on the shared database."""
    monkeypatch.setenv("SOP_DATABASE_URL", cluster.database)
    monkeypatch.setenv("SOP_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("SOP_REDIS_URL", redis_server.url)
    store = Store()
    yield store
    store.close()


async def test_a_worker_feed_reaches_the_clients_of_a_server(cluster, watcher, in_cluster, monkeypatch):
    run_id = await held_run(cluster, "worker-host:4545:1", monkeypatch)
    feed = feed_for_worker(in_cluster)
    assert feed is not None
    try:
        assert (await watcher.client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=5))["ok"]
        await watcher.until(lambda: watcher.seqs(run_id))  # the replay: the run's creation
        stored = in_cluster.record(run_id, "step.updated", {"key": "one", "status": "running"})
        await feed.emit(stored)
        await watcher.until(lambda: stored.seq in watcher.seqs(run_id))
        sent = next(d for n, d in watcher.events if n == "step.updated" and d["seq"] == stored.seq)
        assert sent == stored.as_dict()  # the payload a server's own feed sends
        assert feed.watching(run_id)  # A's client watches it: the worker takes pictures
        await feed.frame(run_id, "one", b"\xff\xd8 not really a jpeg")
        await watcher.until(lambda: any(n == "frame" for n, _ in watcher.events))
        frame = next(d for n, d in watcher.events if n == "frame")
        assert frame == {"run_id": run_id, "key": "one", "image": "data:image/jpeg;base64,/9ggbm90IHJlYWxseSBhIGpwZWc="}
    finally:
        await feed.close()
    assert (await call(cluster.api.post, f"/api/runs/{run_id}/cancel")).status_code == 200


async def test_a_worker_takes_the_controls_of_the_runs_it_holds(cluster, in_cluster, monkeypatch):
    pool = WorkerPool(in_cluster, Runner(in_cluster, None), concurrency=1)  # type: ignore[arg-type]
    relay = relay_for_worker(in_cluster, pool)
    assert relay is not None
    await relay.start()
    try:
        run_id = await held_run(cluster, pool.name, monkeypatch)  # held by this process
        assert (await call(cluster.api.post, f"/api/runs/{run_id}/cancel")).status_code == 200
        assert (await call(cluster.api.get, f"/api/runs/{run_id}")).json()["status"] == "cancelled"
        assert await call(audit_of, cluster.api, run_id) == [("admin", "cancel", None)]
    finally:
        await relay.stop()


def test_without_redis_a_worker_has_neither(store, monkeypatch):
    monkeypatch.delenv("SOP_REDIS_URL", raising=False)
    assert feed_for_worker(store) is None
    assert relay_for_worker(store, WorkerPool(store, Runner(store, None), concurrency=1)) is None  # type: ignore[arg-type]


# who watches, through Redis ---------------------------------------------------------------------


async def test_runs_are_watched_while_a_server_has_them_in_a_room(redis_server):
    rooms: dict[str, dict[str, str]] = {}
    server = RedisAudience(
        AsyncRedis.from_url(redis_server.url), "server-a", SimpleNamespace(manager=SimpleNamespace(rooms={"/": rooms}))
    )
    worker = RedisAudience(AsyncRedis.from_url(redis_server.url), "worker-b")
    try:
        seen = await worker.look("r1")
        assert (seen.events, seen.progress, worker.watching("r1")) == (True, False, False)

        rooms[run_room("r1")] = {"sid": "eio"}
        await server.mark(run_room("r1"))
        seen = await worker.look("r1")
        assert (seen.progress, worker.watching("r1")) == (True, True)

        rooms[ALL_RUNS] = {"sid": "eio"}
        await server.mark(ALL_RUNS)
        seen = await worker.look("r2")  # every run is followed; nobody watches r2's pictures
        assert (seen.progress, worker.watching("r2")) == (True, False)

        del rooms[run_room("r1")]
        await server.release(run_room("r1"))
        await worker.look("r1")
        assert not worker.watching("r1")
        del rooms[ALL_RUNS]
        await server.refresh()  # a room that emptied without a word (its client disconnected)
        assert not (await worker.look("r2")).progress
    finally:
        await server.stop()
        await worker.stop()


async def test_while_redis_is_away_no_event_goes_out_and_redis_is_asked_once(caplog: pytest.LogCaptureFixture):
    # nothing listens on this loopback port: every question fails at once
    audience = RedisAudience(broker.connect(f"redis://127.0.0.1:{free_port()}/0"), "me")
    try:
        for n in range(5):
            seen = await audience.look(f"run-{n}")
            assert seen == Seen(False, False)  # not sent: a publish would make the run wait for Redis
        warnings = [r for r in caplog.records if "cannot ask Redis who watches runs" in r.getMessage()]
        assert len(warnings) == 1  # asked once; the next events came in the quiet spell and asked nothing
    finally:
        await audience.redis.aclose()
