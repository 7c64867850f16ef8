"""The run page as a workbench, in real Chromium against a real server: the timeline of step instances (loop
iterations labelled by their item, retries as attempts), the step panel, the gallery and the run's header, live
and again after a reload; and the step detail the panel reads (GET /api/runs/{id}/steps/{key})."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from playwright.async_api import Page, Route, expect

from sop_engine.document import load_sop
from sop_engine.events import utcnow
from sop_engine.states import RunStatus
from sop_engine.tables import RunRow, StepRunRow
from tests.conftest import Gate, both_databases, post_sop, sign_in, start_run, wait_run
from tests.loopback import LoopbackServer, Reply, Request, json_reply

expect.set_options(timeout=15000)  # a state the page reaches: on a busy machine a run may take seconds

SECRET = "hunter2-very-secret"

WORKBENCH = """
sop: 1
id: SOP_ID
screenshots: every-step
inputs:
  password: {type: string, secret: true, default: "SECRET"}
  fruits: {type: list, default: [apple, banana]}
outputs: [greeting]
steps:
  - {id: wait, action: http, url: "GATE", timeout: 60s}
  - {id: open, action: navigate, url: "SITE/demo/login.html"}
  - {id: type, action: fill, selector: "#username", value: "{{ password }}", inputs: [password]}
  - {id: flaky, action: http, url: "FLAKY", expect_status: 200, retry: {attempts: 3, delay: 10ms}}
  - id: each
    action: loop
    for_each: "{{ fruits }}"
    inputs: [fruits]
    steps:
      - {id: say, action: log, message: "fruit {{ item }}", inputs: [item]}
      - {id: keep, action: set, inputs: [item], values: {seen: "{{ item }}"}}
  - {id: greet, action: set, inputs: [password], values: {greeting: "hi", token: "{{ password[:3] }}"}}
""".replace("SECRET", SECRET)

ORDER = [
    "wait",
    "open",
    "type",
    "flaky",
    "each",
    "each[0]",
    "each[0].say",
    "each[0].keep",
    "each[1]",
    "each[1].say",
    "each[1].keep",
    "greet",
]


class Flaky:
    """A loopback URL that answers 500 the first time, then 200: a step that passes on its second attempt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/flaky"

    def _answer(self, request: Request) -> Reply:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        return json_reply({"ok": not first}, 500 if first else 200)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def flaky() -> Iterator[Flaky]:
    made = Flaky()
    yield made
    made.close()


@pytest.fixture
async def page(browser_host, server):
    context = await browser_host.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(15000)
    await sign_in(page, server.url)
    yield page
    await context.close()


def workbench_sop(api: Any, server: Any, gate: Gate, flaky: Flaky) -> str:
    text = WORKBENCH.replace("SITE", server.url).replace("GATE", gate.url).replace("FLAKY", flaky.url)
    return post_sop(api, text)


COST = {"wall_ms": 1234, "js_heap_peak_bytes": 3 * 1024 * 1024, "requests": 7, "note": "heap sizes are approximate"}
TRACE = {
    "status": "saved",
    "reason": None,
    "bytes": 2048,
    "download": "/api/artifacts/RUN/trace.zip",
    "viewer": "/trace/",
}


async def with_cost_and_trace(route: Route) -> None:
    """The run as the API gives it, with a cost and a trace as the cost and trace parts of the engine write them
    (filled by other parts of the engine; here the page's reading of them is what is tried)."""
    response = await route.fetch()
    run = await response.json()
    run["cost"], run["trace"] = COST, {**TRACE, "download": TRACE["download"].replace("RUN", run["id"])}
    await route.fulfill(response=response, json=run)


async def timeline_keys(page: Page) -> list[str]:
    return await page.eval_on_selector_all("#timeline .tl-row", "rows => rows.map(r => r.dataset.key)")


