"""The schedules page in real Chromium: a schedule added with the form shows its next times; a bad one is
refused in place; it can be turned off and deleted. The README's example runs when its tick fires."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.async_api import Page, expect

from sop_engine.document import load_sop
from sop_engine.runner import Runner
from sop_engine.scheduler import Scheduler
from sop_engine.states import RunStatus
from tests.conftest import post_sop, readme_section

expect.set_options(timeout=15000)

PLAIN = """
sop: 1
id: SOP_ID
inputs:
  who: {type: string, default: nobody}
steps:
  - {id: a, action: set, inputs: [who], values: {seen: "{{ who }}"}}
"""


async def test_the_page_adds_a_schedule_and_shows_its_next_times(page: Page, server, api):
    sop_id = post_sop(api, PLAIN, "paged")
    await page.click("nav >> text=Schedules")
    await page.wait_for_url("**/schedules")
    form = page.locator("#schedule-form")
    await form.locator("select[name=sop_id]").select_option(sop_id)
    await form.locator("input[name=cron]").fill("not a cron")
    await page.click("#schedule-button")
    await expect(page.locator("#schedule-result")).to_contain_text("not a cron expression")

    await form.locator("input[name=cron]").fill("30 2 * * *")
    await form.locator("input[name=timezone]").fill("Europe/Berlin")
    await form.locator("textarea[name=inputs]").fill('{"who": "paged"}')
    await page.click("#schedule-button")
    row = page.locator("tr.schedule", has_text=sop_id)
    await expect(row).to_contain_text("30 2 * * *")
    times = row.locator(".next-times time")
    await expect(times).to_have_count(3)
    shown = [datetime.fromisoformat(t) for t in await times.evaluate_all("ts => ts.map(t => t.dateTime)")]
    assert all(
        later - earlier in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
        for earlier, later in zip(shown, shown[1:], strict=False)
    )
    assert all(t.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") in ("02:30", "03:00") for t in shown)

    await row.locator("button.toggle").click()
    await expect(page.locator("tr.schedule", has_text=sop_id)).to_contain_text("off")
    await page.locator("tr.schedule", has_text=sop_id).locator("button.delete").click()
    await expect(page.locator("tr.schedule", has_text=sop_id)).to_have_count(0)
    assert all(s["sop_id"] != sop_id for s in api.get("/api/schedules").json()["schedules"])


# the README's example: the SOP runs when its schedule's tick fires ---------

README = readme_section("### Schedules")
EXAMPLE_SOP = re.search(r"```yaml\n(sop: 1.*?)```", README, re.S).group(1)
EXAMPLE_REQUEST = json.loads(re.search(r"```json\n(.*?)```", README, re.S).group(1))


async def test_the_readme_example_runs_when_its_tick_fires(store, browser_host, site):
    text = EXAMPLE_SOP.replace('"/demo/', f'"{site}')
    store.save_document(load_sop(text))
    ticks = Scheduler(store, grace=60)
    fields = dict(EXAMPLE_REQUEST)
    made = ticks.create(
        fields.pop("sop_id"),
        datetime(2026, 11, 23, 12, tzinfo=UTC),
        cron=fields.pop("cron"),
        zone=fields.pop("timezone"),
        **fields,
    )
    assert made.next_fire_at.replace(tzinfo=UTC) == datetime(2026, 11, 24, 1, 30, tzinfo=UTC)  # 02:30 in Berlin
    assert ticks.tick(datetime(2026, 11, 24, 1, 29, 59, tzinfo=UTC)) == []
    [fired] = ticks.tick(datetime(2026, 11, 24, 1, 30, 0, 300000, tzinfo=UTC))
    run = store.run(fired.run_id)
    assert run.inputs == {"item": "water the plants"}
    outcome = await Runner(store, browser_host, []).execute(run.id, load_sop(text), dict(run.inputs))
    assert outcome.status == RunStatus.COMPLETED, outcome.error
