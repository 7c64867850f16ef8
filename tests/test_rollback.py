"""Rollbacks: a late failure undoes what the run did, checked on the booking fixture site's own side (real
Chromium); per loop iteration; a failing compensation; a crash in the middle; `escalate` and the rollback
control through the API and on the page; documents that misuse `compensate`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import expect

from sop_engine.document import DocumentError, load_sop
from sop_engine.rollback import ESCALATED
from sop_engine.states import RunStatus
from sop_engine.store import Store
from tests.booking_site import BookingSite
from tests.conftest import (
    VIC,
    ServerProcess,
    both_databases,
    post_sop,
    readme_section,
    start_run,
    wait_for,
    wait_run,
)

expect.set_options(timeout=15000)


def readme_example() -> str:
    """The README's rollback example (fenced `yaml rollback`: it ends failed on purpose, against the booking site)."""
    return re.search(
        r"```yaml rollback\n(.*?)```", readme_section("### Rollback: compensations that undo what a run did"), re.S
    ).group(1)


BOOKING = readme_example()


@pytest.fixture
def booking() -> Iterator[BookingSite]:
    with BookingSite() as site:
        yield site


def rows(store: Any, run_id: str) -> dict[str, Any]:
    return {row.key: row for row in store.steps(run_id)}


@both_databases
async def test_readme_example_rolls_back(run_sop, store, booking):
    """A late failure: the charge is refunded, then the seat released (last completed first), on the site."""
    outcome = await run_sop(BOOKING, {"base": booking.url, "card": "4111111111111111"})
    assert outcome.status == RunStatus.FAILED
    assert outcome.error.startswith("step confirm failed: ")  # the first error comes first
    assert outcome.error.endswith("; rolled back: 4 compensations completed, 0 failed")
    # on the site's side: nothing is held, nothing is charged
    assert booking.held() == {}
    assert list(booking.charge_statuses().values()) == ["refunded"]
    charge, reservation = next(iter(booking.charge_statuses())), next(iter(booking.reservations))
    assert booking.calls == [f"refund {charge}", f"release {reservation}"]
    steps = rows(store, outcome.run_id)
    undo = [k for k in steps if k.startswith("undo.")]
    assert undo == ["undo.charge.open_charge", "undo.charge.refund", "undo.charge.refunded", "undo.reservation.release"]
    assert all(steps[k].status == "completed" for k in undo)
    assert steps["confirm"].status == "failed" and steps["undo.reservation.release"].inputs == {
        "base": booking.url,
        "reservation": reservation,
    }
    run = store.run(outcome.run_id)
    assert run.rollback["state"] == "done" and run.rollback["step"] == "confirm"
    assert (run.rollback["completed"], run.rollback["failed"], run.rollback["total"]) == (4, 0, 4)
    # the card (a secret) shows nowhere, not in the compensations' records either
    assert "4111111111111111" not in repr([(r.inputs, r.outputs, r.error) for r in steps.values()])


async def test_without_rollback_nothing_is_undone(run_sop, store, booking):
    """The same document with on_error: fail leaves the seat held and the card charged (the control case)."""
    text = BOOKING.replace("on_error: rollback", "on_error: fail")
    outcome = await run_sop(text, {"base": booking.url, "card": "4111"})
    assert outcome.status == RunStatus.FAILED and "rolled back" not in outcome.error
    assert list(booking.held()) == ["A1"] and list(booking.charge_statuses().values()) == ["charged"]
    assert not [k for k in rows(store, outcome.run_id) if k.startswith("undo.")]


LOOP = """
sop: 1
id: seats
inputs: {base: {type: string}}
defaults: {timeout: 10s}
steps:
  - id: seats
    action: loop
    for_each: ["A1", "A2", "A3"]
    as: seat
    steps:
      - {id: open, action: navigate, url: "{{ base }}/book?seat={{ seat }}", inputs: [base, seat]}
      - {id: reserve, action: click, selector: "#reserve"}
      - id: hold
        action: extract
        selector: "#reservation"
        inputs: [seat]
        outputs: {reservation: text}
        compensate:
          - {id: said, action: log, message: "releasing {{ seat }} ({{ index }})", inputs: [seat, index]}
          - id: release
            action: http
            method: POST
            url: "{{ base }}/api/release"
            params: {reservation: "{{ reservation }}"}
            inputs: [base, reservation]
  - {id: confirm, action: http, url: "{{ base }}/api/confirm", expect_status: 200, inputs: [base], on_error: rollback}
"""


