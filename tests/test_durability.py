"""Faults: the server killed mid-run (again and again), a non-idempotent step interrupted, Chromium killed,
the database locked by another writer. Each test kills only processes it started."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from urllib.parse import parse_qs, urlparse

import pytest

from sop_engine.browser import BrowserHost
from sop_engine.document import load_sop
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from tests.conftest import ServerProcess, both_databases, post_sop, start_run, wait_for, wait_run
from tests.loopback import LoopbackServer, Reply, Request, html_reply

ITEMS = ["a", "b", "c", "d", "e", "f"]


class CountingSite:
    """A site that counts, on its own side, every form submission and every slow call it gets.
    A submission answers with a redirect to a page that can be loaded again (post/redirect/get)."""

    def __init__(self) -> None:
        self.submissions: Counter[str] = Counter()
        self.slow_calls: Counter[str] = Counter()
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    def _answer(self, request: Request) -> Reply:
        if request.method == "POST":
            tag = parse_qs(request.body.decode()).get("tag", [""])[0]
            self.submissions[tag] += 1
            return Reply(303, headers={"Location": f"/done?tag={tag}"})
        url = urlparse(request.path)
        query = parse_qs(url.query)
        if url.path == "/wizard":
            return _page(
                '<form method="post" action="/submit"><input id="tag" name="tag">'
                '<button id="go" type="submit">Go</button></form>'
            )
        if url.path == "/done":
            return _page(f'<p id="done">{query.get("tag", [""])[0]}</p>')
        if url.path == "/slow":
            self.slow_calls[query.get("tag", [""])[0]] += 1
            time.sleep(4)  # a slow payment on the site's side, so that a kill lands while it is in flight
            return _page("<p>paid</p>")
        return _page("not here", 404)


def _page(body: str, status: int = 200) -> Reply:
    return html_reply(f"<!doctype html><html><body>{body}</body></html>", status)


@pytest.fixture
def site_counter():
    site = CountingSite()
    with site.server:
        yield site


SUBMIT_ALL = """
sop: 1
id: SOP_ID
inputs: {base: {}, run_tag: {}}
outputs: [done]
defaults: {timeout: 10s}
steps:
  - id: each
    action: loop
    for_each: "{{ ['a', 'b', 'c', 'd', 'e', 'f'] }}"
    as: item
    collect: {done: shown}
    steps:
      - {id: open, action: navigate, url: "{{ base }}/wizard", inputs: [base]}
      - {id: tag, action: fill, selector: "#tag", value: "{{ run_tag }}-{{ item }}", inputs: [run_tag, item]}
      - {id: go, action: click, selector: "#go", resume_from: tag}  # a reloaded form is empty: type again
      - {id: read, action: extract, selector: "#done", outputs: {shown: text}}
      - {id: rest, action: sleep, duration: 150ms}
"""


@both_databases
def test_runs_survive_repeated_server_kills(tmp_path, site_counter, database_url):
    rng = random.Random()
    server = ServerProcess(tmp_path / "data", concurrency=4, database_url=database_url).start()
    kills = 0
    try:
        with server.client() as api:
            sop_id = post_sop(api, SUBMIT_ALL)
            tags = [f"r{n}" for n in range(3)]
            runs = {tag: start_run(api, sop_id, {"base": site_counter.url, "run_tag": tag}) for tag in tags}
        for _ in range(3):
            time.sleep(rng.uniform(0.4, 1.6))
            server.stop(kill=True)
            kills += 1
            server = ServerProcess(tmp_path / "data", concurrency=4, database_url=database_url)
            server.port = server.port  # a fresh port each time: the old socket may linger
            server.start()
        with server.client() as api:
            finished = {tag: wait_run(api, run_id, "completed", timeout=90) for tag, run_id in runs.items()}
            for tag, run in finished.items():
                assert run["outputs"] == {"done": [f"{tag}-{item}" for item in ITEMS]}  # as uninterrupted
                assert all(step["status"] == "completed" for step in run["steps"] if step["key"] != "each")
                seqs = [e["seq"] for e in api.get(f"/api/runs/{runs[tag]}/events").json()["events"]]
                assert seqs == list(range(1, len(seqs) + 1))
    finally:
        server.stop(kill=True)
    expected = {f"{tag}-{item}" for tag in tags for item in ITEMS}
    assert set(site_counter.submissions) == expected
    # a completed step never runs again; only a step in flight at a kill may (at least once): at most one
    # extra submission per run per kill
    extra = sum(site_counter.submissions.values()) - len(expected)
    assert extra <= kills * len(tags)
    assert max(site_counter.submissions.values()) <= 1 + kills


PAY = """
sop: 1
id: SOP_ID
inputs: {base: {}}
steps:
  - {id: before, action: log, message: ready}
  - {id: pay, action: http, url: "{{ base }}/slow?tag=pay-once", inputs: [base], idempotent: false, timeout: 20s}
  - {id: after, action: log, message: paid}
