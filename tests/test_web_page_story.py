"""The run page tells a run's whole story from the API, then live: opened late, reloaded, cut off, refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from tests.conftest import ALICE, ServerProcess, post_sop, sign_in, start_run, wait_run

expect.set_options(timeout=15000)  # a state the page reaches: on a busy machine a run may take seconds


@pytest.fixture
async def context(browser_host):
    context = await browser_host.new_context(viewport={"width": 1280, "height": 900})
    yield context
    await context.close()


@pytest.fixture
async def page(context, server):
    page = await context.new_page()
    page.set_default_timeout(15000)
    await sign_in(page, server.url)
    return page


def badge(page: Page, key: str):
    return page.locator(f'tr[data-key="{key}"] .badge')


async def open_run(page: Page, base_url: str, run_id: str) -> None:
    await page.goto(f"{base_url}/runs/{run_id}")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


async def log_seqs(page: Page) -> list[int]:
    return await page.eval_on_selector_all("#log li", "items => items.map(li => Number(li.dataset.seq))")


# the story of a run that ended before the page opened --------------------------------------------

STORY = """
sop: 1
id: SOP_ID
inputs:
  who: {type: string, default: "Ada"}
  secret_word: {type: string, secret: true, default: "zebra-crossing-42"}
outputs: [greeting]
steps:
  - {id: open, action: navigate, url: "SITE/demo/table.html"}
  - {id: shot, action: screenshot, file: table.png}
  - {id: say, action: log, message: "hello {{ who }}", inputs: [who]}
  - {id: greet, action: set, inputs: [who, secret_word], values: {greeting: "hi {{ who }}"}}
"""


async def test_a_finished_run_opened_later_shows_its_whole_story_and_again_after_a_reload(page: Page, server, api):
    run_id = start_run(api, post_sop(api, STORY.replace("SITE", server.url)))
    await asyncio.to_thread(wait_run, api, run_id, "completed")
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    await open_run(page, server.url, run_id)
    for opened in ("first", "reloaded"):
        await expect(page.locator("#run-status")).to_have_text("completed")
        await expect(page.locator("#progress-text")).to_have_text("4 of 4 steps")
        await expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100")
        # every event of the log, the earlier ones too, each once, each with its time
        assert await log_seqs(page) == [e["seq"] for e in events], opened
        await expect(page.locator("#log li").first).to_contain_text("run created")
        await expect(page.locator("#log")).to_contain_text("say: hello Ada")
        first_time = page.locator("#log li time").first
        assert await first_time.get_attribute("datetime") == events[0]["at"]
        # the run's inputs (the secret masked by the API) and outputs
        await expect(page.locator("#inputs")).to_contain_text('"who": "Ada"')
        await expect(page.locator("#inputs")).to_contain_text('"secret_word": "***"')
        await expect(page.locator("#outputs")).to_contain_text('"greeting": "hi Ada"')
        # each step's inputs, outputs, attempts and times
        greet = page.locator('tr[data-key="greet"]')
        await greet.locator("details.more summary").click()
        facts = greet.locator("dl.facts")
        await expect(facts).to_be_visible()
        await expect(facts.locator("pre.inputs")).to_contain_text('"who": "Ada"')
        await expect(facts.locator("pre.outputs")).to_contain_text('"greeting": "hi Ada"')
        await expect(facts).to_contain_text("attempts")
        await expect(facts).to_contain_text("started")
        await expect(facts).to_contain_text("finished")
        # the picture the screenshot step took
        picture = page.locator('tr[data-key="shot"] img.screenshot')
        await expect(picture).to_be_visible()
        await expect(picture).to_have_attribute("src", f"/api/artifacts/{run_id}/shot-table.png")
        await picture.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
        assert await picture.evaluate("img => img.naturalWidth") > 0
        assert "zebra-crossing-42" not in await page.content()
        if opened == "first":
            await page.reload()
            await expect(page.locator("body")).to_have_attribute("data-ready", "true")


# progress of a loop -----------------------------------------------------------------------------

LOOP = """
sop: 1
id: SOP_ID
inputs:
  items: {type: list, default: [ITEMS]}
steps:
  - {id: start, action: set, values: {began: true}}
  - id: each
    action: loop
    for_each: "{{ items }}"
    inputs: [items]
    steps:
      - {id: a, action: set, inputs: [item], values: {seen: "{{ item }}"}}
      - {id: b, action: set, inputs: [seen], values: {again: "{{ seen }}"}}
  - {id: end, action: set, values: {ended: true}}
