"""The run page shows exactly the controls the API allows now, for the run and each step, in every state."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import VIC, post_sop, sign_in, start_run, wait_run

expect.set_options(timeout=15000)  # a state the page reaches: on a busy machine a run may take seconds

RUN_LABELS = {"pause": "Pause", "resume": "Resume", "step": "Step", "cancel": "Cancel", "rollback": "Roll back"}
STEP_LABELS = {"skip": "skip", "retry": "retry", "rerun": "rerun", "breakpoint": "●"}

STEPS = """
sop: 1
id: SOP_ID
steps:
  - {id: one, action: log, message: first}
  - {id: two, action: log, message: second}
  - {id: three, action: log, message: third}
"""

APPROVAL = """
sop: 1
id: SOP_ID
steps:
  - {id: check, action: approval, message: Go on?}
  - {id: after, action: log, message: went on}
"""


async def settled(api: Any, wanted: str) -> str:
    """A run that stays in the state asked for: paused at a breakpoint, completed, failed or cancelled."""
    if wanted == "failed":
        run_id = start_run(api, post_sop(api, APPROVAL))
        await asyncio.to_thread(wait_run, api, run_id, "paused")
        reply = api.post(f"/api/runs/{run_id}/steps/check/submit", json={"values": {"approved": False}})
        assert reply.status_code == 200, reply.text
        await asyncio.to_thread(wait_run, api, run_id, "failed")
        return run_id
    run_id = start_run(api, post_sop(api, STEPS), breakpoints=[] if wanted == "completed" else ["two"])
    await asyncio.to_thread(wait_run, api, run_id, "completed" if wanted == "completed" else "paused")
    if wanted == "cancelled":
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
        await asyncio.to_thread(wait_run, api, run_id, "cancelled")
    return run_id


async def expect_the_controls_of(page: Page, run: dict[str, Any]) -> None:
    """The page's buttons are the run's `controls` and each step's, nothing more, each enabled."""
    await expect(page.locator("#run-status")).to_have_text(run["status"])
    shown = page.locator("[data-run-action]:not([hidden])")
    await expect(shown).to_have_text([label for name, label in RUN_LABELS.items() if name in run["controls"]])
    await expect(page.locator("[data-run-action]:not([hidden]):disabled")).to_have_count(0)
    for step in run["steps"]:
        buttons = page.locator(f'tr[data-key="{step["key"]}"] [data-step-action]')
        await expect(buttons).to_have_text([label for name, label in STEP_LABELS.items() if name in step["controls"]])
        await expect(page.locator(f'tr[data-key="{step["key"]}"] [data-step-action]:disabled')).to_have_count(0)


@pytest.mark.parametrize("state", ["paused", "completed", "failed", "cancelled"])
async def test_the_buttons_are_the_controls_the_api_gives(page: Page, server, api, state: str):
    run_id = await settled(api, state)
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == state
    assert run["controls"] or any(s["controls"] for s in run["steps"]) or state == "cancelled", run
    await page.goto(f"{server.url}/runs/{run_id}")
    await expect_the_controls_of(page, run)


async def test_the_buttons_follow_the_run_after_each_control(page: Page, server, api):
    run_id = start_run(api, post_sop(api, STEPS), breakpoints=["two"])
    await asyncio.to_thread(wait_run, api, run_id, "paused")
    await page.goto(f"{server.url}/runs/{run_id}")
    await expect_the_controls_of(page, api.get(f"/api/runs/{run_id}").json())

    await page.click('tr[data-key="three"] [data-step-action="breakpoint"]')  # pause before three too
    await expect(page.locator('tr[data-key="three"]')).to_have_class(re.compile(r"\bbreakpoint\b"))
    await page.click('[data-run-action="resume"]')
    await expect(page.locator("#waiting")).to_contain_text("breakpoint before three")
    await expect_the_controls_of(page, api.get(f"/api/runs/{run_id}").json())

    await page.click('[data-run-action="resume"]')
    await expect(page.locator("#run-status")).to_have_text("completed")
    await asyncio.to_thread(wait_run, api, run_id, "completed")
    await expect_the_controls_of(page, api.get(f"/api/runs/{run_id}").json())


async def test_a_viewer_sees_no_controls_and_cannot_answer(browser_host, server, api):
    run_id = start_run(api, post_sop(api, APPROVAL))
    await asyncio.to_thread(wait_run, api, run_id, "paused")
    context = await browser_host.new_context()
    try:
        page = await context.new_page()
        await sign_in(page, server.url, VIC)
        await page.goto(f"{server.url}/runs/{run_id}")
        with server.client(VIC) as viewer:
            seen = viewer.get(f"/api/runs/{run_id}").json()
        assert seen["controls"] == [] and all(s["controls"] == [] for s in seen["steps"])
        await expect_the_controls_of(page, seen)
        form = page.locator("#human-form")
        await expect(form).to_contain_text("Only the run's creator or an admin may answer.")
        await expect(form.get_by_role("button", name="Approve")).to_be_disabled()
        await expect(form.get_by_role("button", name="Reject")).to_be_disabled()
    finally:
        await context.close()
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200


async def test_skip_on_a_failed_step_in_the_page_never_runs_it_again(page: Page, server, api):
    """The reproduction of the issue: signup-batch with plan=enterprise fails at `plan`; skip, pressed on the
    page, marks it skipped and the run completes, `plan` not run again."""
    from tests.conftest import SOPS

    text = (SOPS / "signup-batch.yaml").read_text().replace("id: signup-batch", "id: SOP_ID")
    inputs = {"name": "Zed", "plan": "enterprise", "form_url": f"{server.url}/demo/form.html"}
    run_id = start_run(api, post_sop(api, text), inputs)
    failed = await asyncio.to_thread(wait_run, api, run_id, "failed", 60)
    await page.goto(f"{server.url}/runs/{run_id}")
    await expect(page.locator("#run-status")).to_have_text("failed")
    await page.locator('tr[data-key="plan"] [data-step-action]', has_text="skip").click()
    # the click's request has landed once the step reads skipped; then the run goes on, to its end
    await expect(page.locator('tr[data-key="plan"]')).to_contain_text("skipped")
    await asyncio.to_thread(wait_run, api, run_id, "completed", 90)  # if it ends otherwise: its error and steps
    await expect(page.locator("#run-status")).to_have_text("completed")
    run = api.get(f"/api/runs/{run_id}").json()
    plan = next(s for s in run["steps"] if s["key"] == "plan")
    before = next(s for s in failed["steps"] if s["key"] == "plan")
    assert plan["status"] == "skipped" and plan["attempts"] == before["attempts"]
    assert run["outputs"]["submitted_name"] == "Zed"
