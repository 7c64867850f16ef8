"""In-process figures: the engine's own cost per step, and store commits per second."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time

from sop_engine.browser import BrowserHost
from sop_engine.document import load_sop
from sop_engine.events import Event, utcnow
from sop_engine.runner import Runner
from sop_engine.store import Store


class CountingSink:
    def __init__(self) -> None:
        self.events = 0

    async def emit(self, event: Event) -> None:
        self.events += 1


def no_op_document(steps: int) -> str:
    lines = ["sop: 1", "id: overhead", "steps:"]
    lines += [f"  - {{id: s{i}, action: sleep, duration: 0}}" for i in range(steps)]
    return "\n".join(lines) + "\n"


async def _overhead(steps: int, repeats: int) -> list[float]:
    loaded = load_sop(no_op_document(steps))
    per_step = []
    async with BrowserHost() as browser:  # started lazily: no browser step, no browser launched
        for _ in range(repeats):
            store = Store()
            sink = CountingSink()
            runner = Runner(store, browser, [sink])
            run = await runner.create_run(loaded, {})
            started = time.perf_counter()
            await runner.execute(run.id, loaded, {})
            per_step.append((time.perf_counter() - started) / steps * 1000)
            assert sink.events >= 2 * steps, "every step's start and result reach the sink"
            store.close()
    return per_step


def step_overhead_ms(steps: int = 1000, repeats: int = 5) -> list[float]:
    """Milliseconds per no-op step, with its state committed (SQLite) and its events emitted."""
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get("SOP_DATA_DIR")
        os.environ["SOP_DATA_DIR"] = folder
        try:
            return asyncio.run(_overhead(steps, repeats))
        finally:
            if previous is None:
                os.environ.pop("SOP_DATA_DIR", None)
            else:
                os.environ["SOP_DATA_DIR"] = previous


def commits_per_second(count: int = 2000) -> float:
    """Step-state commits a second: one step update and its event, each in its own transaction."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{folder}/commits.db")
        document = store.save_document(load_sop(no_op_document(1)))
        run = store.create_run(document, {}, "running")
        rows = [
            {"key": f"k{i}", "step_id": "s0", "parent_key": None, "action": "sleep", "status": "pending"}
            for i in range(count)
        ]
        store.record(run.id, "steps.added", {}, new_steps=rows)
        started = time.perf_counter()
        for i in range(count):
            store.record(
                run.id,
                "step.updated",
                {"key": f"k{i}", "status": "running"},
                step=(f"k{i}", {"status": "running", "started_at": utcnow()}),
            )
        rate = count / (time.perf_counter() - started)
        store.close()
        return rate


def median(values: list[float]) -> float:
    return statistics.median(values)
