"""A document's `browser:` section: the run's context is made with it, its templates read the run's inputs
once, a secret among them is never stored or told; a proxy is refused where the egress guard has its own."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from sop_engine.document import DocumentError, load_sop, resolve_inputs
from sop_engine.policy import NetworkPolicy
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from tests.conftest import ServerProcess, post_sop, start_run, wait_run
from tests.loopback import LoopbackServer, Reply, Request, html_reply

PASSWORD = "Vault-Door-5521"


class Guarded:
    """A loopback page that wants basic credentials (ada / PASSWORD) and an X-Team header."""

    def __init__(self) -> None:
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/orders"

    @staticmethod
    def _answer(request: Request) -> Reply:
        wanted = "Basic " + base64.b64encode(f"ada:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != wanted:
            return Reply(401, headers={"WWW-Authenticate": 'Basic realm="orders"'})
        return html_reply(f"<p id=team>{request.headers.get('X-Team', 'none')}</p>")


@pytest.fixture
def guarded() -> Iterator[Guarded]:
    made = Guarded()
    with made.server:
        yield made


_SEEN = """async () => ({
  language: navigator.language,
  timezone: Intl.DateTimeFormat().resolvedOptions().timeZone,
  user_agent: navigator.userAgent,
  dark: matchMedia('(prefers-color-scheme: dark)').matches,
  width: window.innerWidth,
  latitude: await new Promise(done => navigator.geolocation.getCurrentPosition(p => done(p.coords.latitude))),
})"""


async def test_the_context_is_made_with_the_documents_settings(run_sop):
    outcome = await run_sop(
        f"""
sop: 1
id: settings
inputs: {{lang: {{default: de-DE}}}}
outputs: [seen]
defaults: {{timeout: 10s}}
browser:
  viewport: {{width: 800, height: 600}}
  locale: "{{{{ lang }}}}"
  timezone: Asia/Tokyo
  user_agent: SOP-Test-Agent/1.0
  color_scheme: dark
  geolocation: {{latitude: 51.5, longitude: -0.12}}
  permissions: [geolocation]