async def check_workbench(page: Page, run_id: str) -> None:
    """What the page shows of the finished run: the same on first sight and after a reload."""
    await expect(page.locator("#run-status")).to_have_text("completed")
    assert await timeline_keys(page) == ORDER
    row = lambda key: page.locator(f'#timeline .tl-row[data-key="{key}"]')  # noqa: E731
    # iterations grouped under their loop, labelled by their item
    for key, fruit in (("each[0]", "apple"), ("each[1]", "banana")):
        await expect(row(key)).to_have_attribute("data-kind", "iteration")
        await expect(row(key).locator(".tl-item")).to_have_text(fruit)
    # bars coloured by status; the retried step shows its two attempts, the first failed
    for key in ORDER:
        await expect(row(key)).to_have_attribute("data-status", "completed")
    attempts = row("flaky").locator(".tl-seg")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0)).to_have_attribute("data-status", "failed")
    await expect(attempts.nth(0)).to_have_attribute("data-attempt", "1")
    await expect(attempts.nth(1)).to_have_attribute("data-status", "completed")
    await expect(attempts.nth(1)).to_have_attribute("data-attempt", "2")
    await expect(row("open").locator(".tl-seg")).to_have_count(1)
    # the header: inputs, outputs, times, worker, cost, trace
    await expect(page.locator("#inputs")).to_contain_text('"password": "***"')
    await expect(page.locator("#outputs")).to_contain_text('"greeting": "hi"')
    facts = page.locator("#run-facts")
    for name in ("worker", "queued", "started", "ended", "took"):
        await expect(facts.locator(f'dd[data-fact="{name}"]')).not_to_be_empty()
    await expect(page.locator('#run-cost tr[data-cost="wall_ms"] td')).to_have_text("1.2 s")
    await expect(page.locator('#run-cost tr[data-cost="js_heap_peak_bytes"] td')).to_have_text("3.0 MB")
    await expect(page.locator('#run-cost tr[data-cost="note"] td')).to_have_text("heap sizes are approximate")
    await expect(page.locator("#trace-download")).to_have_attribute("href", f"/api/artifacts/{run_id}/trace.zip")
    await expect(page.locator("#trace-viewer")).to_have_attribute("href", "/trace/")  # 127.0.0.1 is a secure context
    await expect(page.locator("#run-trace")).not_to_contain_text("null")
    # the gallery: the picture after each browser step, labelled by its step
    gallery = page.locator("#gallery figure")
    await expect(gallery).to_have_count(2)
    await expect(page.locator('#gallery figure[data-key="open"] figcaption')).to_contain_text("open")
    picture = page.locator('#gallery figure[data-key="type"] img')
    await expect(picture).to_have_attribute("src", f"/api/artifacts/{run_id}/type-after.png")
    await picture.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
    assert await picture.evaluate("img => img.naturalWidth") > 0


async def check_panel(page: Page) -> None:
    panel = page.locator("#step-panel")
    # the step that filled the secret: its fields and inputs masked, its picture after it
    await page.click('#timeline .tl-row[data-key="type"]')
    await expect(panel.locator("#panel-key")).to_have_text("type")
    await expect(panel.locator("#panel-fields")).to_contain_text('"value": "***"')
    await expect(panel.locator("#panel-fields")).to_contain_text('"selector": "#username"')
    await expect(panel.locator("#panel-inputs")).to_contain_text('"password": "***"')
    await expect(panel.locator("#panel-shots img")).to_have_attribute("src", page_artifact("type-after.png"))
    await expect(panel.locator("#panel-duration")).to_contain_text("took")
    await expect(panel.locator("#panel-typical")).to_contain_text("typical")
    # the retried step: both attempts, the first with its error
    await page.click('#timeline .tl-row[data-key="flaky"]')
    await expect(panel.locator("#panel-key")).to_have_text("flaky")
    await expect(panel.locator("#panel-attempts li")).to_have_count(2)
    first = panel.locator('#panel-attempts li[data-attempt="1"]')
    await expect(first).to_have_attribute("data-status", "failed")
    await expect(first).to_contain_text("answered 500")
    await expect(panel.locator('#panel-attempts li[data-attempt="2"]')).to_have_attribute("data-status", "completed")
    await expect(panel.locator("#panel-fields")).to_contain_text("/flaky")
    # an iteration's step, picked in the steps table: its log line and outputs
    await page.click('#steps tr[data-key="each[1].say"] td.key code')
    await expect(panel.locator("#panel-key")).to_have_text("each[1].say")
    await expect(panel.locator("#panel-log")).to_contain_text("fruit banana")
    await expect(panel.locator("#panel-fields")).to_contain_text('"message": "fruit banana"')
    # a value computed from the secret, too short to be masked by value: masked by name
    await page.click('#timeline .tl-row[data-key="greet"]')
    await expect(panel.locator("#panel-key")).to_have_text("greet")
    await expect(panel.locator("#panel-fields")).to_contain_text('"token": "***"')
    await expect(panel.locator("#panel-outputs")).to_contain_text('"token": "***"')
    await expect(page.locator('#timeline .tl-row.selected[data-key="greet"]')).to_have_count(1)


