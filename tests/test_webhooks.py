"""Webhooks of a real server process: signed deliveries to a receiver on loopback, retried from the outbox
(also by a new process after a restart), reported when they keep failing, never holding up a run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sop_engine.webhooks import next_wait, signature
from tests.conftest import (
    BOB,
    VIC,
    ServerProcess,
    both_databases,
    post_sop,
    readme_section,
    start_run,
    wait_for,
    wait_run,
)
from tests.loopback import LoopbackServer, Reply, Request

ROOT = Path(__file__).resolve().parent.parent
FAST = {
    "SOP_WEBHOOK_BACKOFF_MS": "20",
    "SOP_WEBHOOK_BACKOFF_MAX_MS": "100",
    "SOP_WEBHOOK_POLL_MS": "50",
    "SOP_WEBHOOK_MAX_ATTEMPTS": "3",
    "SOP_EGRESS_DENY": "denied.example",
}
SECRET_SOP = """
sop: 1
id: SOP_ID
inputs:
  password: {type: string, secret: true}
  n: {type: integer, default: 2}
outputs: [echoed, double]
steps:
  - {id: use, action: set, inputs: [password, n], values: {echoed: "pw={{ password }}", double: "{{ n * 2 }}"}}
"""
PLAIN_SOP = """
sop: 1
id: SOP_ID
steps:
  - {id: say, action: log, message: hello}
"""


def readme_verify() -> Any:
    """The verification snippet of the README's Webhooks section, as written there."""
    text = readme_section("### Webhooks")
    [code] = re.findall(r"```python\n(.*?)```", text, re.S)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope["verify"]


class Receiver:
    """A webhook endpoint on loopback: answers POST /hook with the statuses scripted in `answers` (then 200),
    `hold` makes it wait until released; GET /fail always answers 500 (a step to fail)."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.always: int | None = None
        self.hold = threading.Event()
        self.hold.set()
        self.held = threading.Event()
        self.got: list[Request] = []
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/hook"

    def _answer(self, request: Request) -> Reply:
        if request.path == "/fail":
            return Reply(500, b"down")
        with self._lock:
            self.got.append(request)
            status = self.always or (self.answers.pop(0) if self.answers else 200)
        if not self.hold.is_set():
            self.held.set()
            self.hold.wait(60)
        return Reply(status, b"ok")

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(r.body) for r in list(self.got)]
        return [b for b in found if event is None or b["event"] == event]

    def close(self) -> None:
        self.hold.set()
        self.server.close()


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("hooks") / "data", env=FAST).start()
    yield process
    process.stop()


@pytest.fixture
def api(hook_server: ServerProcess) -> Iterator[Any]:
    with hook_server.client() as client:
        yield client
        for hook in client.get("/api/webhooks").json()["webhooks"]:  # a server-wide one would hear other tests
            client.delete(f"/api/webhooks/{hook['id']}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def add_hook(api: Any, url: str, scope: str = "server", **more: Any) -> dict[str, Any]:
    reply = api.post("/api/webhooks", json={"url": url, "scope": scope, **more})
    assert reply.status_code == 201, reply.text
    return reply.json()


def deliveries(api: Any, run_id: str, settled: bool = True) -> list[dict[str, Any]]:
    """The run's deliveries once there are some and (with `settled`) none is pending any more."""

    def ready() -> list[dict[str, Any]] | None:
        found = api.get(f"/api/runs/{run_id}/deliveries").json()["deliveries"]
        if not found or (settled and any(d["status"] == "pending" for d in found)):
            return None
        return found

    return wait_for(ready, timeout=30)


def headers_of(request: Request) -> dict[str, str]:
    return {name: request.headers[name] for name in ("X-SOP-Timestamp", "X-SOP-Signature", "X-SOP-Delivery")}


