"""Writes that survive a database outage: a refused write is tried again while the run waits; when the
database stays away too long the execution stops with StoreUnavailable, and what it committed is consistent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from sop_engine.browser import BrowserHost
from sop_engine.document import load_sop, resolve_inputs
from sop_engine.events import Event, Journal
from sop_engine.runner import Execution, Runner, StoreUnavailable
from sop_engine.states import RunStatus, StepStatus
from sop_engine.store import Store
from tests.conftest import Recorder

SOP = """
sop: 1
id: outage
outputs: [n, m]
steps:
  - {id: a, action: set, values: {n: 1}}
  - {id: b, action: log, message: "n is {{ n }}", inputs: [n]}
  - {id: c, action: set, values: {m: 2}}
"""


class WriteLock:
    """Another connection holding the database's write lock (BEGIN EXCLUSIVE) until released."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def take(self) -> None:
        self.connection.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("COMMIT")


class LockAfter(Recorder):
    """Keeps every event; takes the lock once step `key` is told completed (so its write is in)."""

    def __init__(self, lock: WriteLock, key: str) -> None:
        super().__init__()
        self.lock, self.key, self.taken = lock, key, False

    async def emit(self, event: Event) -> None:
        await super().emit(event)
        told = (event.type, event.data.get("key"), event.data.get("status"))
        if not self.taken and told == ("step.updated", self.key, "completed"):
            self.taken = True
            self.lock.take()


class OnRetry(logging.Handler):
    """Calls `action` each time the runner says it will try a refused write again."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.action, self.count = action, 0

    def emit(self, record: logging.LogRecord) -> None:
        if "trying again" in record.getMessage():
            self.count += 1
            self.action()


@pytest.fixture
def quick_store(data_dir: Path) -> Iterator[Store]:
    """A store whose connections give up on a locked database after 50 ms instead of 10 s."""
    store = Store()
    sa_event.listen(store.engine, "connect", lambda connection, _: connection.execute("PRAGMA busy_timeout=50"))
    store.engine.dispose()
    yield store
    store.close()


@pytest.fixture
def lock(data_dir: Path, quick_store: Store) -> Iterator[WriteLock]:
    held = WriteLock(data_dir / "sop.db")
    yield held
    held.release()
    held.connection.close()


def gap_free(events: list) -> bool:
    return [e.seq for e in events] == list(range(1, len(events) + 1))


def finished(events: list) -> list[str]:
    return [e.data["key"] for e in events if e.type == "step.updated" and e.data["status"] == "completed"]


async def test_a_refused_write_is_tried_again_and_every_event_is_stored_once(quick_store, lock):
    retries = OnRetry(lock.release)
    logger = logging.getLogger("sop_engine.runner")
    logger.addHandler(retries)
    sink = LockAfter(lock, "a")
    runner = Runner(quick_store, BrowserHost(), [sink])
    loaded = load_sop(SOP)
    inputs = resolve_inputs(loaded.sop, {})
    try:
        row = await runner.create_run(loaded, inputs)
        outcome = await runner.execute(row.id, loaded, inputs)
    finally:
        logger.removeHandler(retries)
    assert sink.taken and retries.count >= 1
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"n": 1, "m": 2}
    stored = quick_store.events(row.id)
    assert gap_free(stored)
    assert quick_store.run(row.id).last_seq == len(stored)
    assert [(e.seq, e.type, e.data) for e in sink.events] == [(e.seq, e.type, e.data) for e in stored]
    assert finished(stored) == ["a", "b", "c"]
    assert len([e for e in stored if e.type == "log"]) == 1


async def test_a_write_refused_too_long_raises_and_leaves_a_consistent_run(quick_store, lock, monkeypatch):
    monkeypatch.setenv("SOP_WRITE_RETRY_SECONDS", "0")
    sink = LockAfter(lock, "a")
    runner = Runner(quick_store, BrowserHost(), [sink])
    loaded = load_sop(SOP)
    inputs = resolve_inputs(loaded.sop, {})
    row = await runner.create_run(loaded, inputs)
    execution = await Execution.prepare(runner, row.id, loaded, inputs)
    with pytest.raises(StoreUnavailable, match="refused"):
        await execution.run()
    lock.release()

    # what was not written is still queued, in order, nothing of it stored (b's start went with a's result,
    # which was committed while b was made ready: b acted, and logged, once that commit was through)
    queued = [(type_, data.get("key"), data.get("status")) for type_, data, _ in execution.journal.queued]
    assert queued == [("log", "b", None)]
    stored = quick_store.events(row.id)
    assert gap_free(stored) and quick_store.run(row.id).last_seq == len(stored)
    assert [(e.data["key"], e.data["status"]) for e in stored[-2:]] == [("a", "completed"), ("b", "running")]
    assert quick_store.run(row.id).status == "running"
    assert {s.key: s.status for s in quick_store.steps(row.id)} == {"a": "completed", "b": "running", "c": "pending"}

    # the database back, the run goes on from its last committed step
    outcome = await runner.execute(row.id, loaded, inputs)
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"n": 1, "m": 2}
    stored = quick_store.events(row.id)
    assert gap_free(stored)
    assert finished(stored) == ["a", "b", "c"]
    assert len([e for e in stored if e.type == "log"]) == 1


class GateStore:
    """A store whose record_many waits at a gate (a thread blocked in a transaction) and keeps what it got."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.gate = threading.Event()
        self.commits: list[list[str]] = []
        self.seq = 0

    def record_many(self, run_id: str, changes: list, holder: str | None = None) -> list[Event]:
        if not self.commits:  # the first transaction is held; any later one goes straight through
            self.inside.set()
            self.gate.wait(10)
        self.commits.append([data["n"] for _, data, _ in changes])
        events = [Event(run_id, self.seq + i + 1, type_, data) for i, (type_, data, _) in enumerate(changes)]
        self.seq += len(changes)
        return events