async def test_a_step_in_a_loop_is_compensated_per_iteration(run_sop, store, booking):
    outcome = await run_sop(LOOP, {"base": booking.url})
    assert outcome.status == RunStatus.FAILED
    assert outcome.error.endswith("rolled back: 6 compensations completed, 0 failed")
    held = {r: s for r, s in booking.reservations.items()}
    assert booking.held() == {}  # every iteration's seat released, on the site
    # the last iteration first, each with its own reservation
    assert booking.calls == [f"release {r}" for r in reversed(list(held))]
    steps = rows(store, outcome.run_id)
    assert [k for k in steps if k.startswith("undo.")] == [
        f"undo.seats[{i}].hold.{c}" for i in (2, 1, 0) for c in ("said", "release")
    ]
    said = steps["undo.seats[1].hold.said"]
    assert said.inputs == {"seat": "A2", "index": None}  # the item as the step was given it; no index declared
    assert said.status == "completed"


async def test_a_failing_compensation_does_not_hide_the_first_error(run_sop, store, booking):
    booking.refunds_broken = True  # the refund button is gone: that compensation fails
    text = BOOKING.replace("- {id: refund, action: click", "- {id: refund, timeout: 1s, action: click")
    outcome = await run_sop(text, {"base": booking.url, "card": "4111"})
    assert outcome.status == RunStatus.FAILED
    assert outcome.error.startswith("step confirm failed: ")
    assert outcome.error.endswith("; rolled back: 2 compensations completed, 2 failed")
    steps = rows(store, outcome.run_id)
    assert steps["undo.charge.refund"].status == "failed"
    assert steps["undo.charge.refund"].error["kind"] in ("element_not_found", "timeout")
    assert steps["undo.charge.refunded"].status == "failed"  # the check after it tells the refund did not happen
    assert steps["undo.reservation.release"].status == "completed"  # the rest still ran
    assert booking.held() == {} and list(booking.charge_statuses().values()) == ["charged"]
    assert store.run(outcome.run_id).rollback["failed"] == 2


async def test_escalate_headless_fails_saying_so(run_sop, booking):
    text = BOOKING.replace("on_error: rollback", "on_error: escalate")
    outcome = await run_sop(text, {"base": booking.url, "card": "4111"})
    assert outcome.status == RunStatus.FAILED
    assert "on_error: escalate waits for a person in the server" in outcome.error
    assert list(booking.held()) == ["A1"]  # nothing undone: nobody chose to


PARALLEL = """
sop: 1
id: parallel
inputs: {base: {type: string}}
max_parallel: 2
steps:
  - id: first
    action: set
    values: {made: one}
    compensate: [{id: note, action: log, message: "undo {{ made }}", inputs: [made]}]
  - id: held
    action: http
    method: POST
    url: "{{ base }}/api/release"
    params: {reservation: none}
    inputs: [base]
    depends_on: [first]
    compensate: [{id: note, action: log, message: never}]
  - {id: bad, action: http, url: "{{ base }}/api/confirm", expect_status: 200, inputs: [base], depends_on: [first],
     on_error: rollback}
"""


async def test_a_rollback_beside_a_step_in_flight_undoes_only_what_completed(run_sop, store, booking):
    """With parallel steps: the one still in flight when its sibling fails is stopped, and not compensated (it
    did not complete); the one that completed is."""
    booking.hold_release.clear()  # `held` waits on the site until the test ends
    outcome = await run_sop(PARALLEL, {"base": booking.url})
    assert outcome.status == RunStatus.FAILED
    assert outcome.error.startswith("step bad failed: ")
    assert outcome.error.endswith("; rolled back: 1 compensation completed, 0 failed")
    steps = rows(store, outcome.run_id)
    assert [k for k in steps if k.startswith("undo.")] == ["undo.first.note"]
    assert steps["undo.first.note"].inputs == {"made": "one"}
    assert steps["held"].status in ("failed", "pending")  # stopped in flight (or before it began): never completed


# documents that misuse compensate -------------------------------------------------------------------------


def problems(text: str) -> str:
    with pytest.raises(DocumentError) as caught:
        load_sop(text)
    return "\n".join(f"{p.where}: {p.message}" for p in caught.value.problems)


