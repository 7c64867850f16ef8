"""What a run cost: figures checked against a loopback site whose requests and bytes are known."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sop_engine.batch import Batches
from sop_engine.browser import BrowserHost
from sop_engine.console import describe_cost
from sop_engine.control import RunControl
from sop_engine.cost import APPROXIMATE, FIGURES, Figures
from sop_engine.datafile import Row
from sop_engine.document import load_sop
from sop_engine.runner import Runner
from sop_engine.store import Store
from tests.conftest import Recorder, both_databases
from tests.loopback import LoopbackServer, Reply, Request

SIZE = 20_000  # bytes of each of the page's three resources
RESOURCES = ("/a.js", "/b.js", "/c.css")
HEADERS_MAX = 400  # an upper bound of one response's status line and headers, as the test server sends them


class Site:
    """A page that loads three resources of SIZE bytes each, uncompressed and never cached; counts what it
    serves. From the `ready_from`-th load on, the page has a #ready element."""

    def __init__(self, ready_from: int = 1) -> None:
        self.ready_from = ready_from
        self.lock = threading.Lock()
        self.served: list[str] = []
        self.body_bytes = 0
        self.server = LoopbackServer(self.answer)

    def page(self) -> bytes:
        loads = self.served.count("/")
        ready = "<p id=ready>ready</p>" if loads >= self.ready_from else ""
        return (
            "<!doctype html><html><head><link rel=icon href='data:,'>"  # no favicon request
            "<link rel=stylesheet href='/c.css'><script src='/b.js'></script></head>"
            f"<body><script src='/a.js'></script>{ready}<input id=name></body></html>"
        ).encode()

    def answer(self, request: Request) -> Reply:
        with self.lock:
            self.served.append(request.path)
            if request.path == "/":
                body, kind = self.page(), "text/html"
            elif request.path in RESOURCES:
                kind = "text/css" if request.path.endswith(".css") else "text/javascript"
                body = b"/*" + b"x" * (SIZE - 4) + b"*/"
            else:
                return Reply(404, b"", {"Cache-Control": "no-store"})
            self.body_bytes += len(body)
        return Reply(200, body, {"Content-Type": kind, "Cache-Control": "no-store"})


@pytest.fixture
def loopback() -> Iterator[Site]:
    site = Site()
    yield site
    site.server.close()


def document(url: str, extra: str = "") -> str:
    return f"""
sop: 1
id: costly
outputs: [picture]
steps:
  - {{id: open, action: navigate, url: "{url}/"}}
  - {{id: name, action: fill, selector: "#name", value: "Ada"}}
  - {{id: shot, action: screenshot, outputs: {{picture: path}}}}
  - {{id: note, action: set, values: {{done: true}}}}
{extra}"""


def assert_bytes(received: int, bodies: int, responses: int) -> None:
    """Chromium's encodedDataLength: the body as sent, with the response's headers for most responses (an
    image's is its body alone; an image Chromium cannot decode it stops reading). Exact up to the headers."""
    assert bodies <= received <= bodies + responses * HEADERS_MAX, (received, bodies)


def assert_approximate(cost: dict[str, Any]) -> None:
    assert cost["approximate"] == APPROXIMATE
    assert cost["browser_cpu_ms"] > 0 and cost["js_heap_peak_bytes"] > 0


async def test_a_run_and_its_steps_cost_what_the_site_served(store: Store, browser_host: BrowserHost, loopback: Site):
    loaded = load_sop(document(loopback.server.url))
    runner = Runner(store, browser_host, [])
    row = await runner.create_run(loaded, {})
    outcome = await runner.execute(row.id, loaded, {})
    assert outcome.status.value == "completed", outcome.error
    assert loopback.served.count("/") == 1 and sorted(loopback.served) == sorted(["/", *RESOURCES])
    run = store.run(row.id)
    steps = {s.key: s for s in store.steps(row.id)}
    cost, opened = run.cost, steps["open"].cost
    assert set(FIGURES) <= set(cost) and set(FIGURES) <= set(opened)
    # every request happened during the navigate: it has them all, the other steps none
    assert opened["requests"] == cost["requests"] == len(loopback.served) == 4
    assert_bytes(opened["bytes_received"], loopback.body_bytes, 4)
    assert cost["bytes_received"] == opened["bytes_received"]
    for key in ("name", "shot", "note"):
        assert steps[key].cost["requests"] == 0 and steps[key].cost["bytes_received"] == 0
    # the screenshot is the run's one file: its bytes, in the run's and in its step's figures
    picture = Path(outcome.outputs["picture"])
    assert cost["artifact_bytes"] == steps["shot"].cost["artifact_bytes"] == picture.stat().st_size > 0
    assert opened["artifact_bytes"] == 0
    # CPU and heap: sampled after each browser step (written once the samples came back), approximate
    assert_approximate(cost)
    for key in ("open", "name", "shot"):
        assert_approximate(steps[key].cost)
        assert steps[key].cost["browser_cpu_ms"] <= cost["browser_cpu_ms"]
        assert steps[key].cost["js_heap_peak_bytes"] <= cost["js_heap_peak_bytes"]
    assert steps["note"].cost["browser_cpu_ms"] is None  # a step without the browser is not sampled
    assert 0 < opened["wall_ms"] <= cost["wall_ms"]
    assert sum(steps[k].cost["wall_ms"] for k in steps) <= cost["wall_ms"]