""".replace("ITEMS", ", ".join(f"n{i}" for i in range(40)))

WATCH_BAR = """() => {
  window.bar = [];
  const bar = document.getElementById("progress");
  new MutationObserver(() => window.bar.push(Number(bar.getAttribute("aria-valuenow"))))
    .observe(bar, {attributes: true, attributeFilter: ["aria-valuenow"]});
}"""


async def test_a_long_loop_shows_how_far_it_really_is_and_the_bar_never_goes_back(page: Page, server, api):
    run_id = start_run(api, post_sop(api, LOOP), breakpoints=["each[6].a"])
    await asyncio.to_thread(wait_run, api, run_id, "paused")
    await open_run(page, server.url, run_id)
    await expect(page.locator("#run-status")).to_have_text("paused")
    # 1 + 6 rounds of 2 done; 3 steps + 40 rounds of 2 in all: 15.7%, not 13 of the 17 made so far
    await expect(page.locator("#progress-text")).to_have_text("13 of 83 steps")
    await expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "16")

    await page.evaluate(WATCH_BAR)
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 200
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator("#progress-text")).to_have_text("83 of 83 steps")
    seen = await page.evaluate("window.bar")
    assert seen and seen[-1] == 100
    assert seen == sorted(seen), f"the bar went back: {seen}"
    # live events extend the log: each once, none missing
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    await expect(page.locator("#log li")).to_have_count(len(events))
    assert await log_seqs(page) == list(range(1, len(events) + 1))


# a lost connection ---------------------------------------------------------------------------------

PAUSING = """
sop: 1
id: SOP_ID
steps:
  - {id: one, action: log, message: first}
  - {id: two, action: log, message: second}
  - {id: three, action: log, message: third}
"""


async def test_a_lost_connection_shows_a_banner_and_what_happened_meanwhile_comes_back(page: Page, server, api):
    sockets: list[WebSocketRoute] = []
    cut = asyncio.Event()

    async def feed(ws: WebSocketRoute) -> None:
        if cut.is_set():
            await ws.close()  # refused while cut: the page keeps trying
            return
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket("**/socket.io/**", feed)
    run_id = start_run(api, post_sop(api, PAUSING), breakpoints=["two"])
    await asyncio.to_thread(wait_run, api, run_id, "paused")
    await open_run(page, server.url, run_id)
    await expect(page.locator("#run-status")).to_have_text("paused")
    await expect(page.locator("#offline")).to_be_hidden()

    cut.set()
    await sockets[-1].close()
    await expect(page.locator("#offline")).to_be_visible()
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 200
    await asyncio.to_thread(wait_run, api, run_id, "completed")
    await expect(page.locator("#run-status")).to_have_text("paused")  # it cannot know yet
    connected = len(sockets)
    cut.clear()

    await expect(page.locator("#offline")).to_be_hidden()
    await expect(page.locator("#run-status")).to_have_text("completed")
    assert len(sockets) == connected + 1
    await expect(badge(page, "three")).to_have_text("completed")
    await expect(page.locator("#log")).to_contain_text("three: third")
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    await expect(page.locator("#log li")).to_have_count(len(events))
    assert await log_seqs(page) == list(range(1, len(events) + 1))


# people's answers ---------------------------------------------------------------------------------

APPROVAL = """
sop: 1
id: SOP_ID
outputs: [approved]
steps:
  - {id: check, action: approval, message: Pay the invoice?}
  - {id: after, action: log, message: paid}
"""


async def test_approve_button(page: Page, server, api):
    run_id = start_run(api, post_sop(api, APPROVAL))
    await open_run(page, server.url, run_id)
    form = page.locator("#human-form")
    await expect(form).to_contain_text("Pay the invoice?")
    await expect(form.locator('input[type="checkbox"]')).to_have_count(0)
    await form.get_by_role("button", name="Approve").click()
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(form).to_have_count(0)
    await expect(page.locator("#outputs")).to_contain_text('"approved": true')
    await expect(badge(page, "after")).to_have_text("completed")


async def test_reject_button_with_a_reason(page: Page, server, api):
    run_id = start_run(api, post_sop(api, APPROVAL))
    await open_run(page, server.url, run_id)
    form = page.locator("#human-form")
    await form.get_by_label("Reason").fill("the amount is wrong")
    await form.get_by_role("button", name="Reject").click()
    await expect(page.locator("#run-status")).to_have_text("failed")
    await expect(badge(page, "check")).to_have_text("failed")
    await expect(page.locator('tr[data-key="check"] .error')).to_contain_text(
        "rejected by a person: the amount is wrong"
    )
    await expect(page.locator("#run-error")).to_contain_text("the amount is wrong")


async def test_reject_button_without_a_reason(page: Page, server, api):
    run_id = start_run(api, post_sop(api, APPROVAL))
    await open_run(page, server.url, run_id)
    await page.locator("#human-form").get_by_role("button", name="Reject").click()
    await expect(page.locator("#run-status")).to_have_text("failed")
    await expect(page.locator('tr[data-key="check"] .error')).to_contain_text("rejected by a person: no reason given")


COUNT = """
sop: 1
id: SOP_ID
outputs: [count]
steps:
  - id: ask
    action: input
    message: How many?
    fields: {count: {type: integer}}