def test_a_completed_run_sends_one_signed_delivery_with_its_outputs_masked(api, hook_server, receiver):
    sop_id = post_sop(api, SECRET_SOP, "hook")
    hook = add_hook(api, receiver.url, sop_id)
    assert hook["secret"].startswith("whsec_") and hook["events"][0] == "run.completed"
    run_id = start_run(api, sop_id, {"password": "hunter2-secret", "n": 21})
    wait_run(api, run_id, "completed")
    [delivery] = deliveries(api, run_id)
    assert (delivery["status"], delivery["attempts"], delivery["event"]) == ("delivered", 1, "run.completed")
    assert [(a["attempt"], a["code"]) for a in delivery["log"]] == [(1, 200)]
    [request] = receiver.got
    verify, seen = readme_verify(), set()
    assert verify(hook["secret"], headers_of(request), request.body, seen)
    assert not verify(hook["secret"], headers_of(request), request.body, seen)  # a replay of the same delivery
    assert not verify("whsec_other", headers_of(request), request.body, set())
    body = json.loads(request.body)
    assert body["run"]["outputs"] == {"echoed": "***", "double": 42} and body["run"]["status"] == "completed"
    assert body["delivery"] == request.headers["X-SOP-Delivery"] == delivery["id"]
    assert body["links"]["api"] == f"/api/runs/{run_id}"
    assert b"hunter2-secret" not in request.body
    for path in hook_server.data.glob("sop.db*"):  # nor the secret of the webhook, in clear
        assert hook["secret"].encode() not in path.read_bytes()
    assert "secret" not in api.get("/api/webhooks").json()["webhooks"][0]


def test_a_receiver_that_answers_500_twice_gets_three_attempts_and_one_delivery(api, receiver):
    sop_id = post_sop(api, PLAIN_SOP, "hook")
    hook = add_hook(api, receiver.url, sop_id)
    receiver.answers = [500, 500]
    run_id = start_run(api, sop_id)
    [delivery] = deliveries(api, run_id)
    assert delivery["status"] == "delivered"
    assert [(a["attempt"], a["code"]) for a in delivery["log"]] == [(1, 500), (2, 500), (3, 200)]
    assert len({r.headers["X-SOP-Delivery"] for r in receiver.got}) == 1 and len(receiver.got) == 3
    verify = readme_verify()
    assert all(verify(hook["secret"], headers_of(r), r.body, set()) for r in receiver.got)
    [shown] = api.get("/api/webhooks").json()["webhooks"]
    assert (shown["failures"], shown["last_status"]) == (0, "200")


def test_an_endpoint_that_keeps_failing_is_reported_and_never_holds_up_runs(api, hook_server, receiver):
    sop_id = post_sop(api, PLAIN_SOP, "hook")
    hook = add_hook(api, receiver.url, sop_id)
    receiver.always = 503
    receiver.hold.clear()  # the endpoint hangs on its first call
    first = start_run(api, sop_id)
    wait_run(api, first, "completed")
    assert receiver.held.wait(30)
    second = start_run(api, sop_id)
    wait_run(api, second, "completed")  # while the first run's notification is still in flight
    assert api.get(f"/api/runs/{first}/deliveries").json()["deliveries"][0]["status"] == "pending"
    receiver.hold.set()
    for run_id in (first, second):
        [delivery] = deliveries(api, run_id)
        assert (delivery["status"], delivery["attempts"], delivery["last_code"]) == ("failed", 3, 503)
    [shown] = api.get("/api/webhooks").json()["webhooks"]
    assert (shown["id"], shown["failures"], shown["last_status"]) == (hook["id"], 2, "503")
    log = hook_server.log.read_text()
    assert f"webhook {hook['id']}: delivery" in log and "failed after 3 attempt(s): answered 503" in log