_run_ids: dict[str, str] = {}


def page_artifact(name: str) -> str:
    return f"/api/artifacts/{_run_ids['current']}/{name}"


async def no_secret(page: Page) -> None:
    html = await page.content()
    text = await page.evaluate("document.body.innerText")
    assert SECRET not in html and SECRET not in text
    assert SECRET[:3] not in text.replace("***", "")  # not even the part the run computed from it


async def test_the_workbench_live_then_after_a_reload(page: Page, server, api, gate, flaky):
    run_id = start_run(api, workbench_sop(api, server, gate, flaky))
    _run_ids["current"] = run_id
    await page.route(f"**/api/runs/{run_id}", with_cost_and_trace)
    await page.goto(f"{server.url}/runs/{run_id}")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    # live: the first step is running, then the rest arrives as it happens
    running = page.locator('#timeline .tl-row[data-key="wait"] .tl-seg')
    await expect(running).to_have_attribute("data-status", "running")
    await page.click('#timeline .tl-row[data-key="wait"]')
    await expect(page.locator("#panel-status")).to_have_text("running")
    await page.evaluate("window.sameDocument = true")
    gate.open.set()
    await expect(page.locator("#panel-status")).to_have_text("completed")  # the panel follows its step
    await check_workbench(page, run_id)
    assert await page.evaluate("window.sameDocument") is True  # all of it came live
    await check_panel(page)
    await no_secret(page)
    # reloaded: the same, read from what the server stored, with the step that was shown shown again
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#panel-key")).to_have_text("greet")
    await expect(page.locator("#panel-fields")).to_contain_text('"token": "***"')
    await check_workbench(page, run_id)
    await check_panel(page)
    await no_secret(page)


async def test_a_dropped_trace_says_why_and_a_run_without_cost_says_so(page: Page, server, api):
    sop_id = post_sop(api, "sop: 1\nid: SOP_ID\nsteps:\n  - {id: only, action: log, message: hi}\n")
    run_id = start_run(api, sop_id)
    await asyncio.to_thread(wait_run, api, run_id, "completed")
    dropped = {"status": "dropped", "reason": "over the 50 MB limit", "bytes": 0, "download": None, "viewer": None}

    async def with_dropped_trace(route: Route) -> None:
        response = await route.fetch()
        await route.fulfill(response=response, json={**await response.json(), "trace": dropped, "cost": None})

    await page.route(f"**/api/runs/{run_id}", with_dropped_trace)
    await page.goto(f"{server.url}/runs/{run_id}")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#trace-reason")).to_have_text("over the 50 MB limit")
    await expect(page.locator("#run-trace")).to_contain_text("dropped")
    await expect(page.locator("#trace-download")).to_have_count(0)
    await expect(page.locator("#trace-viewer")).to_have_count(0)
    await expect(page.locator("#no-cost")).to_be_visible()
    await expect(page.locator("#no-pictures")).to_be_visible()
    await expect(page.locator("#step-panel")).to_be_hidden()
    await page.goto(f"{server.url}/runs/{run_id}#step=nope")  # a step that is not there: said, not broken
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#panel-error")).to_contain_text("no step nope")