"""


@both_databases
def test_a_non_idempotent_step_interrupted_is_not_repeated(tmp_path, site_counter, database_url):
    server = ServerProcess(tmp_path / "data", database_url=database_url).start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, PAY), {"base": site_counter.url})
            wait_for(lambda: site_counter.slow_calls["pay-once"] == 1, timeout=20)
        server.stop(kill=True)
        server = ServerProcess(tmp_path / "data", database_url=database_url).start()
        with server.client() as api:
            run = wait_run(api, run_id, "paused", timeout=30)
            assert run["waiting"]["kind"] == "failed" and run["waiting"]["key"] == "pay"
            assert "interrupted during a non-idempotent step" in run["waiting"]["reason"]
            pay = next(s for s in run["steps"] if s["key"] == "pay")
            assert pay["status"] == "failed" and pay["error"]["kind"] == "interrupted"
            time.sleep(1)
            assert site_counter.slow_calls["pay-once"] == 1  # not called again on its own
            assert api.post(f"/api/runs/{run_id}/steps/pay/skip").status_code == 200  # a person decides
            run = wait_run(api, run_id, "completed", timeout=30)
            assert {s["key"]: s["status"] for s in run["steps"]} == {
                "before": "completed",
                "pay": "skipped",
                "after": "completed",
            }
        assert site_counter.slow_calls["pay-once"] == 1
    finally:
        server.stop(kill=True)


async def run_and_kill_chromium(store, host, loaded, key: str, marker: str, settle: float = 0.0):
    """Starts a run, waits until step `key` is running, kills the Chromium that carries the marker (and only
    it), and returns the run's id and outcome."""
    runner = Runner(store, host)
    run = await runner.create_run(loaded, {})
    task = asyncio.ensure_future(runner.execute(run.id, loaded, {}))

    def running() -> bool:
        return any(s.key == key and s.status == "running" for s in store.steps(run.id))

    await asyncio.to_thread(wait_for, running, 20)
    await asyncio.sleep(settle)
    subprocess.run(["pkill", "-KILL", "-f", marker.lstrip("-")], check=True)
    return run.id, await asyncio.wait_for(task, 60)


@both_databases
async def test_chromium_killed_mid_run_relaunches_and_completes(store, site_counter):
    marker = f"--sop-fault-test={uuid.uuid4().hex}"
    host = BrowserHost(extra_args=[marker])
    await host.start()
    try:
        loaded = load_sop(f"""
sop: 1
id: crash
outputs: [shown]
steps:
  - {{id: open, action: navigate, url: "{site_counter.url}/wizard"}}
  - {{id: tag, action: fill, selector: "#tag", value: survivor}}
  - {{id: go, action: click, selector: "#go"}}
  - {{id: nap, action: sleep, duration: 1500ms}}
  - {{id: read, action: extract, selector: "#done", outputs: {{shown: text}}}}
""")
        run_id, outcome = await run_and_kill_chromium(store, host, loaded, "nap", marker)
        run = store.run(run_id)
        assert outcome.status == RunStatus.COMPLETED, outcome.error
        assert outcome.outputs == {"shown": "survivor"}
        assert host.launches == 2
        read = next(s for s in store.steps(run.id) if s.key == "read")
        assert read.status == "completed" and read.attempts <= 2  # the lost context is noticed, or hit and retried
        assert site_counter.submissions["survivor"] == 1
    finally:
        await host.close()


async def test_a_database_locked_for_a_moment_does_not_fail_a_run(run_sop, store, data_dir):
    locked = threading.Event()

    def hold_the_lock() -> None:
        connection = sqlite3.connect(data_dir / "sop.db", timeout=10, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(1.5)
        connection.execute("COMMIT")
        connection.close()

    text = """
sop: 1
id: locked
outputs: [n]
steps:
  - {id: a, action: sleep, duration: 300ms}
  - {id: b, action: set, values: {n: 1}}
  - {id: c, action: sleep, duration: 100ms}
  - {id: d, action: log, message: done}
"""
    holder = threading.Thread(target=hold_the_lock)
    running = asyncio.ensure_future(run_sop(text))
    await asyncio.sleep(0.1)
    holder.start()
    await asyncio.to_thread(locked.wait, 5)
    outcome = await asyncio.wait_for(running, 30)
    holder.join()
    assert outcome.status == RunStatus.COMPLETED and outcome.outputs == {"n": 1}


@both_databases
async def test_chromium_killed_during_a_browser_step_retries_that_step(store, site_counter):
    marker = f"--sop-fault-test={uuid.uuid4().hex}"
    host = BrowserHost(extra_args=[marker])
    await host.start()
    try:
        loaded = load_sop(f"""
sop: 1
id: crash-in-step
outputs: [title]
steps:
  - {{id: open, action: navigate, url: "{site_counter.url}/done?tag=kept"}}
  - id: slow
    action: evaluate
    script: "() => new Promise(done => setTimeout(() => done(document.querySelector('#done').textContent), 2000))"
    outputs: {{title: value}}
""")
        run_id, outcome = await run_and_kill_chromium(store, host, loaded, "slow", marker, settle=0.3)
        run = store.run(run_id)
        assert outcome.status == RunStatus.COMPLETED, outcome.error
        assert outcome.outputs == {"title": "kept"}  # the page came back from the checkpoint
        slow = next(s for s in store.steps(run.id) if s.key == "slow")
        assert slow.attempts == 2  # the browser error is retried once even with the default single attempt
        retried = [e for e in store.events(run.id) if e.type == "step.retried"]
        assert retried[0].data["error"]["kind"] == "browser"
    finally:
        await host.close()