async def test_a_cancelled_flush_lets_its_transaction_finish_before_the_next_one():
    store = GateStore()
    sink = Recorder()
    journal = Journal(store, "r", [sink])  # type: ignore[arg-type]
    first = asyncio.ensure_future(journal.write(("log", {"n": "first"}, {}), wait=True))
    await asyncio.to_thread(store.inside.wait, 10)  # the first transaction is under way in its thread
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    second = asyncio.ensure_future(journal.write(("log", {"n": "second"}, {}), wait=True))
    while journal._last_write is not None:  # until the second flush waits for the first transaction
        await asyncio.sleep(0)
    store.gate.set()
    await second
    assert store.commits == [["first"], ["second"]]  # in order, each once
    assert [(e.seq, e.data["n"]) for e in sink.events] == [(1, "first"), (2, "second")]
    assert journal.queued == []


async def test_a_resumed_run_still_knows_the_values_computed_from_a_secret(
    quick_store, lock, browser_host, monkeypatch
):
    monkeypatch.setenv("SOP_WRITE_RETRY_SECONDS", "0")
    secret = "s3cret-Pw9"
    sink = LockAfter(lock, "derive")
    runner = Runner(quick_store, browser_host, [sink])
    loaded = load_sop("""
sop: 1
id: resumed-secret
inputs:
  password: {type: string, secret: true}
outputs: [echo]
steps:
  - {id: derive, action: set, inputs: [password], values: {backwards: "{{ password|reverse }}"}}
  - {id: echo, action: evaluate, script: "() => '9wP-terc3s'", outputs: {echo: value}}
""")
    inputs = resolve_inputs(loaded.sop, {"password": secret})
    row = await runner.create_run(loaded, inputs)
    with pytest.raises(StoreUnavailable):
        await runner.execute(row.id, loaded, inputs)
    lock.release()
    assert {s.key: s.status for s in quick_store.steps(row.id)}["derive"] == "completed"

    outcome = await runner.execute(row.id, loaded, inputs)  # derive is not run again: its sealed outputs are read
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"echo": "***"}  # the page gave back what the secret's reverse is
    assert all(secret[::-1] not in json.dumps(e.data) for e in quick_store.events(row.id))


async def test_a_step_acts_only_once_the_result_before_it_is_committed(store, browser_host, monkeypatch):
    """A step's result is committed beside what comes next (the next step's templates and checks), but the
    next step acts only once it is durable: here the commit of `b` is held back until the execution waits for
    it (or, were it wrong, until `c`, a request, reached its server first). `c` is idempotent: its start is
    not committed before it acts, so only the wait before acting keeps the order."""
    from tests.loopback import LoopbackServer, Request, json_reply

    seen: list[str] = []
    go_on = threading.Event()

    def answer(request: Request) -> Any:
        seen.extend(row.status for row in Store().steps(run_id) if row.key == "b")
        go_on.set()
        return json_reply({"ok": True})

    original_record, original_settled = store.record_many, Execution.settled

    def held(run: str, changes: list, holder: str | None = None) -> list[Event]:
        if any((data.get("key"), data.get("status")) == ("b", "completed") for _, data, _ in changes):
            go_on.wait(60)  # a fail-safe only: one of the two events below lets it go
        return original_record(run, changes, holder)

    async def settled(self: Execution) -> None:
        if self._committing is not None and self.status.get("b") == StepStatus.COMPLETED:
            go_on.set()  # the execution waits for b's commit: it may go through
        await original_settled(self)

    monkeypatch.setattr(store, "record_many", held)
    monkeypatch.setattr(Execution, "settled", settled)
    with LoopbackServer(answer) as server:
        loaded = load_sop(
            f"""
sop: 1
id: durable-before-acting
steps:
  - {{id: a, action: log, message: one}}
  - {{id: b, action: set, values: {{n: 2}}}}
  - {{id: c, action: http, url: "{server.url}/c", idempotent: true}}
"""
        )
        runner = Runner(store, browser_host)
        run_id = (await runner.create_run(loaded, {})).id
        outcome = await runner.execute(run_id, loaded, {})
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert seen == ["completed"], seen