# the step detail, from the API --------------------------------------------------------------------------


def detail(api: Any, run_id: str, key: str) -> Any:
    return api.get(f"/api/runs/{run_id}/steps/{quote(key, safe='')}")


@both_databases
def test_step_detail_attempts_fields_pictures_and_typical_duration(server, api, gate, flaky):
    gate.open.set()
    run_id = start_run(api, workbench_sop(api, server, gate, flaky))
    wait_run(api, run_id, "completed", timeout=60)
    shown = detail(api, run_id, "flaky")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["step"]["key"] == "flaky" and body["step"]["status"] == "completed"
    assert [(a["number"], a["status"]) for a in body["attempts"]] == [(1, "failed"), (2, "completed")]
    assert "answered 500" in body["attempts"][0]["error"]["message"]
    assert body["attempts"][1]["error"] is None
    assert body["attempts"][0]["ended_at"] <= body["attempts"][1]["started_at"] <= body["attempts"][1]["ended_at"]
    assert body["fields"]["url"] == flaky.url
    assert body["screenshots"] == []  # not a browser step
    assert body["typical_ms"] > 0  # this run is the SOP's only completed one: its own duration
    typed = detail(api, run_id, "type").json()
    assert typed["fields"]["value"] == "***" and typed["step"]["inputs"]["password"] == "***"
    assert typed["screenshots"] == [f"/api/artifacts/{run_id}/type-after.png"]
    assert api.get(typed["screenshots"][0]).content[:4] == b"\x89PNG"
    said = detail(api, run_id, "each[0].say").json()
    assert [line["message"] for line in said["log"]] == ["fruit apple"]
    assert said["fields"]["message"] == "fruit apple"
    greet = detail(api, run_id, "greet").json()
    assert greet["fields"]["values"] == {"greeting": "hi", "token": "***"}
    every = json.dumps([detail(api, run_id, key).json() for key in ORDER if "[" not in key or "." in key])
    assert SECRET not in every and SECRET[:3] not in every.replace("***", "")
    # the loop's iterations are labelled by their item in the events that added their steps
    added = [e["data"] for e in api.get(f"/api/runs/{run_id}/events").json()["events"] if e["type"] == "steps.added"]
    assert [a.get("item") for a in added if a["parent"] == "each"] == ["apple", "banana"]


@both_databases
def test_step_detail_refuses_what_is_not_there_with_a_404(server, api):
    run_id = start_run(api, post_sop(api, "sop: 1\nid: SOP_ID\nsteps:\n  - {id: only, action: log, message: hi}\n"))
    wait_run(api, run_id, "completed")
    for key in ("nope", "only[0]", "only.x", "[]", "%", "é" * 20, "x" * 600, "only'--", 'only"'):
        answer = detail(api, run_id, key)
        assert answer.status_code == 404, (key, answer.status_code, answer.text)
        assert "no step" in answer.json()["error"]
    assert api.get("/api/runs/no-such-run/steps/only").status_code == 404
    assert detail(api, run_id, "only").json()["attempts"][0]["status"] == "completed"


SECRET_ITEMS = """
sop: 1
id: SOP_ID
screenshots: SHOTS
inputs:
  codes: {type: list, secret: true, default: ["c0de-alpha-1", "c0de-beta-22"]}
steps:
  - {id: open, action: navigate, url: "SITE/demo/login.html"}
  - id: each
    action: loop
    for_each: "{{ codes }}"
    inputs: [codes]
    steps:
      - {id: note, action: set, inputs: [item], values: {seen: "{{ item }}"}}
  - {id: missing, action: click, selector: "#no-such-button", timeout: 200ms, on_error: continue}
"""


