"""Run and step controls through the API of a real server: each one, and the 409 when it does not fit."""

from __future__ import annotations

import pytest

from tests.conftest import ALICE, both_databases, post_sop, start_run, wait_for, wait_run
from tests.loopback import LoopbackServer, Reply, Request, json_reply

STEPS = """
sop: 1
id: SOP_ID
outputs: [last]
steps:
  - {id: one, action: sleep, duration: 150ms}
  - {id: two, action: sleep, duration: 150ms}
  - {id: three, action: sleep, duration: 150ms}
  - {id: four, action: set, values: {last: done}}
"""

pytestmark = both_databases


def status_of(run: dict) -> dict[str, str]:
    return {s["key"]: s["status"] for s in run["steps"]}


class Switch:
    """A local endpoint that answers 500 until a test flips it, and counts its hits."""

    def __init__(self) -> None:
        self.status = 500
        self.hits = 0
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/"

    def _answer(self, request: Request) -> Reply:
        self.hits += 1
        return json_reply({"hits": self.hits}, self.status)


@pytest.fixture
def switch():
    endpoint = Switch()
    with endpoint.server:
        yield endpoint


def test_pause_stops_after_the_step_in_flight_and_resume_goes_on(api, gate):
    held = STEPS.replace("{id: one, action: sleep, duration: 150ms}", f'{{id: one, action: http, url: "{gate.url}"}}')
    run_id = start_run(api, post_sop(api, held))
    assert gate.called.wait(60)  # step one is in flight until the gate opens
    assert api.post(f"/api/runs/{run_id}/pause").status_code == 200
    gate.open.set()
    run = wait_run(api, run_id, "paused")
    assert run["waiting"]["kind"] == "pause" and run["waiting"]["key"] == "two"
    assert status_of(run) == {"one": "completed", "two": "pending", "three": "pending", "four": "pending"}
    assert api.post(f"/api/runs/{run_id}/pause").status_code == 409
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 200
    assert wait_run(api, run_id, "completed")["outputs"] == {"last": "done"}


def test_step_runs_exactly_one_more_step(api):
    run_id = start_run(api, post_sop(api, STEPS), breakpoints=["two"])
    run = wait_run(api, run_id, "paused")
    assert run["waiting"] == {"reason": "breakpoint before two", "key": "two", "kind": "breakpoint", "form": None}
    assert api.post(f"/api/runs/{run_id}/step").status_code == 200
    run = wait_for(
        lambda: (
            (r := api.get(f"/api/runs/{run_id}").json())["status"] == "paused" and r["waiting"]["key"] == "three" and r
        )
    )
    assert status_of(run) == {"one": "completed", "two": "completed", "three": "pending", "four": "pending"}
    api.post(f"/api/runs/{run_id}/resume")
    wait_run(api, run_id, "completed")


def test_cancel_stops_promptly(api):
    sop_id = post_sop(
        api,
        """
sop: 1
id: SOP_ID
steps:
  - {id: long, action: sleep, duration: 30s, timeout: 60s}
  - {id: never, action: log, message: x}
""",
    )
    run_id = start_run(api, sop_id)
    wait_for(lambda: status_of(api.get(f"/api/runs/{run_id}").json()).get("long") == "running")
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    run = wait_run(api, run_id, "cancelled", timeout=5)
    assert status_of(run)["never"] == "pending"
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 409
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 409


def test_skip_a_pending_step(api):
    run_id = start_run(api, post_sop(api, STEPS), breakpoints=["two"])
    wait_run(api, run_id, "paused")
    assert api.post(f"/api/runs/{run_id}/steps/three/skip").status_code == 200
    assert api.post(f"/api/runs/{run_id}/steps/one/skip").status_code == 409  # completed already
    api.post(f"/api/runs/{run_id}/resume")
    run = wait_run(api, run_id, "completed")
    assert status_of(run) == {"one": "completed", "two": "completed", "three": "skipped", "four": "completed"}
    assert run["steps"][2]["reason"] == "skipped by a person"


