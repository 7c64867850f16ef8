"""The Socket.IO feed with a real python-socketio client: auth, replay, live events, progress, frames."""

from __future__ import annotations

import asyncio

import pytest
import socketio

from tests.conftest import TOKEN, post_sop, start_run, wait_run

STEPS = """
sop: 1
id: SOP_ID
inputs:
  password: {type: string, secret: true, default: "p4ss-w0rd-xyz"}
outputs: [said]
steps:
  - {id: one, action: sleep, duration: 100ms}
  - {id: two, action: log, inputs: [password], message: "using {{ password }}"}
  - {id: three, action: set, inputs: [password], values: {said: "{{ password }}!"}}
"""


class Feed:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict]] = []
        for name in ("run.updated", "step.updated", "log", "progress", "frame"):
            self.client.on(name, self._keep(name))

    def _keep(self, name: str):
        async def handler(data: dict) -> None:
            self.events.append((name, data))

        return handler

    def seqs(self, run_id: str) -> list[int]:
        return sorted({d["seq"] for n, d in self.events if n not in ("progress", "frame") and d["run_id"] == run_id})

    async def until(self, predicate, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.05)


async def test_connection_without_a_token_is_refused(server):
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, transports=["websocket"], wait_timeout=5)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, auth={"token": "wrong"}, transports=["websocket"], wait_timeout=5)


async def test_subscribe_replays_then_streams_every_event_in_order(server, api):
    run_id = start_run(api, post_sop(api, STEPS))
    wait_run(api, run_id, "completed")
    feed = Feed()
    await feed.client.connect(server.url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)
    try:
        reply = await feed.client.call("subscribe", {"run_id": run_id, "since": 3}, timeout=5)
        last = api.get(f"/api/runs/{run_id}").json()["seq"]
        assert reply == {"ok": True, "replayed": last - 3}
        await feed.until(lambda: feed.seqs(run_id) and feed.seqs(run_id)[-1] == last)
        assert feed.seqs(run_id) == list(range(4, last + 1))
        everything = repr(feed.events)
        assert "p4ss-w0rd-xyz" not in everything and "***" in everything
        assert await feed.client.call("subscribe", {"run_id": "nope"}, timeout=5) == {
            "ok": False,
            "error": "no run nope",
        }
    finally:
        await feed.client.disconnect()


async def test_live_events_progress_and_the_all_runs_room(server, api):
    feed = Feed()
    await feed.client.connect(server.url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)
    try:
        assert await feed.client.call("subscribe", {"all": True}, timeout=5) == {"ok": True}
        run_id = start_run(api, post_sop(api, STEPS))

        def done() -> bool:
            return any(
                n == "run.updated" and d["run_id"] == run_id and d["data"].get("status") == "completed"
                for n, d in feed.events
            )

        await feed.until(done)
        last = api.get(f"/api/runs/{run_id}").json()["seq"]
        assert feed.seqs(run_id) == list(range(1, last + 1))  # nothing missed, nothing twice
        statuses = [
            (d["data"]["key"], d["data"]["status"])
            for n, d in feed.events
            if n == "step.updated" and d["run_id"] == run_id and d["type"] == "step.updated"
        ]
        assert statuses == [
            ("one", "running"),
            ("one", "completed"),
            ("two", "running"),
            ("two", "completed"),
            ("three", "running"),
            ("three", "completed"),
        ]
        progress = [d for n, d in feed.events if n == "progress" and d["run_id"] == run_id]
        assert progress[-1]["completed"] == progress[-1]["total"] == 3 and progress[-1]["percent"] == 100.0
        logs = [d["data"]["message"] for n, d in feed.events if n == "log" and d["run_id"] == run_id]
        assert logs == ["***"]  # the message read the secret: secret as a whole
    finally:
        await feed.client.disconnect()


async def test_frames_go_to_watchers_of_a_run(server, api):
    sop_id = post_sop(
        api,
        """
sop: 1
id: SOP_ID
inputs: {base: {}}
steps:
  - {id: hold, action: sleep, duration: 1500ms}
  - {id: open, action: navigate, url: "{{ base }}/demo/todo.html", inputs: [base]}
""",
    )
    run_id = start_run(api, sop_id, {"base": server.url})
    feed = Feed()
    await feed.client.connect(server.url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)
    try:
        await feed.client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=5)
        await feed.until(lambda: any(n == "frame" for n, _ in feed.events))
        frame = next(d for n, d in feed.events if n == "frame")
        assert frame["key"] == "open" and frame["image"].startswith("data:image/jpeg;base64,")
    finally:
        await feed.client.disconnect()