def one_step(compensate: str) -> str:
    return f"sop: 1\nid: bad\nsteps:\n  - id: a\n    action: log\n    message: hi\n    compensate: {compensate}\n"


@pytest.mark.parametrize(
    ("compensate", "said"),
    [
        ("undo it", "field 'compensate': Input should be a valid list"),
        ("[42]", "a step is a mapping with at least 'id' and 'action'"),
        ("[{id: x, action: nope}]", "unknown action 'nope'"),
        ("[{id: x, action: log, message: m, compensate: [{id: y, action: log, message: m}]}]", "no compensations of"),
        ("[{id: x, action: log, message: m, on_error: continue}]", "a compensation has no on_error"),
        ("[{id: x, action: log, message: m, depends_on: [a]}]", "depends_on has no say there"),
        ("[{id: x, action: loop, repeat: 2, steps: [{id: y, action: log, message: m}]}]", "not a loop"),
        ("[{id: x, action: log, message: m}, {id: x, action: log, message: n}]", "id 'x' is used twice"),
        ("[{id: x, action: log, message: '{{ nobody }}'}]", "nobody"),
        ("[" + ", ".join(f"{{id: x{i}, action: log, message: m}}" for i in range(21)) + "]", "at most 20 items"),
        ("[{id: x, action: log, message: m, foo: 1}]", "compensate[0]), field 'foo': is not a field of 'log'"),
    ],
)
def test_a_document_that_misuses_compensate_says_what_is_wrong(compensate, said):
    found = problems(one_step(compensate))
    assert said in found, found
    assert "compensat" in found  # where: in a step's compensations


def test_on_error_takes_the_new_words_and_no_other():
    for word in ("rollback", "escalate"):
        load_sop(one_step("[]").replace("message: hi", f"message: hi\n    on_error: {word}"))
        load_sop(f"sop: 1\nid: ok\ndefaults: {{on_error: {word}}}\nsteps:\n  - {{id: a, action: log, message: m}}\n")
    assert "on_error" in problems(one_step("[]").replace("message: hi", "message: hi\n    on_error: undo"))


def test_a_huge_compensate_list_is_refused_quickly():
    many = "[" + ", ".join(f"{{id: x{i}, action: log, message: m}}" for i in range(50_000)) + "]"
    found = problems(one_step(many))
    assert "at most 20 items" in found or "document" in found


# the server: escalate, the rollback control, a crash in the middle -----------------------------------------


def test_escalate_then_the_rollback_control(server, api, booking):
    text = BOOKING.replace("on_error: rollback", "on_error: escalate").replace("id: booking-rollback", "id: SOP_ID")
    run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
    run = wait_run(api, run_id, "paused", timeout=60)
    assert run["waiting"]["kind"] == "failed" and run["waiting"]["key"] == "confirm"
    assert "escalated: retry it, skip it, roll back or cancel" in run["waiting"]["reason"]
    assert run["controls"] == ["cancel", "rollback"]
    confirm = next(s for s in run["steps"] if s["key"] == "confirm")
    assert confirm["controls"] == ["skip", "retry"]
    assert list(booking.held()) == ["A1"]  # nothing undone yet
    with server.client(VIC) as viewer:  # a viewer sees the run, controls none of it
        assert viewer.get(f"/api/runs/{run_id}").json()["controls"] == []
        assert viewer.post(f"/api/runs/{run_id}/rollback").status_code == 403
    reply = api.post(f"/api/runs/{run_id}/rollback")
    assert reply.status_code == 200, reply.text
    run = wait_run(api, run_id, "failed", timeout=60)
    assert run["error"].startswith("step confirm failed: ")
    assert run["error"].endswith("; rolled back: 4 compensations completed, 0 failed")
    assert run["rollback"]["state"] == "done" and run["rollback"]["completed"] == 4
    assert booking.held() == {} and list(booking.charge_statuses().values()) == ["refunded"]
    undo = {s["key"]: s for s in run["steps"] if s["key"].startswith("undo.")}
    assert set(undo) == {
        "undo.charge.open_charge",
        "undo.charge.refund",
        "undo.charge.refunded",
        "undo.reservation.release",
    }
    assert all(s["status"] == "completed" and s["controls"] == [] for s in undo.values())
    # once rolled back: no rollback again, no retry of the failed step
    assert run["controls"] == [] and next(s for s in run["steps"] if s["key"] == "confirm")["controls"] == []
    again = api.post(f"/api/runs/{run_id}/rollback")
    assert again.status_code == 409 and "rollback needs" in again.json()["error"]
    audit = api.get(f"/api/runs/{run_id}/audit").json()["audit"]
    assert [(a["action"], a["target"]) for a in audit if a["action"] == "rollback"] == [("rollback", "confirm")]
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    assert any(e["type"] == "step.updated" and e["data"].get("key") == "undo.charge.refund" for e in events)
    assert "4111" not in str(events)


