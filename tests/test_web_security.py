"""Attacks on a real server process: another site's page driving a signed-in session (in real Chromium),
cookie flags, body limits, artifacts served as downloads, and who may do what."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from sop_engine.static_site import serve_folder
from tests.conftest import BOB, CAROL, TOKEN, VIC, post_sop, sign_in, start_run, wait_run

PAUSABLE = """
sop: 1
id: SOP_ID
steps:
  - {id: ask, action: approval, message: "Go on?"}
"""

QUICK = "sop: 1\nid: SOP_ID\nsteps:\n  - {id: a, action: sleep, duration: 1ms}\n"

# a page of another site on the same host: it tries what a browser lets any page try
ATTACK = """<!doctype html><meta charset="utf-8"><body><script>
const target = new URLSearchParams(location.search).get("target");
const run = new URLSearchParams(location.search).get("run");
window.report = {};
async function attack() {
  // 1. a no-cors fetch with the victim's cookie: a simple request (text/plain) needs no preflight
  try {
    await fetch(target + "/api/runs", {method: "POST", mode: "no-cors", credentials: "include",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({sop_id: "SOP_ID"})});
    window.report.fetch = "sent";
  } catch (e) { window.report.fetch = "error " + e; }
  // 2. a form POST into a hidden frame: pause the victim's run
  await new Promise((resolve) => {
    const frame = document.createElement("iframe"); frame.name = "sink"; document.body.append(frame);
    const form = document.createElement("form"); form.method = "POST"; form.target = "sink";
    form.action = target + "/api/runs/" + run + "/cancel"; document.body.append(form);
    frame.addEventListener("load", resolve, {once: true}); form.submit();
  });
  window.report.form = "sent";
  // 3. a WebSocket to the live feed: the browser sends the victim's cookie along
  window.report.socket = await new Promise((resolve) => {
    const seen = [];
    const socket = new WebSocket(target.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket");
    socket.onmessage = (m) => { seen.push(m.data); if (m.data.startsWith("0")) socket.send("40");
      if (m.data.startsWith("40")) socket.send('42["subscribe",{"all":true}]'); };
    socket.onclose = () => resolve({closed: true, seen});
    socket.onerror = () => resolve({closed: true, error: true, seen});
  });
  window.done = true;
}
attack();
</script></body>"""


@pytest.fixture
async def victim(browser_host, server):
    """A signed-in browser of the admin, as a person would have it."""
    context = await browser_host.new_context()
    page = await context.new_page()
    page.set_default_timeout(15000)
    await sign_in(page, server.url)
    yield page
    await context.close()


async def test_a_page_on_another_port_cannot_act_with_the_signed_in_cookie(victim, server, api, tmp_path: Path):
    sop_id = post_sop(api, PAUSABLE)
    run_id = start_run(api, sop_id)
    wait_run(api, run_id, "paused")
    runs_before = api.get("/api/runs", params={"sop_id": sop_id}).json()["total"]
    (tmp_path / "attack.html").write_text(ATTACK.replace("SOP_ID", sop_id))
    with serve_folder(tmp_path) as other_site:
        assert other_site.split(":")[2] != server.url.split(":")[2]  # the same host, another port
        await victim.goto(f"{other_site}attack.html?target={server.url}&run={run_id}")
        await victim.wait_for_function("window.done === true")
        report = await victim.evaluate("window.report")
    assert api.get("/api/runs", params={"sop_id": sop_id}).json()["total"] == runs_before
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "paused"
    assert api.get(f"/api/runs/{run_id}/audit").json()["audit"] == []
    assert report["socket"]["closed"] and not any(m.startswith("40") for m in report["socket"]["seen"])
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200  # paused runs hold a worker each


async def test_the_servers_own_page_still_controls_runs(victim, server, api):
    run_id = start_run(api, post_sop(api, PAUSABLE))
    wait_run(api, run_id, "paused")
    await victim.goto(f"{server.url}/runs/{run_id}")
    reply = await victim.evaluate(
        "async (id) => (await fetch('/api/runs/' + id + '/cancel', {method: 'POST'})).status", run_id
    )
    assert reply == 200
    assert wait_run(api, run_id, "cancelled")["status"] == "cancelled"


def test_a_cookie_request_needs_the_servers_origin_and_an_accepted_content_type(server, api):
    sop_id = post_sop(api, QUICK)
    with httpx.Client(base_url=server.url, timeout=15) as browser_like:
        browser_like.post("/login", data={"token": TOKEN})
        assert "sop_token" in browser_like.cookies
        body = json.dumps({"sop_id": sop_id})
        foreign = browser_like.post(
            "/api/runs", content=body, headers={"Origin": "http://127.0.0.1:1", "Content-Type": "application/json"}
        )
        assert foreign.status_code == 403
        no_origin = browser_like.post("/api/runs", content=body, headers={"Content-Type": "application/json"})
        assert no_origin.status_code == 403
        plain = browser_like.post(
            "/api/runs", content=body, headers={"Origin": server.url, "Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        own = browser_like.post(
            "/api/runs", content=body, headers={"Origin": server.url, "Content-Type": "application/json"}
        )
        assert own.status_code == 201
        fetch_metadata = browser_like.post(
            "/api/runs", content=body, headers={"Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
        )
        assert fetch_metadata.status_code == 201
    # a script with its token is not a browser: no Origin needed
    assert api.post("/api/runs", json={"sop_id": sop_id}).status_code == 201


def test_the_login_cookie_is_httponly_strict_and_expires(server):
    reply = httpx.post(f"{server.url}/login", data={"token": TOKEN})
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=43200" in cookie
    page = httpx.get(f"{server.url}/login", params={"token": TOKEN})
    assert page.status_code == 200 and "set-cookie" not in page.headers  # the page posts it, then forgets the URL
    assert "history.replaceState" in httpx.get(f"{server.url}/static/app.js").text


def test_bodies_over_the_limit_get_413(api):
    big = b"x" * (5 * 1024 * 1024 + 1)
    assert api.post("/api/sops", content=big).status_code == 413

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(6):
            yield b"y" * (1024 * 1024)

    assert api.post("/api/sops", content=chunks()).status_code == 413
    assert api.get("/login").status_code == 200


def test_artifacts_are_downloads_that_cannot_act_in_the_servers_origin(server, api):
    run_id = start_run(api, post_sop(api, QUICK))
    wait_run(api, run_id, "completed")
    folder = server.data / "artifacts" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "page.html").write_text("<script>fetch('/api/runs')</script>")
    (folder / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    html = api.get(f"/api/artifacts/{run_id}/page.html")
    assert html.status_code == 200
    assert html.headers["content-disposition"].startswith("attachment")
    assert html.headers["content-security-policy"] == "sandbox"
    assert html.headers["x-content-type-options"] == "nosniff"
    image = api.get(f"/api/artifacts/{run_id}/shot.png")
    assert image.headers["content-disposition"].startswith("inline")
    assert image.headers["content-security-policy"] == "sandbox"
    for bad in (f"{run_id}/a%00b", f"{run_id}/..%2f..%2fsop.db", "../secret.key", f"{run_id}/nope.png"):
        assert api.get(f"/api/artifacts/{bad}").status_code == 404


def test_roles_and_creators(server, api):
    with server.client(BOB) as bob, server.client(CAROL) as carol, server.client(VIC) as vic:
        sop_id = post_sop(bob, PAUSABLE)
        assert bob.get(f"/api/sops/{sop_id}").json()["created_by"] == "bob"
        changed = PAUSABLE.replace("SOP_ID", sop_id).replace("Go on?", "Really?")
        assert carol.post("/api/sops", content=changed).status_code == 403  # bob's SOP id
        assert vic.post("/api/sops", content=changed).status_code == 403  # a viewer
        assert api.post("/api/sops", content=changed).status_code == 201  # an admin
        run_id = start_run(bob, sop_id)
        assert bob.get(f"/api/runs/{run_id}").json()["created_by"] == "bob"
        wait_run(api, run_id, "paused")
        assert vic.get(f"/api/runs/{run_id}").status_code == 200  # everyone reads
        assert carol.get(f"/api/runs/{run_id}/events").status_code == 200
        assert vic.post("/api/runs", json={"sop_id": sop_id}).status_code == 403
        for path in ("cancel", "pause", "steps/ask/breakpoint", "steps/ask/skip"):
            refused = carol.post(f"/api/runs/{run_id}/{path}", json={})
            assert refused.status_code == 403, (path, refused.text)
            assert "bob" in refused.json()["error"]
        assert api.get(f"/api/runs/{run_id}/audit").json()["audit"] == []
        listed = api.get("/api/runs", params={"created_by": "bob"}).json()["runs"]
        assert {r["created_by"] for r in listed} == {"bob"} and run_id in {r["id"] for r in listed}
        assert bob.post(f"/api/runs/{run_id}/steps/ask/submit", json={"values": {"approved": True}}).status_code == 200
        wait_run(api, run_id, "completed")
        audit = api.get(f"/api/runs/{run_id}/audit").json()["audit"]
        assert [(a["who"], a["action"]) for a in audit] == [("bob", "submit")]


def test_security_headers_on_every_response(server):
    for path in ("/login", "/static/app.js", "/api/sops"):
        reply = httpx.get(server.url + path)
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY"
    # the demo pages frame each other (frames.html holds frame-outer.html): their own origin only
    demo = httpx.get(server.url + "/demo/frame-outer.html")
    assert (demo.status_code, demo.headers["x-frame-options"]) == (200, "SAMEORIGIN")


async def test_the_sign_in_page_takes_the_token_out_of_the_address_bar(browser_host, server):
    context = await browser_host.new_context()
    page = await context.new_page()
    posted: list[str | None] = []
    held = asyncio.Event()

    async def hold_the_post(route):  # stop the automatic sign-in, to look at the page it leaves
        posted.append(route.request.post_data)
        held.set()
        await route.fulfill(status=204)  # no content: the browser stays on the page

    try:

        async def route(route):
            await (hold_the_post(route) if route.request.method == "POST" else route.continue_())

        await page.route(lambda url: "/login" in url, route)
        await page.goto(f"{server.url}/login?token={TOKEN}&next=/runs", wait_until="commit")
        async with asyncio.timeout(15):
            await held.wait()
        assert await page.evaluate("location.href") == f"{server.url}/login?next=%2Fruns"
        assert posted and TOKEN in posted[0]  # the token went in the POST body instead
    finally:
        await context.close()


async def test_another_site_cannot_sign_the_browser_in_as_someone_else(victim, server, tmp_path: Path):
    (tmp_path / "switch.html").write_text(
        f'<a id="go" href="{server.url}/login?token={BOB}&next=/runs">a harmless link</a>'
    )
    with serve_folder(tmp_path) as other_site:
        await victim.goto(f"{other_site}switch.html")
        async with victim.expect_navigation(url=f"{server.url}/login*"):
            await victim.click("#go")  # a person follows a link someone else made
        await victim.wait_for_load_state("load")
    cookies = {c["name"]: c["value"] for c in await victim.context.cookies(server.url)}
    assert cookies["sop_token"] == TOKEN  # still the victim's own sign-in
    assert victim.url.startswith(f"{server.url}/login")