async def test_a_failed_step_has_its_cost(store: Store, browser_host: BrowserHost, loopback: Site):
    text = document(loopback.server.url, '  - {id: missing, action: click, selector: "#nowhere", timeout: 1s}')
    loaded = load_sop(text)
    runner = Runner(store, browser_host, [])
    row = await runner.create_run(loaded, {})
    outcome = await runner.execute(row.id, loaded, {})
    assert outcome.status.value == "failed"
    failed = next(s for s in store.steps(row.id) if s.key == "missing")
    assert failed.status == "failed" and failed.cost["requests"] == 0
    # its failure screenshot is a file of the run too
    assert failed.cost["artifact_bytes"] > 0
    assert store.run(row.id).cost["artifact_bytes"] == sum(s.cost["artifact_bytes"] for s in store.steps(row.id))
    assert_approximate(failed.cost)


async def test_a_resumed_run_adds_to_what_it_had_cost(store: Store, browser_host: BrowserHost):
    """Handed back mid-run (the server stopping) and taken up again: the figures go on from the stored ones."""
    site = Site(ready_from=2)  # the step waiting for #ready waits until the page is loaded again
    try:
        text = document(site.server.url).replace(
            '  - {id: name, action: fill, selector: "#name", value: "Ada"}',
            '  - {id: ready, action: wait, selector: "#ready", timeout: 60s}',
        )
        loaded = load_sop(text)
        recorder = Recorder()
        runner = Runner(store, browser_host, [recorder])
        row = await runner.create_run(loaded, {})
        control = RunControl()
        first = asyncio.ensure_future(runner.execute(row.id, loaded, {}, control=control, worker="first"))
        async with asyncio.timeout(30):
            await recorder.wait_for("step.updated", key="ready", status="running")
        control.stopping = True
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        handed_back = store.run(row.id)
        assert handed_back.status == "queued"
        before = handed_back.cost
        assert before["requests"] == len(site.served) == 4 and before["wall_ms"] > 0
        served_before = site.body_bytes
        outcome = await runner.execute(row.id, loaded, {}, worker="second")
        assert outcome.status.value == "completed", outcome.error
        after = store.run(row.id).cost
        # the second execution loaded the page again (from the checkpoint): 4 more requests, on top
        assert after["requests"] == len(site.served) == 8
        assert_bytes(after["bytes_received"] - before["bytes_received"], site.body_bytes - served_before, 4)
        assert after["wall_ms"] > before["wall_ms"]
        assert after["browser_cpu_ms"] > before["browser_cpu_ms"]
        assert after["artifact_bytes"] > 0
    finally:
        site.server.close()


@both_databases
async def test_a_batch_costs_the_sum_of_its_runs(store: Store, browser_host: BrowserHost, loopback: Site):
    text = document(loopback.server.url).replace("outputs: [picture]", "inputs: {who: {type: string}}\noutputs: []")
    loaded = load_sop(text.replace('value: "Ada"', 'value: "{{ who }}", inputs: [who]'))
    batches = Batches(Runner(store, browser_host, []))
    rows = [Row(1, {"who": "Ada"}), Row(2, {"who": "Grace"}), Row(3, None, error="no who")]
    batch = batches.create(loaded, rows, "people.csv", concurrency=2)
    assert batches.summary(batch.id)["cost"] is None  # nothing ran yet
    await batches.run(batch.id)
    runs = [run for _, run in store.batch_items(batch.id) if run is not None]
    assert [run.status for run in runs] == ["completed", "completed"]
    summed = batches.summary(batch.id)["cost"]
    assert summed["runs"] == 2 and summed["approximate"] == APPROXIMATE
    for name in ("requests", "bytes_received", "artifact_bytes"):
        assert summed[name] == sum(run.cost[name] for run in runs), name
    assert summed["requests"] == len(loopback.served) == 8
    for name in ("wall_ms", "browser_cpu_ms"):
        assert summed[name] == pytest.approx(sum(run.cost[name] for run in runs), abs=0.2), name
    assert summed["js_heap_peak_bytes"] == max(run.cost["js_heap_peak_bytes"] for run in runs)
    progress = await batches.current_summary(batch.id)
    assert "cost" not in progress  # the progress bar reads it often: it does without the sum