def test_the_rollback_control_undoes_a_run_that_ended_failed(api, booking):
    text = BOOKING.replace("on_error: rollback", "on_error: fail").replace("id: booking-rollback", "id: SOP_ID")
    run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
    run = wait_run(api, run_id, "failed", timeout=60)
    first = run["error"]
    assert run["controls"] == ["rollback"] and run["rollback"] is None
    assert list(booking.held()) == ["A1"]
    assert api.post(f"/api/runs/{run_id}/rollback").status_code == 200
    run = wait_for(
        lambda: (
            (r := api.get(f"/api/runs/{run_id}").json())["status"] == "failed"
            and r["rollback"]
            and r["rollback"]["state"] == "done"
            and r
        ),
        timeout=60,
    )
    assert run["error"] == f"{first}; rolled back: 4 compensations completed, 0 failed"
    assert booking.held() == {} and list(booking.charge_statuses().values()) == ["refunded"]


def test_a_completed_run_offers_no_rollback(api, booking):
    booking.confirm_works = True
    text = BOOKING.replace("id: booking-rollback", "id: SOP_ID")
    run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
    run = wait_run(api, run_id, "completed", timeout=60)
    assert "rollback" not in run["controls"]
    assert api.post(f"/api/runs/{run_id}/rollback").status_code == 409
    assert list(booking.held()) == ["A1"]


@both_databases
def test_a_rollback_interrupted_by_a_crash_goes_on_after_recovery(tmp_path, booking, database_url):
    """The server is killed while the seat's release (the last compensation) is in flight: after a restart the
    rollback goes on; the refund, which completed before the kill, is not made again."""
    booking.hold_release.clear()
    text = BOOKING.replace("id: booking-rollback", "id: SOP_ID")
    server = ServerProcess(tmp_path / "data", database_url=database_url).start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
            assert booking.release_seen.wait(60)
            run = api.get(f"/api/runs/{run_id}").json()
            assert run["rollback"]["state"] == "running"
        server.stop(kill=True)
        booking.release_seen.clear()
        booking.hold_release.set()
        server = ServerProcess(tmp_path / "data", database_url=database_url).start()
        with server.client() as api:
            run = wait_run(api, run_id, "failed", timeout=60)
    finally:
        server.stop(kill=True)
    assert run["error"].endswith("; rolled back: 4 compensations completed, 0 failed"), run["error"]
    charge = next(iter(booking.charge_statuses()))
    reservation = next(iter(booking.reservations))
    assert booking.calls.count(f"refund {charge}") == 1  # completed before the kill: not run again
    assert booking.calls.count(f"release {reservation}") == 2  # in flight at the kill: runs again
    assert booking.held() == {} and booking.charge_statuses() == {charge: "refunded"}
    release = next(s for s in run["steps"] if s["key"] == "undo.reservation.release")
    assert release["status"] == "completed" and release["attempts"] == 2


def test_a_run_cancelled_as_it_rolls_back_says_so(api, booking):
    booking.hold_release.clear()
    text = BOOKING.replace("id: booking-rollback", "id: SOP_ID")
    run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
    assert booking.release_seen.wait(60)  # the last compensation is in flight
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    booking.hold_release.set()
    run = wait_run(api, run_id, "cancelled")
    assert run["rollback"]["state"] == "cancelled" and run["controls"] == []
    release = next(s for s in run["steps"] if s["key"] == "undo.reservation.release")
    assert release["status"] == "cancelled"
    assert list(booking.charge_statuses().values()) == ["refunded"]  # what ran before the cancel stays done