def test_skip_the_step_a_breakpoint_waits_before(api):
    run_id = start_run(api, post_sop(api, STEPS), breakpoints=["two"])
    wait_run(api, run_id, "paused")
    api.post(f"/api/runs/{run_id}/steps/two/skip")
    run = wait_for(
        lambda: (
            (r := api.get(f"/api/runs/{run_id}").json())["status"] == "paused" and r["waiting"]["key"] == "three" and r
        )
    )
    assert status_of(run)["two"] == "skipped"
    api.post(f"/api/runs/{run_id}/resume")
    wait_run(api, run_id, "completed")


def test_retry_a_failed_step_of_a_paused_run(api, switch):
    sop_id = post_sop(
        api,
        f"""
sop: 1
id: SOP_ID
outputs: [hits]
steps:
  - id: call
    action: http
    url: "{switch.url}"
    expect_status: 200
    on_error: pause
    outputs: {{hits: "{{{{ result.json.hits }}}}"}}
  - {{id: after, action: log, message: went on}}
""",
    )
    run_id = start_run(api, sop_id)
    run = wait_run(api, run_id, "paused")
    assert run["waiting"]["kind"] == "failed" and run["waiting"]["key"] == "call"
    assert status_of(run)["call"] == "failed"
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 409  # decide first: retry or skip
    switch.status = 200  # the site is fixed
    assert api.post(f"/api/runs/{run_id}/steps/call/retry").status_code == 200
    run = wait_run(api, run_id, "completed")
    assert run["outputs"] == {"hits": 2}
    assert run["steps"][0]["attempts"] == 2


def test_retry_a_failed_step_of_a_failed_run(api, switch):
    sop_id = post_sop(
        api,
        f"""
sop: 1
id: SOP_ID
outputs: [first, hits]
steps:
  - {{id: first, action: set, values: {{first: 1}}}}
  - {{id: call, action: http, url: "{switch.url}", expect_status: 200, outputs: {{hits: "{{{{ result.json.hits }}}}"}}}}
""",
    )
    run_id = start_run(api, sop_id)
    wait_run(api, run_id, "failed")
    assert api.post(f"/api/runs/{run_id}/steps/first/retry").status_code == 409  # it did not fail
    switch.status = 200
    assert api.post(f"/api/runs/{run_id}/steps/call/retry").status_code == 200
    run = wait_run(api, run_id, "completed")
    assert run["outputs"] == {"first": 1, "hits": 2}


def test_rerun_a_completed_step_and_what_needs_it(api, switch):
    switch.status = 200
    sop_id = post_sop(
        api,
        f"""
sop: 1
id: SOP_ID
outputs: [hits, seen, other]
steps:
  - {{id: other, action: set, values: {{other: 7}}}}
  - {{id: call, action: http, url: "{switch.url}", outputs: {{hits: "{{{{ result.json.hits }}}}"}}}}
  - {{id: show, action: set, inputs: [hits], values: {{seen: "{{{{ hits }}}}"}}}}
""",
    )
    run_id = start_run(api, sop_id)
    assert wait_run(api, run_id, "completed")["outputs"] == {"hits": 1, "seen": 1, "other": 7}
    assert api.post(f"/api/runs/{run_id}/steps/nope/rerun").status_code == 404
    assert api.post(f"/api/runs/{run_id}/steps/call/rerun").status_code == 200
    run = wait_for(
        lambda: (
            (r := api.get(f"/api/runs/{run_id}").json())["status"] == "completed" and r["outputs"]["hits"] == 2 and r
        )
    )
    assert run["outputs"] == {"hits": 2, "seen": 2, "other": 7}
    assert switch.hits == 2


