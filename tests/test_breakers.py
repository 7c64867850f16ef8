"""Circuit breakers per target host: real Chromium and loopback fixture hosts, a real database, a clock the
test moves on (never a sleep)."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sop_engine.breakers import FRESH, Breakers, Limits, host_of
from sop_engine.document import BreakerSpec, DocumentError, load_sop, resolve_inputs
from sop_engine.events import Event
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from sop_engine.store import Store
from tests.conftest import both_databases, free_port, readme_section
from tests.loopback import LoopbackServer, Reply, Request, html_reply


class Clock:
    """What time the breakers think it is: moved on by the test, or by a retry (see Advancer)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Advancer:
    """An event sink that moves the clock past a cool-down when a step is retried (told before its wait)."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds
        self.events: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.events.append(event)
        if event.type == "step.retried":
            self.clock.advance(self.seconds)


class Host:
    """A loopback fixture host that answers 503 until it is healthy; it counts what it was asked."""

    def __init__(self) -> None:
        self.healthy = False
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.server = LoopbackServer(self._answer)

    def _answer(self, request: Request) -> Reply:
        if request.path == "/favicon.ico":  # the browser's own, not the steps'
            return Reply(404)
        with self._lock:
            self.requests.append(request.path)
        if self.healthy:
            return html_reply("<h1>up</h1>")
        return html_reply("<h1>down</h1>", 503)

    @property
    def key(self) -> str:
        return self.server.url.removeprefix("http://")


@pytest.fixture
def host():
    made = Host()
    yield made
    made.server.close()


@pytest.fixture
def limits(monkeypatch):
    monkeypatch.setenv("SOP_BREAKER_FAILURES", "3")
    monkeypatch.setenv("SOP_BREAKER_WINDOW", "60")
    monkeypatch.setenv("SOP_BREAKER_COOLDOWN", "30")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def runner(store, browser_host, clock, limits):
    """One runner for the test's runs, as in one server process: its breakers' clock is the test's."""
    advancer = Advancer(clock, 31)
    made = Runner(store, browser_host, [advancer])
    made.breakers = Breakers(store, clock)
    made.advancer = advancer  # type: ignore[attr-defined]
    return made


async def run(runner: Runner, text: str) -> Any:
    loaded = load_sop(text)
    inputs = resolve_inputs(loaded.sop, {})
    row = await runner.create_run(loaded, inputs)
    return await runner.execute(row.id, loaded, inputs)


def steps(store: Store, run_id: str) -> dict[str, Any]:
    return {row.key: row for row in store.steps(run_id)}


FAILING = """
sop: 1
id: failing
defaults: {on_error: continue, timeout: 10s}
steps:
  - {id: a, action: http, url: "URL/a", expect_status: 200}
  - {id: b, action: http, url: "URL/b", expect_status: 200}
  - {id: c, action: navigate, url: "URL/c"}
  - {id: d, action: navigate, url: "URL/d"}
  - {id: e, action: http, url: "URL/e"}
"""

ONE = """
sop: 1
id: one
defaults: {timeout: 10s}
steps:
  - {id: go, action: navigate, url: "URL/again", retry: {attempts: 2, delay: 10ms}}
"""


async def test_a_failing_host_opens_its_breaker_then_a_retry_after_the_cool_down_closes_it(runner, store, host):
    opened = await run(runner, FAILING.replace("URL", host.server.url))
    rows = steps(store, opened.run_id)
    assert [rows[k].status for k in "abc"] == ["failed", "failed", "completed"]  # a 503 page is a page, but counts
    assert host.requests == ["/a", "/b", "/c"]  # d and e never reached the host
    for key in "de":
        error = rows[key].error
        assert error["kind"] == "circuit" and error["retryable"]
        assert error["message"] == f"circuit open for {host.key} until 2030-01-01 12:00:30 UTC"
    breaker = store.breaker(host.key)
    assert (breaker.state, breaker.failures, breaker.opens) == ("open", 3, 1)
    assert "answered 503" in breaker.last_error
    said = [e.data["message"] for e in store.events(opened.run_id) if e.type == "log"]
    assert any(m.startswith(f"circuit opened for {host.key} until") for m in said)

    # the first attempt fails at once; its retry, after the cool-down, is the trial, and it closes the breaker
    host.healthy = True
    closed = await run(runner, ONE.replace("URL", host.server.url))
    assert closed.status == RunStatus.COMPLETED, closed.error
    row = steps(store, closed.run_id)["go"]
    assert row.attempts == 2
    retried = [e for e in runner.advancer.events if e.type == "step.retried" and e.data["key"] == "go"]
    assert retried[0].data["error"]["kind"] == "circuit"
    assert host.requests == ["/a", "/b", "/c", "/again"]
    breaker = store.breaker(host.key)
    assert (breaker.state, breaker.failures, breaker.opens) == ("closed", 0, 1)


