"""The web page in real Chromium, against a real server: live steps, buttons, screenshots, forms."""

from __future__ import annotations

import asyncio
import threading

import pytest
from playwright.async_api import Page, expect

from tests.conftest import post_sop, wait_for
from tests.loopback import LoopbackServer, Reply, Request

expect.set_options(timeout=15000)  # a state the page reaches: on a busy machine a run may take seconds

HELD = """
sop: 1
id: SOP_ID
inputs:
  secret_word: {type: string, secret: true, default: "zebra-crossing-42"}
outputs: [said]
steps:
  - {id: one, action: http, url: "HOLD_URL", timeout: 60s}
  - {id: two, action: log, message: two}
  - {id: three, action: log, message: three}
  - {id: four, action: set, inputs: [secret_word], values: {said: "{{ secret_word }}"}}
"""


class Hold:
    """A loopback URL whose answer waits until the test lets it go: a step that lasts as long as the test needs."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/hold"

    def _answer(self, request: Request) -> Reply:
        self.released.wait(60)
        return Reply(200, b"ok")

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.close()


@pytest.fixture
def hold():
    held = Hold()
    yield held
    held.close()


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
    assert await page.evaluate("window.sameDocument") is True  # updated live, never reloaded
    await page.reload()  # a finished run's page, opened afresh, still says how far it got
    await expect(page.locator("#progress-text")).to_contain_text("9 of 9 steps")


WATCHED = """
sop: 1
id: SOP_ID
steps:
  - {id: one, action: http, url: "HOLD_URL", timeout: 60s}
  - {id: open, action: navigate, url: "/demo/todo.html"}
"""


async def test_a_watched_run_shows_its_page_after_its_browser_steps(page: Page, server, api, hold):
    sop_id = post_sop(api, WATCHED.replace("HOLD_URL", hold.url))
    await start_from_sop_page(page, server, sop_id)
    await expect(page.locator("body[data-watching=true]")).to_have_count(1)  # before any browser step
    hold.release()
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator("#frame")).to_be_visible()
    assert await page.locator("#frame").get_attribute("data-key") == "open"


async def test_pause_step_resume_and_skip_buttons(page: Page, server, api, hold):
    sop_id = post_sop(api, HELD.replace("HOLD_URL", hold.url))
    await start_from_sop_page(page, server, sop_id)
    await expect(badge(page, "one")).to_have_text("running")
    await page.click('[data-run-action="pause"]')  # shown once the page has read the run as running
    await expect(page.locator("#log")).to_contain_text("admin: pause")
    hold.release()
    await expect(page.locator("#run-status")).to_have_text("paused")
    await expect(page.locator("#waiting")).to_contain_text("paused before two")
    await expect(badge(page, "one")).to_have_text("completed")
    await expect(badge(page, "two")).to_have_text("pending")
    await expect(page.locator('[data-run-action="pause"]')).to_be_hidden()
    await page.click('tr[data-key="three"] [data-step-action="skip"]')
    await expect(page.locator("#log")).to_contain_text("admin: skip three")
    await page.click('[data-run-action="step"]')
    await expect(badge(page, "two")).to_have_text("completed")
    await expect(page.locator("#run-status")).to_have_text("paused")
    await expect(page.locator("#waiting")).to_contain_text("paused before four")
    await page.click('[data-run-action="resume"]')
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(badge(page, "three")).to_have_text("skipped")
    await expect(page.locator("[data-run-action]:not([hidden])")).to_have_count(0)  # a completed run has none
    assert "zebra-crossing-42" not in await page.content()


async def test_cancel_button(page: Page, server, api, hold):
    await start_from_sop_page(page, server, post_sop(api, HELD.replace("HOLD_URL", hold.url)))
    await expect(badge(page, "one")).to_have_text("running")
    await page.click('[data-run-action="cancel"]')
    await expect(page.locator("#run-status")).to_have_text("cancelled")
    await expect(badge(page, "one")).to_have_text("cancelled")  # stopped in flight: not a failure to retry
    await expect(badge(page, "four")).to_have_text("pending")
    await expect(page.locator("[data-step-action]")).to_have_count(0)
    await expect(page.locator("[data-run-action]:not([hidden])")).to_have_count(0)
    await expect(page.locator("#progress-text")).to_have_text("1 of 4 steps")  # and no time left


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