def test_a_webhook_hears_its_own_sop_or_the_whole_server(api, receiver):
    mine, other = post_sop(api, PLAIN_SOP, "hook"), post_sop(api, PLAIN_SOP, "hook")
    scoped = add_hook(api, receiver.url + "?only=mine", mine)
    everything = add_hook(api, receiver.url + "?all", "server", events=["run.completed"])
    heard_other = start_run(api, other)
    assert [d["webhook_id"] for d in deliveries(api, heard_other)] == [everything["id"]]
    heard_mine = start_run(api, mine)
    assert sorted(d["webhook_id"] for d in deliveries(api, heard_mine)) == sorted([scoped["id"], everything["id"]])
    paths = sorted(r.path for r in receiver.got)
    assert paths == ["/hook?all", "/hook?all", "/hook?only=mine"]


def test_a_run_paused_on_a_failed_step_and_then_cancelled_notifies_both(api, receiver):
    sop_id = post_sop(
        api,
        f"""
sop: 1
id: SOP_ID
steps:
  - {{id: call, action: http, url: "{receiver.server.url}/fail", expect_status: 200, on_error: pause}}
""",
        "hook",
    )
    add_hook(api, receiver.url, sop_id)
    run_id = start_run(api, sop_id)
    wait_run(api, run_id, "paused")
    [escalated] = deliveries(api, run_id)
    assert escalated["event"] == "run.escalated" and escalated["status"] == "delivered"
    assert escalated["body"]["run"]["waiting"]["key"] == "call"
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    wait_for(lambda: len(deliveries(api, run_id)) == 2, timeout=30)
    assert [b["event"] for b in receiver.bodies()] == ["run.escalated", "run.cancelled"]


def test_a_finished_batch_notifies_once(api, receiver):
    sop_id = post_sop(api, PLAIN_SOP, "hook")
    add_hook(api, receiver.url, sop_id, events=["batch.finished"])
    reply = api.post("/api/batches", json={"sop_id": sop_id, "rows": [{}, {}, {}]})
    assert reply.status_code == 201, reply.text
    batch_id = reply.json()["id"]
    [body] = wait_for(lambda: receiver.bodies("batch.finished"), timeout=30)
    assert body["batch"]["id"] == batch_id and body["batch"]["counts"] == {"completed": 3}
    assert api.get(f"/api/batches/{batch_id}").json()["status"] == "completed"
    assert len(receiver.bodies()) == 1


def test_webhooks_are_managed_by_admins_and_bad_urls_get_422(api, hook_server, receiver):
    for token in (BOB, VIC):
        with hook_server.client(token) as other:
            assert other.post("/api/webhooks", json={"url": receiver.url}).status_code == 403
            assert other.get("/api/webhooks").status_code == 403
    hostile = {
        "http://169.254.169.254/latest/meta-data": "egress policy",
        "http://denied.example/hook": "denied.example is denied by",
        "http://metadata.google.internal/x": "egress policy",
        "ftp://127.0.0.1/x": "only http: and https:",
        "file:///etc/passwd": "only http: and https:",
        "http://user:pw@127.0.0.1/x": "credentials",
        "http://127.0.0.1/x#frag": "fragment",
        "http://127.0.0.1/a b": "spaces",
        "http://" + "a" * 2100 + ".example/": "does not fit",
        "": "empty",
    }
    for url, why in hostile.items():
        reply = api.post("/api/webhooks", json={"url": url})
        assert reply.status_code == 422 and why in reply.text, (url, reply.text)
    for body in ({"url": receiver.url, "scope": "no-such-sop"}, {"url": receiver.url, "events": ["run.exploded"]}):
        assert api.post("/api/webhooks", json=body).status_code == 422
    assert api.post("/api/webhooks", json={"url": receiver.url, "extra": 1}).status_code == 422
    assert api.post("/api/webhooks", json=[1]).status_code == 422
    hook = add_hook(api, receiver.url)
    ping = api.post(f"/api/webhooks/{hook['id']}/test")
    assert ping.status_code == 202
    wait_for(lambda: receiver.bodies("ping"))
    assert api.delete(f"/api/webhooks/{hook['id']}").json() == {"deleted": hook["id"]}
    assert api.delete(f"/api/webhooks/{hook['id']}").status_code == 404
    assert api.post("/api/webhooks/nope/test").status_code == 404
    assert api.get("/api/runs/nope/deliveries").status_code == 404