TIGHT = """
sop: 1
id: tight
defaults: {on_error: continue, timeout: 10s, breaker: {failures: 2, cooldown: 2m}}
steps:
  - {id: a, action: http, url: "URL/a", expect_status: 200}
  - {id: b, action: http, url: "URL/b", expect_status: [200]}
  - {id: c, action: http, url: "URL/c"}
"""


async def test_a_failed_trial_opens_the_breaker_again(runner, store, host, clock):
    first = await run(runner, TIGHT.replace("URL", host.server.url))
    rows = steps(store, first.run_id)
    assert rows["c"].error["kind"] == "circuit"  # the document's 2 failures, not the server's 3
    assert rows["c"].error["message"].endswith("until 2030-01-01 12:02:00 UTC")  # its 2 minutes, not 30 s
    assert host.requests == ["/a", "/b"]
    clock.advance(119)
    still = await run(runner, TIGHT.replace("URL", host.server.url))
    assert [r.error["kind"] for r in steps(store, still.run_id).values()] == ["circuit"] * 3
    assert len(host.requests) == 2
    clock.advance(1)  # the cool-down is over: a's attempt is the trial; it fails; b and c fail at once again
    again = await run(runner, TIGHT.replace("URL", host.server.url))
    rows = steps(store, again.run_id)
    assert (rows["a"].error["kind"], rows["b"].error["kind"], rows["c"].error["kind"]) == ("http", "circuit", "circuit")
    assert host.requests == ["/a", "/b", "/a"]
    breaker = store.breaker(host.key)
    assert (breaker.state, breaker.opens) == ("open", 2)
    assert breaker.opened_until == clock.now + timedelta(minutes=2)


REFUSED = """
sop: 1
id: refused
defaults: {on_error: continue, timeout: 10s}
steps:
  - {id: a, action: navigate, url: "URL/a"}
  - {id: b, action: http, url: "URL/b"}
  - {id: c, action: navigate, url: "URL/c"}
  - {id: d, action: navigate, url: "URL/d"}
"""


async def test_connection_refused_counts_and_a_success_resets_the_count(runner, store, host):
    closed_port = f"http://127.0.0.1:{free_port()}"
    text = REFUSED.replace("URL", closed_port)
    outcome = await run(runner, text)
    kinds = [steps(store, outcome.run_id)[k].error["kind"] for k in "abcd"]
    assert kinds == ["navigation", "http", "navigation", "circuit"]

    # two failures, then a success: the count starts again
    host.healthy = True
    mixed = f"""
sop: 1
id: mixed
defaults: {{on_error: continue, timeout: 10s}}
steps:
  - {{id: a, action: http, url: "{host.server.url}/a", expect_status: 200}}
"""
    await run(runner, mixed)
    breaker = store.breaker(host.key)
    assert breaker is None or breaker.failures == 0
    host.healthy = False
    await run(runner, FAILING.replace("URL", host.server.url).replace("navigate", "http"))
    assert store.breaker(host.key).state == "open"


WAITS = """
sop: 1
id: waits
defaults: {on_error: continue}
steps:
  - {id: open, action: navigate, url: "URL/page"}
  - {id: a, action: click, selector: "#missing", timeout: 200ms}
  - {id: b, action: wait, selector: "#missing", timeout: 200ms}
  - {id: c, action: click, selector: "#missing", timeout: 200ms}
  - {id: d, action: assert, selector: h1, text: "nope", timeout: 200ms}
  - {id: e, action: navigate, url: "URL/after"}
"""


async def test_element_waits_and_assertions_do_not_count(runner, store, host):
    host.healthy = True
    outcome = await run(runner, WAITS.replace("URL", host.server.url))
    rows = steps(store, outcome.run_id)
    assert {rows[k].error["kind"] for k in "abcd"} <= {"element_not_found", "timeout", "assertion"}
    assert rows["e"].status == "completed"
    breaker = store.breaker(host.key)
    assert breaker is None or (breaker.state, breaker.failures) == ("closed", 0)


ON_PAGE = """
sop: 1
id: on-page
defaults: {on_error: continue, timeout: 5s}
steps:
  - {id: open, action: navigate, url: "URL/page"}
  - {id: a, action: http, url: "URL/a", expect_status: 200}
  - {id: b, action: http, url: "URL/b", expect_status: 200}
  - {id: c, action: http, url: "URL/c", expect_status: 200}
  - {id: read, action: extract, selector: h1, outputs: {title: text}}
"""


