"""The web page in real Chromium, against a real server: live steps, buttons, screenshots, forms."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, expect

from tests.conftest import post_sop, sign_in, wait_for

SLOW = """
sop: 1
id: SOP_ID
name: Slow steps
inputs:
  secret_word: {type: string, secret: true, default: "zebra-crossing-42"}
outputs: [said]
steps:
  - {id: one, action: sleep, duration: 400ms}
  - {id: two, action: sleep, duration: 400ms}
  - {id: three, action: sleep, duration: 400ms}
  - {id: four, action: set, inputs: [secret_word], values: {said: "{{ secret_word }}"}}
"""


@pytest.fixture
async def page(browser_host, server):
    context = await browser_host.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15000)
    await sign_in(page, server.url)
    yield page
    await context.close()


def badge(page: Page, key: str):
    return page.locator(f'tr[data-key="{key}"] .badge')


async def start_from_sop_page(page: Page, server, sop_id: str) -> str:
    await page.goto(f"{server.url}/sops/{sop_id}")
    await page.click("#run-button")
    await page.wait_for_url("**/runs/*")
    return page.url.rsplit("/", 1)[1]


async def test_example_sops_are_listed_and_a_run_completes_live(page: Page, server):
    await expect(page.locator("#sops")).to_contain_text("todo-add")
    await expect(page.locator("#sops")).to_contain_text("quotes-scrape")
    await start_from_sop_page(page, server, "todo-add")
    await page.evaluate("window.sameDocument = true")
    await expect(page.locator("#run-status")).to_have_text("completed")
    for key in ("open", "add", "add[0].type", "add[2].enter", "read"):
        await expect(badge(page, key)).to_have_text("completed")
    await expect(page.locator("#outputs")).to_contain_text('"left": 3')
    await expect(page.locator("#progress-text")).to_contain_text("9 of 9 steps")
    await expect(page.locator("#frame")).to_be_visible()
    assert await page.evaluate("window.sameDocument") is True  # updated live, never reloaded
    await page.reload()  # a finished run's page, opened afresh, still says how far it got
    await expect(page.locator("#progress-text")).to_contain_text("9 of 9 steps")


async def test_pause_step_resume_and_skip_buttons(page: Page, server, api):
    sop_id = post_sop(api, SLOW)
    await start_from_sop_page(page, server, sop_id)
    await expect(badge(page, "one")).to_have_text("running")
    await page.click('[data-run-action="pause"]')
    await expect(page.locator("#run-status")).to_have_text("paused")
    await expect(badge(page, "one")).to_have_text("completed")
    await expect(badge(page, "two")).to_have_text("pending")
    await page.click('tr[data-key="three"] [data-step-action="skip"]')
    await page.click('[data-run-action="step"]')
    await expect(badge(page, "two")).to_have_text("completed")
    await expect(page.locator("#run-status")).to_have_text("paused")
    await page.click('[data-run-action="resume"]')
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(badge(page, "three")).to_have_text("skipped")
    await page.click('[data-run-action="pause"]')
    await expect(page.locator("#message")).to_contain_text("only a running run can be paused")
    assert "zebra-crossing-42" not in await page.content()
    await expect(page.locator("#log")).to_contain_text("admin: skip three")


async def test_cancel_button(page: Page, server, api):
    await start_from_sop_page(page, server, post_sop(api, SLOW))
    await expect(badge(page, "one")).to_have_text("running")
    await page.click('[data-run-action="cancel"]')
    await expect(page.locator("#run-status")).to_have_text("cancelled")
    await expect(badge(page, "four")).to_have_text("pending")


async def test_failed_step_shows_its_screenshot_and_can_be_skipped(page: Page, server, api):
    sop_id = post_sop(
        api,
        f"""
sop: 1
id: SOP_ID
steps:
  - {{id: open, action: navigate, url: "{server.url}/demo/table.html"}}
  - {{id: missing, action: click, selector: "#no-such-button", timeout: 300ms, on_error: pause}}
  - {{id: after, action: log, message: went on}}
""",
    )
    await start_from_sop_page(page, server, sop_id)
    await expect(badge(page, "missing")).to_have_text("failed")
    await expect(page.locator("#waiting")).to_contain_text("step missing failed")
    shot = page.locator('tr[data-key="missing"] img.screenshot')
    await expect(shot).to_be_visible()
    assert await shot.evaluate("img => img.complete && img.naturalWidth > 0")
    await expect(page.locator('tr[data-key="missing"] .error')).to_contain_text("no element matched '#no-such-button'")
    await page.click('tr[data-key="missing"] [data-step-action="retry"]')
    await expect(page.locator("#log")).to_contain_text("admin: retry missing")

    def retried_and_failed() -> bool:  # the badge said "failed" before the retry too: wait for the second attempt
        run = api.get(f"/api/runs/{page.url.rsplit('/', 1)[1]}").json()
        step = next(s for s in run["steps"] if s["key"] == "missing")
        return run["status"] == "paused" and step["status"] == "failed" and step["attempts"] >= 2

    await asyncio.to_thread(wait_for, retried_and_failed)
    await expect(badge(page, "missing")).to_have_text("failed")
    await page.click('tr[data-key="missing"] [data-step-action="skip"]')
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(badge(page, "after")).to_have_text("completed")


async def test_human_form_and_upload_errors_in_place(page: Page, server, api):
    sop_id = post_sop(
        api,
        """
sop: 1
id: SOP_ID
outputs: [city]
steps:
  - id: ask
    action: input
    message: Where to?
    fields: {city: {type: string}}
""",
    )
    await start_from_sop_page(page, server, sop_id)
    await expect(page.locator("#human-form")).to_contain_text("Where to?")
    await page.fill('#human-form input[name="city"]', "Lisbon")
    await page.click('#human-form button[type="submit"]')
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator("#outputs")).to_contain_text("Lisbon")

    await page.goto(f"{server.url}/")
    await page.fill('#upload textarea[name="text"]', "sop: 1\nid: broken\nsteps:\n  - {id: a, action: press}\n")
    await page.click('#upload button[type="submit"]')
    await expect(page.locator("#upload-result .problems")).to_contain_text(
        "step 'a' (steps[0]), field 'key': is required"
    )