async def test_a_popup_counts_too(store: Store, browser_host: BrowserHost):
    """A page a step opened (a popup) is counted: what it loads after it opened is the steps' on it."""
    pages = {
        "/": "<a id=pop href='/pop' target=_blank>pop</a>",
        "/pop": "<button id=more onclick=\"var l = document.createElement('link'); l.rel = 'stylesheet'; "
        "l.href = '/late.css'; l.onload = function () { document.body.append(Object.assign("
        "document.createElement('p'), {id: 'loaded', textContent: 'ok'})) }; document.head.append(l)\">more</button>",
    }
    served: list[str] = []

    def answer(request: Request) -> Reply:
        served.append(request.path)
        if request.path == "/late.css":
            return Reply(200, b"p {}" * 1000, {"Content-Type": "text/css", "Cache-Control": "no-store"})
        head = "<!doctype html><html><head><link rel=icon href='data:,'></head><body>"
        return Reply(200, (head + pages[request.path] + "</body></html>").encode(), {"Content-Type": "text/html"})

    with LoopbackServer(answer) as server:
        loaded = load_sop(f"""
sop: 1
id: popup
steps:
  - {{id: open, action: navigate, url: "{server.url}/"}}
  - {{id: pop, action: click, selector: "#pop", opens_tab: pop}}
  - {{id: more, action: click, selector: "#more", tab: pop}}
  - {{id: loaded, action: wait, selector: "#loaded", tab: pop}}
""")
        runner = Runner(store, browser_host, [])
        row = await runner.create_run(loaded, {})
        outcome = await runner.execute(row.id, loaded, {})
    assert outcome.status.value == "completed", outcome.error
    assert sorted(served) == ["/", "/late.css", "/pop"]
    steps = {s.key: s.cost for s in store.steps(row.id)}
    # the popup's own first request may come before it is seen; what it loads later is counted
    assert steps["more"]["requests"] + steps["loaded"]["requests"] == 1
    assert steps["more"]["bytes_received"] + steps["loaded"]["bytes_received"] >= 4000
    assert store.run(row.id).cost["requests"] >= 2


def test_the_command_line_shows_the_cost(tmp_path: Path, loopback: Site):
    sop = tmp_path / "costly.yaml"
    sop.write_text(document(loopback.server.url))
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    env.pop("SOP_DATABASE_URL", None)
    command = [sys.executable, "-m", "sop_engine", "run", str(sop)]
    result = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cost"]["requests"] == len(loopback.served) == 4
    assert_bytes(report["cost"]["bytes_received"], loopback.body_bytes, 4)
    assert_approximate(report["cost"])
    steps = {step["key"]: step for step in report["steps"]}
    assert steps["open"]["cost"]["requests"] == 4 and steps["shot"]["cost"]["artifact_bytes"] > 0
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("cost: "))
    assert "received in 4 requests" in line and "s browser CPU" in line


def test_figures_read_and_add_up():
    stored = {"wall_ms": 1000.0, "requests": 3, "bytes_received": 10, "browser_cpu_ms": None, "approximate": []}
    figures = Figures.read(stored).plus(Figures(500.0, 20.0, 7, 5, 1, 4))
    assert figures == Figures(1500.0, 20.0, 7, 15, 4, 4)
    hostile = Figures.read({"wall_ms": -1, "requests": "many", "bytes_received": True, "js_heap_peak_bytes": 1e3})
    assert hostile == Figures(js_heap_peak_bytes=1e3)
    assert Figures.read(None) == Figures()
    assert describe_cost(Figures(3100.0, 400.0, 1, 1_234_567, 34, 80_200).as_dict()) == (
        "3.1 s, 1.2 MB received in 34 requests, ~0.4 s browser CPU, 80.2 kB of files"
    )
    assert describe_cost(None) is None