def test_a_batch_cancelled_before_any_row_ran_is_told_as_cancelled(tmp_path, receiver):
    server = ServerProcess(tmp_path / "data", concurrency=0, env=FAST).start()  # its rows stay queued
    try:
        with server.client() as api:
            sop_id = post_sop(api, PLAIN_SOP, "hook")
            add_hook(api, receiver.url, sop_id, events=["batch.finished"])
            batch_id = api.post("/api/batches", json={"sop_id": sop_id, "rows": [{}, {}]}).json()["id"]
            assert api.post(f"/api/batches/{batch_id}/cancel").status_code == 200
            [body] = wait_for(lambda: receiver.bodies("batch.finished"), timeout=30)
            assert api.get(f"/api/batches/{batch_id}").json()["status"] == "cancelled"
    finally:
        server.stop()
    assert body["batch"]["id"] == batch_id
    assert (body["batch"]["status"], body["batch"]["counts"]) == ("cancelled", {"cancelled": 2})


@both_databases
def test_deliveries_left_in_the_outbox_are_sent_by_the_next_server(tmp_path, database_url, receiver):
    env = {**FAST, "SOP_WEBHOOK_MAX_ATTEMPTS": "1000", "SOP_WEBHOOK_BACKOFF_MAX_MS": "50"}
    first = ServerProcess(tmp_path / "data", env=env, database_url=database_url).start()
    receiver.always = 500  # down while the first server runs
    try:
        with first.client() as api:
            sop_id = post_sop(api, PLAIN_SOP, "hook")
            hook = add_hook(api, receiver.url, sop_id)
            run_id = start_run(api, sop_id)
            wait_for(lambda: deliveries(api, run_id, settled=False)[0]["attempts"] >= 2)
    finally:
        first.stop()
    receiver.always = None
    second = ServerProcess(tmp_path / "data", env=env, database_url=database_url).start()
    try:
        with second.client() as api:
            [delivery] = deliveries(api, run_id)
    finally:
        second.stop()
    assert delivery["status"] == "delivered" and delivery["log"][-1]["code"] == 200
    assert [a["code"] for a in delivery["log"][:-1]] == [500] * (len(delivery["log"]) - 1)
    assert readme_verify()(hook["secret"], headers_of(receiver.got[-1]), receiver.got[-1].body, set())


