"""The circuit breakers in a real server process: `GET /api/breakers`, closing one by hand, the page and the
metrics. The breaker is opened through the server's database by a store of the test's own, as another
process on that database would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.async_api import expect

from sop_engine.store import Store
from tests.conftest import BOB, SECRET_KEY, TOKEN, VIC, both_databases, sign_in
from tests.test_metrics import scrape, value

pytestmark = both_databases


@pytest.fixture
def shared(server, monkeypatch) -> Iterator[Store]:
    """A store on the server's own database."""
    if server.database_url:
        monkeypatch.setenv("SOP_SECRET_KEY", SECRET_KEY)
    made = Store(server.database_url or f"sqlite:///{server.data / 'sop.db'}")
    yield made
    made.close()


def opened(store: Store) -> str:
    host = f"down-{uuid.uuid4().hex[:8]}.test:80"
    now = datetime.now(UTC)
    for n in range(2):
        store.breaker_failed(
            host, f"GET http://{host}/ answered 503", now + timedelta(seconds=n),
            threshold=2, window=60, cooldown=600, trial=False,
        )  # fmt: skip
    return host


def test_the_api_shows_the_breakers_and_an_operator_closes_one(server, shared):
    host = opened(shared)
    with server.client(VIC) as viewer:
        listed = viewer.get("/api/breakers")
        assert listed.status_code == 200
        found = next(b for b in listed.json()["breakers"] if b["host"] == host)
        assert (found["state"], found["failures"], found["opens"]) == ("open", 2, 1)
        assert found["opened_until"] and found["last_error"].endswith("answered 503")
        assert viewer.post(f"/api/breakers/{host}/reset").status_code == 403  # a viewer only reads
    assert httpx.get(server.url + "/api/breakers").status_code == 401
    with server.client(BOB) as operator:
        closed = operator.post(f"/api/breakers/{host}/reset")
        assert closed.status_code == 200, closed.text
        assert (closed.json()["state"], closed.json()["failures"]) == ("closed", 0)
        assert operator.post("/api/breakers/nobody.test:80/reset").status_code == 404
        assert operator.post("/api/breakers/" + "x" * 5000 + "/reset").status_code == 404
        assert operator.post("/api/breakers/%00%ff/reset").status_code == 404
    assert shared.breaker(host).state == "closed"


def test_the_page_and_the_metrics_show_an_open_breaker(server, shared):
    host = opened(shared)
    with httpx.Client(base_url=server.url) as browser_like:
        browser_like.post("/login", data={"token": TOKEN})
        page = browser_like.get("/breakers")
        assert page.status_code == 200
        assert host in page.text and 'class="badge breaker open"' in page.text
        assert 'href="/breakers"' in browser_like.get("/runs").text  # the nav link
    found = scrape(server.url + "/metrics", VIC)
    assert value(found, "sop_breaker_state", host=host) == 1
    assert value(found, "sop_breaker_opens_total", host=host) == 1
    with server.client(BOB) as operator:
        operator.post(f"/api/breakers/{host}/reset")
    assert value(scrape(server.url + "/metrics", VIC), "sop_breaker_state", host=host) == 0


async def test_an_operator_closes_a_breaker_from_the_page(browser_host, server, shared):
    host = opened(shared)
    context = await browser_host.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(15000)
        await sign_in(page, server.url, BOB)
        await page.click('nav a[href="/breakers"]')
        row = page.locator(f'tr[data-host="{host}"]')
        await expect(row.locator(".badge")).to_have_text("open")
        await row.get_by_role("button", name="Close").click()
        await expect(page.locator(f'tr[data-host="{host}"] .badge')).to_have_text("closed")
        assert shared.breaker(host).state == "closed"
    finally:
        await context.close()