async def test_a_step_on_a_page_of_a_host_whose_breaker_is_open_fails_at_once(runner, store):
    def answer(request: Request) -> Reply:  # its page loads; its API is down
        return html_reply("<h1>up</h1>") if request.path == "/page" else html_reply("<h1>down</h1>", 503)

    with LoopbackServer(answer) as server:
        outcome = await run(runner, ON_PAGE.replace("URL", server.url))
        key = server.url.removeprefix("http://")
    rows = steps(store, outcome.run_id)
    assert rows["open"].status == "completed"
    assert store.breaker(key).state == "open"  # a, b and c: three failures
    assert rows["read"].error["kind"] == "circuit"  # the page is loaded, but its host is failing
    assert rows["read"].error["message"].startswith(f"circuit open for {key} until ")


def test_a_document_may_tighten_the_limits_but_not_loosen_them():
    server = Limits(failures=5, window=60.0, cooldown=30.0)
    assert server.tightened(None) == server
    assert server.tightened(BreakerSpec(failures=2, window="5m", cooldown="2m")) == Limits(2, 300.0, 120.0)
    assert server.tightened(BreakerSpec(failures=50, window="1s", cooldown="1s")) == server  # looser: ignored
    assert Limits(0, 60.0, 30.0).tightened(BreakerSpec(failures=4)) == Limits(4, 60.0, 30.0)  # off: a SOP may
    with pytest.raises(DocumentError, match="failures"):
        load_sop("sop: 1\nid: x\ndefaults: {breaker: {failures: 0}}\nsteps: []\n")
    with pytest.raises(DocumentError, match="breaker"):
        load_sop("sop: 1\nid: x\ndefaults: {breaker: {failures: 2, open: true}}\nsteps: []\n")


def test_the_host_key_is_host_and_port():
    assert host_of("http://127.0.0.1:8001/x") == "127.0.0.1:8001"
    assert host_of("HTTPS://Example.COM/a?b") == "example.com:443"
    assert host_of("http://example.com") == "example.com:80"
    assert host_of("http://[::1]:9/") == "[::1]:9"
    assert host_of("file:///etc/passwd") is None
    assert host_of("about:blank") is None
    assert host_of("http://x:99999/") is None
    assert host_of("http://Bücher.example/") == "xn--bcher-kva.example:80"
    assert host_of("http://a%00b/") is None


NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def fail(store: Store, host: str, at: datetime, trial: bool = False, threshold: int = 3) -> Any:
    return store.breaker_failed(host, "down", at, threshold=threshold, window=60, cooldown=30, trial=trial)


@both_databases
def test_two_stores_on_one_database_share_the_breaker_and_one_takes_the_trial(store):
    other = Store(store.url)
    try:
        fail(store, "h:80", NOW)
        fail(other, "h:80", NOW + timedelta(seconds=1))
        found, opened = fail(store, "h:80", NOW + timedelta(seconds=2))
        assert (found.state, found.failures, opened) == ("open", 3, True)
        assert other.breaker("h:80").state == "open"
        assert other.breaker_trial("h:80", NOW + timedelta(seconds=10), 20) == (other.breaker("h:80"), False)
        later = NOW + timedelta(seconds=40)
        taken = [s.breaker_trial("h:80", later, 20)[1] for s in (store, other, store)]
        assert taken == [True, False, False]
        assert other.breaker("h:80").state == "half_open"
        closed = other.breaker_succeeded("h:80", later, trial=True)
        assert (closed.state, closed.failures, closed.opens) == ("closed", 0, 1)
    finally:
        other.close()


@both_databases
def test_failures_outside_the_window_start_the_count_again(store):
    fail(store, "w:80", NOW)
    fail(store, "w:80", NOW + timedelta(seconds=30))
    found, opened = fail(store, "w:80", NOW + timedelta(seconds=61))
    assert (found.state, found.failures, opened) == ("closed", 1, False)


@both_databases
def test_a_trial_whose_lease_ran_out_may_be_taken_again_and_a_reset_closes(store):
    for n in range(3):
        fail(store, "t:80", NOW + timedelta(seconds=n))
    later = NOW + timedelta(seconds=40)
    assert store.breaker_trial("t:80", later, 5)[1]
    assert not store.breaker_trial("t:80", later + timedelta(seconds=4), 5)[1]
    assert store.breaker_trial("t:80", later + timedelta(seconds=5), 5)[1]
    store.breaker_released("t:80", later)
    assert store.breaker_trial("t:80", later, 5)[1]
    reset = store.reset_breaker("t:80", later)
    assert (reset.state, reset.failures) == ("closed", 0)
    assert store.reset_breaker("nobody:80", later) is None
    assert [b.host for b in store.breakers()] == ["t:80"]