def test_breakpoint_in_the_document_and_toggled_by_api(api):
    sop_id = post_sop(
        api,
        STEPS.replace(
            "{id: three, action: sleep, duration: 150ms}",
            "{id: three, action: sleep, duration: 150ms, pause_before: true}",
        ),
    )
    run_id = start_run(api, sop_id)
    assert api.post(f"/api/runs/{run_id}/steps/four/breakpoint", json={"on": True}).status_code == 200
    assert api.post(f"/api/runs/{run_id}/steps/nine/breakpoint", json={"on": True}).status_code == 404
    assert wait_run(api, run_id, "paused")["waiting"]["key"] == "three"
    api.post(f"/api/runs/{run_id}/resume")
    assert wait_for(
        lambda: (r := api.get(f"/api/runs/{run_id}").json())["status"] == "paused" and r["waiting"]["key"] == "four"
    )
    api.post(f"/api/runs/{run_id}/steps/four/breakpoint", json={"on": False})
    api.post(f"/api/runs/{run_id}/resume")
    wait_run(api, run_id, "completed")
    assert api.post(f"/api/runs/{run_id}/steps/four/breakpoint", json={"on": True}).status_code == 409


def test_refused_controls_change_nothing(api):
    run_id = start_run(api, post_sop(api, STEPS))
    run = wait_run(api, run_id, "completed")
    for path in (
        "pause",
        "resume",
        "step",
        "cancel",
        "rollback",
        "steps/one/retry",
        "steps/one/skip",
        "steps/one/submit",
    ):
        reply = api.post(f"/api/runs/{run_id}/{path}")
        assert reply.status_code == 409, path
        assert reply.json()["error"]
    assert api.get(f"/api/runs/{run_id}").json() == run
    assert api.post(f"/api/runs/{run_id}/fly").status_code == 404
    assert api.post("/api/runs/nope/pause").status_code == 404


HUMAN = """
sop: 1
id: SOP_ID
outputs: [code, count, approved]
steps:
  - id: ask
    action: input
    message: Type the code from the letter
    fields:
      code: {type: string, secret: true}
      count: {type: integer, label: "How many?"}
  - {id: check, action: approval, message: "Go on?"}
"""


def test_human_input_and_approval(api, server):
    run_id = start_run(api, post_sop(api, HUMAN))
    run = wait_run(api, run_id, "paused")
    assert run["waiting"]["kind"] == "input" and run["waiting"]["key"] == "ask"
    assert set(run["waiting"]["form"]["fields"]) == {"code", "count"}
    assert run["controls"] == ["cancel"]  # only the form answers it
    assert next(s for s in run["steps"] if s["key"] == "ask")["controls"] == ["submit"]
    bad = api.post(f"/api/runs/{run_id}/steps/ask/submit", json={"values": {"code": "x", "count": "many"}})
    assert (bad.status_code, bad.json()["error"]) == (422, "'count' must be integer")
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 409
    with server.client(ALICE) as alice:
        reply = alice.post(f"/api/runs/{run_id}/steps/ask/submit", json={"values": {"code": "s3cr3t-code", "count": 3}})
    assert reply.status_code == 200
    run = wait_for(
        lambda: (r := api.get(f"/api/runs/{run_id}").json())["waiting"] and r["waiting"]["kind"] == "approval" and r
    )
    api.post(f"/api/runs/{run_id}/steps/check/submit", json={"values": {"approved": True}})
    run = wait_run(api, run_id, "completed")
    assert run["outputs"] == {"code": "***", "count": 3, "approved": True}
    assert "s3cr3t-code" not in api.get(f"/api/runs/{run_id}/events").text
    audit = api.get(f"/api/runs/{run_id}/audit").json()["audit"]
    assert [(a["who"], a["action"], a["target"]) for a in audit] == [
        ("alice", "submit", "ask"),
        ("admin", "submit", "check"),
    ]


def test_a_rejected_approval_fails_the_step(api):
    sop_id = post_sop(
        api,
        """
sop: 1
id: SOP_ID
steps:
  - {id: check, action: approval, message: "Go on?"}
""",
    )
    run_id = start_run(api, sop_id)
    wait_run(api, run_id, "paused")
    api.post(f"/api/runs/{run_id}/steps/check/submit", json={"values": {"approved": False, "comment": "not today"}})
    run = wait_run(api, run_id, "failed")
    assert run["steps"][0]["error"]["message"] == "rejected by a person: not today"