def test_a_command_line_run_is_told_by_the_next_server_on_its_database(tmp_path, receiver):
    data = tmp_path / "data"
    first = ServerProcess(data, env=FAST).start()
    try:
        with first.client() as api:
            hook = add_hook(api, receiver.url)
    finally:
        first.stop()
    sop = tmp_path / "say.yaml"
    sop.write_text(PLAIN_SOP.replace("SOP_ID", "told-later"))
    env = {**os.environ, "SOP_DATA_DIR": str(data)}
    env.pop("SOP_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "sop_engine", "run", str(sop), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert not receiver.got  # no process sends from the outbox yet
    second = ServerProcess(data, env=FAST).start()
    try:
        with second.client() as api:
            [delivery] = deliveries(api, run_id)
    finally:
        second.stop()
    assert (delivery["event"], delivery["status"]) == ("run.completed", "delivered")
    assert readme_verify()(hook["secret"], headers_of(receiver.got[-1]), receiver.got[-1].body, set())


def test_the_wait_between_attempts_grows_and_the_signature_covers_timestamp_and_body():
    waits = [next_wait(n, 1000, 60_000).total_seconds() for n in range(1, 12)]
    assert all(1 <= w <= 60 for w in waits) and waits[-1] == 60 and waits[0] < 2
    assert signature("s", 1, b"{}") != signature("s", 2, b"{}") != signature("s", 1, b"{ }")
    assert signature("s", 1, b"{}").startswith("sha256=") and len(signature("s", 1, b"{}")) == 71


async def test_the_pages_add_a_webhook_and_show_a_run_s_notifications(browser_host, api, hook_server, receiver):
    from playwright.async_api import expect

    from tests.conftest import sign_in

    sop_id = post_sop(api, PLAIN_SOP, "hook")
    context = await browser_host.new_context()
    page = await context.new_page()
    try:
        await sign_in(page, hook_server.url)
        await page.click("nav >> text=Webhooks")
        await page.fill("input[name=url]", receiver.url)
        await page.fill("input[name=scope]", sop_id)
        await page.click("#webhook-form button[type=submit]")
        await expect(page.locator("#new-secret")).to_contain_text("whsec_", timeout=15000)
        secret = await page.locator("#new-secret").text_content()
        row = page.locator("#webhooks tbody tr")
        await expect(row).to_contain_text(receiver.url, timeout=15000)
        run_id = start_run(api, sop_id)
        await page.goto(f"{hook_server.url}/runs/{run_id}")
        attempts = page.locator("#deliveries tbody tr[data-status=delivered]")
        await expect(attempts).to_contain_text("#1 200", timeout=20000)
        await expect(attempts).to_contain_text("run.completed")
        assert readme_verify()(secret, headers_of(receiver.got[0]), receiver.got[0].body, set())
        await page.goto(f"{hook_server.url}/webhooks")
        await page.fill("input[name=url]", "http://169.254.169.254/")
        await page.click("#webhook-form button[type=submit]")
        await expect(page.locator("#webhook-result")).to_contain_text("egress policy", timeout=15000)
        await page.click("#webhooks tbody tr >> text=Remove")
        await expect(page.locator("#no-webhooks")).to_be_visible(timeout=15000)
        assert api.get("/api/webhooks").json()["webhooks"] == []
    finally:
        await context.close()


@both_databases
def test_two_processes_never_claim_one_delivery_at_once(store):
    from datetime import timedelta

    from sop_engine.events import utcnow
    from sop_engine.store import Store
    from sop_engine.tables import WebhookRow

    store.create_webhook(
        WebhookRow(id="wh_1", url="http://127.0.0.1:9/x", scope="server", events=[], secret="s", created_at=utcnow())
    )
    delivery = store.notify_test("wh_1")
    other = Store(store.url)  # another process's store, on the same database
    try:
        assert store.due_deliveries() == other.due_deliveries() == [delivery]  # both read it as due
        [claimed] = store.take_deliveries([delivery], lease=timedelta(seconds=60))
        assert claimed.id == delivery and other.take_deliveries([delivery]) == [] and other.claim_deliveries() == []
        store.record_attempt(claimed, {"attempt": 1, "code": 500, "error": "answered 500"}, timedelta(0))
        [again] = other.claim_deliveries(lease=timedelta(0))  # its sender died: due again when its lease ends
        assert (again.id, again.attempts) == (delivery, 1) and len(store.claim_deliveries()) == 1
    finally:
        other.close()


def test_the_egress_policy_is_checked_again_when_sending(tmp_path, receiver):
    """A name the policy cannot judge when the webhook is added (no allow list: names are not resolved then)
    is refused at send time by the address it resolves to, as a DNS change would make it."""
    env = {**FAST, "SOP_EGRESS_DENY": "127.0.0.0/8,::1"}
    server = ServerProcess(tmp_path / "data", env=env).start()
    try:
        with server.client() as api:
            sop_id = post_sop(api, PLAIN_SOP, "hook")
            assert api.post("/api/webhooks", json={"url": receiver.url, "scope": sop_id}).status_code == 422
            port = receiver.url.split(":")[2].split("/")[0]
            add_hook(api, f"http://localhost:{port}/hook", sop_id)
            [delivery] = deliveries(api, start_run(api, sop_id))
    finally:
        server.stop()
    assert (delivery["status"], delivery["attempts"], delivery["last_code"]) == ("failed", 1, None)
    assert "egress policy" in delivery["last_error"] and receiver.got == []