@pytest.mark.parametrize("shots", ["on-failure", "off"])
def test_secret_items_are_labelled_masked_and_screenshots_follow_the_option(server, api, shots):
    text = SECRET_ITEMS.replace("SITE", server.url).replace("SHOTS", shots)
    run_id = start_run(api, post_sop(api, text))
    wait_run(api, run_id, "completed")
    added = [e["data"] for e in api.get(f"/api/runs/{run_id}/events").json()["events"] if e["type"] == "steps.added"]
    assert [a.get("item") for a in added if a["parent"] == "each"] == ["***", "***"]
    assert detail(api, run_id, "open").json()["screenshots"] == []  # a completed step: only with every-step
    failed = detail(api, run_id, "missing").json()
    assert failed["step"]["status"] == "failed"
    assert failed["fields"]["selector"] == "#no-such-button"
    expected = [f"/api/artifacts/{run_id}/missing-failure.png"] if shots == "on-failure" else []
    assert failed["screenshots"] == expected


@both_databases
def test_the_typical_duration_is_the_median_over_the_latest_completed_runs(store):
    document = store.save_document(load_sop("sop: 1\nid: timed\nsteps:\n  - {id: a, action: log, message: hi}\n"))
    begin = utcnow()
    spans = [("completed", 100), ("completed", 300), ("completed", 200), ("failed", 9000), ("completed", 250)]
    for number, (status, millis) in enumerate(spans):
        run = store.create_run(document, {}, status)
        with store.session() as s, s.begin():
            s.get(RunRow, run.id).created_at = begin + timedelta(seconds=number)
            step = StepRunRow(run_id=run.id, key="a", step_id="a", action="log", status="completed", started_at=begin)
            step.finished_at = begin + timedelta(milliseconds=millis)
            s.add(step)
    assert store.typical_duration("timed", "a") == 225.0  # completed runs only: the failed one's 9 s is not typical
    assert store.typical_duration("timed", "a", runs=2) == 225.0  # the latest two completed: 200 and 250
    assert store.typical_duration("timed", "a", runs=1) == 250.0
    assert store.typical_duration("timed", "b") is None
    assert store.typical_duration("other", "a") is None


async def test_every_step_pictures_cover_the_secret_field_and_the_text_showing_it(store, browser_host, site, data_dir):
    from tests.test_secrets_pictures import BOX, BUTTON, FIELD, Watching, distance, run_pictures

    outcome = await run_pictures(
        """
sop: 1
id: pictures
screenshots: every-step
inputs:
  password: {type: string, secret: true}
steps:
  - {id: open, action: navigate, url: "$SITE/secret-box.html"}
  - {id: type, action: fill, selector: "#field", value: "{{ password }}", inputs: [password]}
  - {id: show, action: click, selector: "#show"}
  - {id: note, action: log, message: not a browser step}
""",
        store,
        browser_host,
        site,
        Watching(),
    )
    assert outcome.status == RunStatus.COMPLETED
    rows = {r.key: r for r in store.steps(outcome.run_id)}
    assert {key: row.artifacts for key, row in rows.items()} == {
        "open": [f"{outcome.run_id}/open-after.png"],
        "type": [f"{outcome.run_id}/type-after.png"],
        "show": [f"{outcome.run_id}/show-after.png"],
        "note": [],
    }
    typed, shown = ((data_dir / "artifacts" / rows[key].artifacts[0]).read_bytes() for key in ("type", "show"))
    context = await browser_host.new_context()
    try:
        page = await context.new_page()
        assert await distance(page, typed, FIELD, 1) == 0  # the field filled with the secret, in the step's own
        assert await distance(page, shown, FIELD, 1) == 0
        assert await distance(page, shown, BOX, 1) == 0  # the page printing it
        assert await distance(page, shown, BUTTON, 0) > 100  # the rest of the page is shown as it is
    finally:
        await context.close()