"""


async def test_a_form_error_clears_on_the_next_good_submit(page: Page, server, api):
    run_id = start_run(api, post_sop(api, COUNT))
    await open_run(page, server.url, run_id)
    form = page.locator("#human-form")
    await form.get_by_role("button", name="Submit").click()
    await expect(form.locator(".form-error")).to_have_text("'count' is required")
    await form.locator('input[name="count"]').fill("3")
    await form.get_by_role("button", name="Submit").click()
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.get_by_text("'count' is required")).to_have_count(0)
    await expect(page.locator("#message")).to_be_empty()
    await expect(page.locator("#outputs")).to_contain_text('"count": 3')


# a sign-in that is no longer valid ----------------------------------------------------------------


async def test_a_refused_api_call_shows_the_sign_in_banner(page: Page, context, server, api):
    run_id = start_run(api, post_sop(api, PAUSING), breakpoints=["two"])
    await asyncio.to_thread(wait_run, api, run_id, "paused")
    await open_run(page, server.url, run_id)
    await expect(page.locator("#signed-out")).to_be_hidden()
    await context.clear_cookies()  # as if the token were revoked: the page's next API call is refused
    assert api.post(f"/api/runs/{run_id}/resume").status_code == 200  # live events make the page read the run
    banner = page.locator("#signed-out")
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("sign-in is no longer valid")
    await expect(banner.get_by_role("link", name="Sign in again")).to_have_attribute(
        "href", f"/login?next=%2Fruns%2F{run_id}"
    )


async def test_a_server_restarted_with_other_tokens_shows_the_sign_in_banner(context, tmp_path: Path):
    data = tmp_path / "data"
    first = await asyncio.to_thread(ServerProcess(data).start)
    try:
        page = await context.new_page()
        page.set_default_timeout(30000)
        await sign_in(page, first.url, ALICE)
        with first.client() as api:
            run_id = start_run(api, post_sop(api, PAUSING), breakpoints=["two"])
            await asyncio.to_thread(wait_run, api, run_id, "paused")
        await open_run(page, first.url, run_id)
        await expect(page.locator("#run-status")).to_have_text("paused")
    finally:
        await asyncio.to_thread(first.stop)
    await expect(page.locator("#offline")).to_be_visible()
    second = ServerProcess(data, env={"SOP_API_TOKENS": "bob:operator:another-bob-token"})
    second.port, second.url = first.port, first.url
    await asyncio.to_thread(second.start)  # alice's token is no longer one of its tokens
    try:
        await expect(page.locator("#signed-out")).to_be_visible()
        await expect(page.locator("#offline")).to_be_hidden()
        await page.locator("#sign-in-again").click()
        await page.wait_for_url(f"{first.url}/login?next=%2Fruns%2F{run_id}")
    finally:
        await asyncio.to_thread(second.stop)


# a browser rebuilt from a checkpoint -------------------------------------------------------------

REBUILT = """
sop: 1
id: SOP_ID
steps:
  - {id: open, action: navigate, url: "SITE/demo/table.html"}
  - {id: read, action: extract, selector: h1, outputs: {title: text}}
"""


async def test_a_browser_rebuilt_from_a_checkpoint_is_shown_with_what_was_lost(context, tmp_path: Path):
    data = tmp_path / "data"
    first = await asyncio.to_thread(ServerProcess(data).start)
    try:
        with first.client() as api:
            run_id = start_run(api, post_sop(api, REBUILT.replace("SITE", first.url)), breakpoints=["read"])
            await asyncio.to_thread(wait_run, api, run_id, "paused")
    finally:
        await asyncio.to_thread(first.stop)  # the run stays paused, its browser gone with the process
    second = ServerProcess(data)
    second.port, second.url = first.port, first.url  # the checkpoint's page is on this address
    await asyncio.to_thread(second.start)
    try:
        page = await context.new_page()
        page.set_default_timeout(30000)
        await sign_in(page, second.url)
        await open_run(page, second.url, run_id)
        await expect(page.locator("#restored")).to_be_hidden()
        await page.click('tr[data-key="read"] [data-step-action="breakpoint"]')  # off: it paused there already
        await expect(page.locator('tr[data-key="read"] [data-step-action="breakpoint"]')).to_have_attribute(
            "aria-pressed", "false"
        )
        await page.click('[data-run-action="resume"]')
        await expect(page.locator("#run-status")).to_have_text("completed")
        for opened in ("live", "reloaded"):
            warning = page.locator("#restored")
            await expect(warning).to_be_visible()
            await expect(warning).to_contain_text("rebuilt from the checkpoint after step open before step read")
            await expect(warning).to_contain_text("form fields filled and not submitted")
            await expect(page.locator("#log")).to_contain_text("the browser was rebuilt before read")
            if opened == "live":
                await page.reload()
                await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    finally:
        await asyncio.to_thread(second.stop)