def test_a_run_paused_on_a_failure_before_a_restart_rolls_back(tmp_path, booking):
    """Escalated, then the server restarts: the run waits on the decision with no execution; the rollback control
    queues it with its rollback requested, and the next execution runs the compensations."""
    text = BOOKING.replace("on_error: rollback", "on_error: escalate").replace("id: booking-rollback", "id: SOP_ID")
    server = ServerProcess(tmp_path / "data").start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
            first = wait_run(api, run_id, "paused", timeout=60)["waiting"]["reason"]
        server.stop(kill=True)
        server = ServerProcess(tmp_path / "data").start()
        with server.client() as api:
            run = wait_run(api, run_id, "paused")
            assert run["controls"] == ["cancel", "rollback"]
            assert api.post(f"/api/runs/{run_id}/rollback").status_code == 200
            run = wait_run(api, run_id, "failed", timeout=60)
    finally:
        server.stop(kill=True)
    assert run["error"] == f"{first.removesuffix(ESCALATED)}; rolled back: 4 compensations completed, 0 failed"
    assert run["rollback"]["state"] == "done" and run["rollback"]["by"]
    assert booking.held() == {} and list(booking.charge_statuses().values()) == ["refunded"]
    assert next(s for s in run["steps"] if s["key"] == "confirm")["status"] == "failed"  # not run again


def test_a_headless_rollback_killed_goes_on_with_resume(tmp_path, booking):
    """`sop-engine run`, killed while a compensation is in flight; `sop-engine run --resume` finishes the
    rollback without making the compensations that completed again."""
    booking.hold_release.clear()
    (tmp_path / "booking.yaml").write_text(BOOKING)
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    env.pop("SOP_DATABASE_URL", None)
    command = [sys.executable, "-m", "sop_engine", "run"]
    given = ["--input", f"base={booking.url}", "--input", "card=4111"]
    process = subprocess.Popen(
        [*command, "booking.yaml", *given], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = None
    try:
        assert booking.release_seen.wait(60)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        booking.hold_release.set()
        store = Store(f"sqlite:///{tmp_path / 'data' / 'sop.db'}")
        run_id = store.runs()[0][0].id
        assert store.run(run_id).rollback["state"] == "running"
        result = subprocess.run(
            [*command, "--resume", run_id, "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
        )
        report = json.loads(result.stdout)
        assert report["status"] == "failed", result.stderr
        assert report["error"].endswith("; rolled back: 4 compensations completed, 0 failed")
        assert store.run(run_id).rollback["state"] == "done"
    finally:
        if store is not None:
            store.close()
        if process.poll() is None:
            process.kill()
    charge, reservation = next(iter(booking.charge_statuses())), next(iter(booking.reservations))
    assert booking.calls == [f"refund {charge}", f"release {reservation}", f"release {reservation}"]
    assert booking.held() == {} and booking.charge_statuses() == {charge: "refunded"}


# the page, in real Chromium -------------------------------------------------------------------------------


async def test_the_page_offers_rollback_on_an_escalated_failure(page, server, api, booking):
    text = BOOKING.replace("on_error: rollback", "on_error: escalate").replace("id: booking-rollback", "id: SOP_ID")
    run_id = start_run(api, post_sop(api, text), {"base": booking.url, "card": "4111"})
    await asyncio.to_thread(wait_run, api, run_id, "paused", 60)
    await page.goto(f"{server.url}/runs/{run_id}")
    toolbar = page.locator(".toolbar")
    await expect(toolbar.locator("button:visible")).to_have_text(["Cancel", "Roll back"])
    confirm = page.locator("tr", has=page.get_by_text("confirm", exact=True)).first
    await expect(confirm.locator(".step-actions button")).to_have_text(["skip", "retry"])
    await expect(page.locator("#waiting")).to_contain_text("roll back or cancel")
    await toolbar.get_by_role("button", name="Roll back").click()
    await expect(page.locator("#run-status")).to_have_text("failed", timeout=60000)
    await expect(page.locator("#run-error")).to_contain_text("rolled back: 4 compensations completed, 0 failed")
    for key in ("undo.charge.refund", "undo.reservation.release"):  # the compensations, in the steps table
        row = page.locator("#steps tr", has=page.get_by_text(key, exact=True))
        await expect(row).to_contain_text("completed")
    await expect(toolbar.locator("button:visible")).to_have_count(0)
    assert booking.held() == {} and list(booking.charge_statuses().values()) == ["refunded"]
