"""The dead-letter page in real Chromium against a real server: a group of failed runs retried with one button
once the fixture site is fixed, a selection deleted after a confirmation, hostile error text shown as text."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, expect

from tests.conftest import post_sop, start_run, wait_run
from tests.dead_site import HOSTILE_SOP, serve_dead_site

expect.set_options(timeout=30000)  # a state the page reaches: on a busy machine a run may take seconds


@pytest.fixture
def dead_site():
    yield from serve_dead_site()


def failed(api, sop_id: str, n: int) -> list[str]:
    runs = [start_run(api, sop_id) for _ in range(n)]
    for run_id in runs:
        wait_run(api, run_id, "failed", timeout=60)
    return runs


async def test_retry_a_group_from_the_page_then_delete_a_selection(page: Page, server, dead_site):
    with server.client() as api:
        shop = post_sop(api, dead_site.sop(), prefix="dead-page")
        hostile = post_sop(api, dead_site.sop(HOSTILE_SOP), prefix="dead-page")
        runs = await asyncio.to_thread(failed, api, shop, 2)
        [bad] = await asyncio.to_thread(failed, api, hostile, 1)

        await page.goto(f"{server.url}/")
        await page.click("nav >> text=Dead letters")
        for sop_id in (shop, hostile):  # one group each, whichever other failures the shared server holds
            await page.fill("input[name=sop_id]", sop_id)
            await page.click("#dead-filters button[type=submit]")
            await expect(page.locator("section.group")).to_have_count(1)
        markup = page.locator("section.group .message")
        await expect(markup).to_contain_text('<img src=x onerror="window.pwned=true">')  # as text
        assert await page.evaluate("window.pwned") is None

        await page.fill("input[name=sop_id]", shop)
        await page.click("#dead-filters button[type=submit]")
        group = page.locator("section.group")
        await expect(group.locator(".count")).to_have_text("2 × ")
        await expect(group.locator(".message")).to_contain_text("#go")
        await expect(group.locator(".message")).not_to_contain_text("opal-key")  # the secret in the URL
        dead_site.fixed = True
        await group.locator("[data-group-action=retry]").click()
        await expect(page.locator("#bulk-result")).to_contain_text("retry: 2 done, 0 refused")
        for run_id in runs:
            await asyncio.to_thread(wait_run, api, run_id, "completed", 60)
        await expect(page.locator("#audit tbody tr[data-action=retry]").first).to_be_visible()

        await page.fill("input[name=sop_id]", hostile)
        await page.click("#dead-filters button[type=submit]")
        await expect(page.locator("section.group")).to_have_count(1)
        await expect(page.locator("section.group .count")).to_have_text("1 × ")
        await page.locator("section.group .select-group").check()
        await expect(page.locator("#selected-count")).to_have_text("1 selected")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("[data-bulk=delete]")
        await expect(page.locator("#bulk-result")).to_contain_text("delete: 1 done, 0 refused")
        await expect(page.locator("#dead-summary")).to_have_text("No failed run fits.")
        assert api.get(f"/api/runs/{bad}").status_code == 404
        await expect(page.locator("#audit tbody tr[data-action=delete]").first).to_contain_text(hostile)


async def test_delete_asks_first_and_does_nothing_when_declined(page: Page, server, dead_site):
    with server.client() as api:
        hostile = post_sop(api, dead_site.sop(HOSTILE_SOP), prefix="dead-page")
        [bad] = await asyncio.to_thread(failed, api, hostile, 1)
        await page.goto(f"{server.url}/dead-letters")
        await page.fill("input[name=sop_id]", hostile)
        await page.click("#dead-filters button[type=submit]")
        # the unfiltered groups show until the filtered answer replaces them: a count waits, a strict locator not
        await expect(page.locator("section.group")).to_have_count(1)
        await expect(page.locator("section.group .count")).to_have_text("1 × ")
        asked = asyncio.get_running_loop().create_future()

        def decline(dialog) -> None:
            asked.set_result(dialog.message)
            asyncio.ensure_future(dialog.dismiss())

        page.once("dialog", decline)
        await page.locator("section.group [data-group-action=delete]").click()
        assert "Delete" in await asked
        await expect(page.locator("section.group .count")).to_have_text("1 × ")
        assert api.get(f"/api/runs/{bad}").json()["status"] == "failed"