steps:
  - {{id: open, action: navigate, url: "$SITE/settings.html"}}
  - id: read
    action: evaluate
    script: {_SEEN!r}
    outputs: {{seen: value}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs["seen"] == {
        "language": "de-DE",
        "timezone": "Asia/Tokyo",
        "user_agent": "SOP-Test-Agent/1.0",
        "dark": True,
        "width": 800,
        "latitude": 51.5,
    }


async def test_secret_http_credentials_are_used_and_never_stored(run_sop, guarded, data_dir, recorder):
    outcome = await run_sop(
        f"""
sop: 1
id: credentials
inputs:
  password: {{secret: true}}
outputs: [team]
defaults: {{timeout: 10s}}
browser:
  http_credentials: {{username: ada, password: "{{{{ password }}}}"}}
  extra_http_headers: {{X-Team: blue}}
steps:
  - {{id: open, action: navigate, url: "{guarded.url}"}}
  - {{id: read, action: extract, selector: "#team", outputs: {{team: text}}}}
""",
        {"password": PASSWORD},
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"team": "blue"}
    assert not any(PASSWORD in str(event.data) for event in recorder.events)
    for path in data_dir.glob("sop.db*"):
        assert PASSWORD.encode() not in path.read_bytes(), path


class RecordingProxy:
    """An http proxy on loopback, as a team's own would be: it records each request's line and credentials, then
    forwards it (plain http only: the fixture site)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *headers = head.decode("latin-1").split("\r\n")
        auth = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("proxy-authorization")), None)
        self.seen.append((line, auth))
        method, target, version = line.split(" ", 2)
        parts = urlsplit(target)
        up_reader, up = await asyncio.open_connection(parts.hostname, parts.port)
        kept = [h for h in headers if h and not h.lower().startswith(("proxy-", "connection"))]
        lines = [f"{method} {parts.path or '/'} {version}", *kept, "Connection: close"]
        up.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        writer.write(await up_reader.read())
        await writer.drain()
        up.close()
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def run_strict(store, browser_host, text: str, inputs: dict | None = None):
    loaded = load_sop(text)
    resolved = resolve_inputs(loaded.sop, inputs or {})
    runner = Runner(store, browser_host, policy=NetworkPolicy.for_cli(strict=True))
    return await runner.execute((await runner.create_run(loaded, resolved)).id, loaded, resolved)


async def test_the_documents_proxy_goes_behind_the_egress_checks(store, browser_host, site, data_dir):
    """Every connection is checked by the policy first, then goes on through the SOP's own proxy, with its
    credentials (a secret input); the policy still refuses what it refuses."""
    proxy = RecordingProxy()
    address = await proxy.start()
    try:
        outcome = await run_strict(
            store,
            browser_host,
            f"""
sop: 1
id: proxied
inputs: {{proxy_password: {{type: string, secret: true}}}}
outputs: [status]
browser:
  proxy: {{server: "{address}", username: team, password: "{{{{ proxy_password }}}}"}}
steps:
  - {{id: open, action: navigate, url: "{site}settings.html", outputs: [status]}}
  - {{id: file, action: navigate, url: "file:///etc/hostname", on_error: continue}}
""",
            {"proxy_password": "pr0xy-Secret"},
        )
    finally:
        await proxy.close()
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    assert outcome.outputs == {"status": 200}
    expected = "Basic " + base64.b64encode(b"team:pr0xy-Secret").decode()
    assert (f"GET {site}settings.html HTTP/1.1", expected) in proxy.seen
    refused = next(row for row in store.steps(outcome.run_id) if row.key == "file")
    assert (refused.status, refused.error["kind"]) == ("failed", "policy")
    for path in data_dir.glob("sop.db*"):
        assert b"pr0xy-Secret" not in path.read_bytes()


async def test_a_proxy_at_an_address_the_policy_refuses_is_never_used(store, browser_host, site):
    outcome = await run_strict(
        store,
        browser_host,
        f"""
sop: 1
id: proxied-badly
browser:
  proxy: {{server: "http://169.254.169.254:3128"}}
steps:
  - {{id: open, action: navigate, url: "{site}settings.html"}}
""",
    )
    assert outcome.status == RunStatus.FAILED
    error = next(row for row in store.steps(outcome.run_id) if row.key == "open").error
    assert error["kind"] == "policy"
    assert error["message"].startswith("browser.proxy: ") and "169.254.169.254" in error["message"]


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ("browser: {viewport: {width: 800}}", "browser.viewport.height: is required"),
        ("browser: {zoom: 2}", "browser.zoom: Extra inputs are not permitted"),
        ("browser: {color_scheme: purple}", "browser.color_scheme: Input should be 'light', 'dark' or 'no-preference'"),
        ('browser: {locale: "{{ lang }}"}', "browser.locale: reads 'lang', which is not an input of the SOP"),
        ("defaults: {dialogs: {accept: false, prompt: x}}", "defaults.dialogs: a prompt is typed into a dialog that"),
        ("defaults: {dialogs: maybe}", "defaults.dialogs: dialogs is 'accept', 'dismiss' or {accept: true, prompt:"),
    ],
)
def test_browser_settings_are_checked_before_the_run(section: str, said: str):
    with pytest.raises(DocumentError) as caught:
        load_sop(f"sop: 1\nid: bad\n{section}\nsteps:\n  - {{id: a, action: set, values: {{x: 1}}}}\n")
    assert said in str(caught.value)


def test_sop_browser_args_are_split_like_a_shell(monkeypatch: pytest.MonkeyPatch):
    from sop_engine import settings

    monkeypatch.setenv("SOP_BROWSER_ARGS", "--lang=fr '--disable-features=A,B' --mute-audio")
    assert settings.current().browser_args == ("--lang=fr", "--disable-features=A,B", "--mute-audio")
    monkeypatch.delenv("SOP_BROWSER_ARGS")
    assert settings.current().browser_args == ()


def test_the_server_starts_chromium_with_sop_browser_args(tmp_path):
    server = ServerProcess(tmp_path / "data", concurrency=1, env={"SOP_BROWSER_ARGS": "--user-agent=SopServerProbe/2"})
    server.start()
    try:
        with server.client() as api:
            sop_id = post_sop(
                api,
                """
sop: 1
id: SOP_ID
outputs: [agent]
steps:
  - {id: open, action: navigate, url: "/demo/index.html"}
  - {id: read, action: evaluate, script: "() => navigator.userAgent", outputs: {agent: value}}
""",
                prefix="ua",
            )
            run = wait_run(api, start_run(api, sop_id), "completed")
            assert run["outputs"] == {"agent": "SopServerProbe/2"}
    finally:
        server.stop()


def test_every_problem_of_the_browser_section_is_reported_at_its_place():
    with pytest.raises(DocumentError) as caught:
        load_sop("""
sop: 1
id: b
inputs: {pw: {type: string, secret: true}}
browser:
  locale: "{{ nosuch }}"
  timezone: "{{ pw | nofilter }}"
  viewport: {width: wide, height: 3}
steps:
  - {id: a, action: log, message: m}
""")
    where = [problem.where for problem in caught.value.problems]
    assert where == ["browser.locale", "browser.timezone", "browser.viewport.width"]