README = readme_section("### Circuit breakers per target host")
EXAMPLE = next(b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if b.startswith("sop: 1"))


async def test_the_readme_example_completes_against_a_healthy_host(run_sop, store):
    outcome = await run_sop(EXAMPLE.replace('"/demo/', '"$SITE/'))
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert {row.status for row in store.steps(outcome.run_id)} == {"completed"}


async def test_the_readme_example_opens_the_breaker_of_a_failing_host(runner, store, host):
    outcome = await run(runner, EXAMPLE.replace("/demo/todo.html", host.server.url + "/orders"))
    rows = steps(store, outcome.run_id)
    assert rows["home"].status == "completed"  # a 503 page, which counts: the second failure opens it
    assert rows["status"].error["message"].endswith("answered 503")
    assert rows["again"].error["message"] == f"circuit open for {host.key} until 2030-01-01 12:05:00 UTC"
    assert host.requests == ["/orders", "/orders"]


@both_databases
def test_processes_racing_count_every_failure_and_only_one_takes_the_trial(store):
    """Eight stores (as eight processes) at once, started together by a barrier: no failure is lost, and of
    eight attempts after the cool-down exactly one is the trial."""
    others = [Store(store.url) for _ in range(8)]
    try:
        start = threading.Barrier(len(others))

        def each(call: Any) -> list[Any]:
            results: list[Any] = [None] * len(others)

            def work(n: int) -> None:
                start.wait()
                results[n] = call(others[n], n)

            threads = [threading.Thread(target=work, args=(n,)) for n in range(len(others))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return results

        each(lambda s, n: fail(s, "race:80", NOW + timedelta(milliseconds=n), threshold=8))
        found = store.breaker("race:80")
        assert (found.state, found.failures, found.opens) == ("open", 8, 1)
        later = NOW + timedelta(seconds=31)
        taken = each(lambda s, n: s.breaker_trial("race:80", later, 20)[1])
        assert taken.count(True) == 1
    finally:
        for other in others:
            other.close()


PING = """
sop: 1
id: ping
defaults: {on_error: continue, timeout: 10s}
steps:
  - {id: a, action: http, url: "URL/ping", expect_status: 200}
"""


@both_databases
async def test_a_breaker_opened_by_one_worker_stops_the_steps_of_another(runner, store, host, clock, browser_host):
    """Two runners, each on a store of its own on one database (as two worker processes): the second learns of
    the breaker the first opened from the database, once what it knew of the host is FRESH seconds old."""
    other_store = Store(store.url)
    try:
        other = Runner(other_store, browser_host)
        other.breakers = Breakers(other_store, clock)
        host.healthy = True
        assert (await run(other, PING.replace("URL", host.server.url))).status == RunStatus.COMPLETED
        host.healthy = False
        await run(runner, FAILING.replace("URL", host.server.url))
        assert store.breaker(host.key).state == "open"
        asked = len(host.requests)
        clock.advance(FRESH)
        refused = await run(other, PING.replace("URL", host.server.url))
        assert steps(other_store, refused.run_id)["a"].error["kind"] == "circuit"
        assert len(host.requests) == asked
    finally:
        other_store.close()


SECRET = """
sop: 1
id: secret-url
inputs:
  token: {type: string, secret: true, default: "hunter2-very-secret"}
defaults: {on_error: continue, timeout: 10s}
steps:
  - {id: a, action: http, url: "URL/a?token={{ token }}", expect_status: 200, inputs: [token]}
  - {id: b, action: http, url: "URL/b?token={{ token }}", expect_status: 200, inputs: [token]}
  - {id: c, action: http, url: "URL/c?token={{ token }}", expect_status: 200, inputs: [token]}
"""


async def test_a_secret_in_a_failing_url_is_masked_in_the_breaker(runner, store, host):
    await run(runner, SECRET.replace("URL", host.server.url))
    breaker = store.breaker(host.key)
    assert breaker.state == "open"
    assert "hunter2" not in breaker.last_error and "***" in breaker.last_error


def test_the_server_settings_are_checked(monkeypatch):
    assert Limits.configured() == Limits(5, 60.0, 30.0)
    monkeypatch.setenv("SOP_BREAKER_FAILURES", "0")  # off
    monkeypatch.setenv("SOP_BREAKER_COOLDOWN", "600")
    assert Limits.configured() == Limits(0, 60.0, 600.0)
    for name, value in (("SOP_BREAKER_FAILURES", "-1"), ("SOP_BREAKER_WINDOW", "0"), ("SOP_BREAKER_COOLDOWN", "x")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit, match=name):
            Limits.configured()
        monkeypatch.delenv(name)
