"""The network policy in real Chromium and in the http action. Every request goes to loopback: pages on
127.0.0.1, and on 127.0.0.2 a server that a policy denies and that must never see a request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from sop_engine.actions import EXECUTORS
from sop_engine.artifacts import Artifacts
from sop_engine.browser import BrowserHost
from sop_engine.browser_session import BrowserSession
from sop_engine.document import load_sop, resolve_inputs
from sop_engine.errors import StepError
from sop_engine.policy import NetworkPolicy, PolicyError
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from sop_engine.static_site import serve_folder
from sop_engine.steps import Evaluate, Http, Navigate, Screenshot, Upload
from sop_engine.vault import Vault

MARKER = "file-contents-7d1c52e0"  # in every page a step must never read
STEPS: dict[str, Any] = {"navigate": Navigate, "evaluate": Evaluate, "http": Http, "screenshot": Screenshot}
STEPS["upload"] = Upload
READ_ALL = "() => document.documentElement.outerHTML + [...document.querySelectorAll('iframe')].length"


class Sites:
    def __init__(self, allowed: str, denied: str, denied_seen: list[str], secret: Path, seen: list[str]) -> None:
        self.allowed = allowed  # http://127.0.0.1:port/
        self.allowed_seen = seen
        self.denied = denied  # http://127.0.0.2:port/
        self.denied_seen = denied_seen  # every request the denied server got: must stay empty
        self.secret = secret  # a local file with MARKER in it


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("navigation")
    secret = root / "secret.txt"
    secret.write_text(f"{MARKER}\n")
    (root / "denied").mkdir()
    (root / "denied" / "secret.html").write_text(f"<p>{MARKER}</p>")
    seen: list[str] = []
    with serve_folder(root / "denied", host="127.0.0.2", seen=seen) as denied:
        pages = root / "allowed"
        pages.mkdir()
        (pages / "page.html").write_text(f"<title>ok</title><p id=secret>plain</p><!-- {MARKER} in the source -->")
        (pages / "demo").mkdir()
        (pages / "demo" / "page.html").write_text("<title>a demo page of the server</title>")
        (pages / "js-redirect.html").write_text(f"<script>location = {secret.as_uri()!r}</script><p>stayed</p>")
        (pages / "iframe.html").write_text(f"<iframe src={secret.as_uri()!r}></iframe><p>framed</p>")
        (pages / "subresources.html").write_text(
            f"<img src='{denied}secret.html'><script>window.got = fetch('{denied}secret.html')"
            ".then(r => r.text()).catch(e => 'refused: ' + e)</script>"
        )
        allowed_seen: list[str] = []
        redirects = {"/go": f"{denied}secret.html", "/go-tls": f"{denied.replace('http:', 'https:')}secret.html"}
        with serve_folder(pages, redirects=redirects, seen=allowed_seen) as allowed:
            yield Sites(allowed, denied, seen, secret, allowed_seen)
    assert seen == [], "the denied server got a request"


class StepRun:
    """An ActionContext for steps on one BrowserSession, without a Runner."""

    def __init__(self, session: BrowserSession, policy: NetworkPolicy, folder: Path) -> None:
        self.session = session
        self.policy = policy
        self.base_dir = folder
        self.run_id = "run"
        self.artifact_store = Artifacts(str(folder / "artifacts"))
        self.artifacts_dir = folder / "artifacts" / self.run_id
        self.timeout = 10.0
        self.variables: dict[str, Any] = {}
        self.key = "step"
        self.secret_selectors: list[str] = []
        self._http: httpx.AsyncClient | None = None

    async def page(self, reopen: bool = False) -> Any:
        return await self.session.page("main", reopen)

    async def save_artifact(self, name: str, content: bytes | Path) -> str:
        return self.artifact_store.keep(self.run_id, name, content)

    async def artifact_copy(self, name: str) -> Path:
        copy = self.artifacts_dir.parent.parent / "copies" / name
        copy.parent.mkdir(exist_ok=True)
        self.artifact_store.fetch(self.run_id, name, copy)
        return copy

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = self.policy.http_client()
        return self._http

    async def secret_locators(self, page: Any) -> list[Any]:
        return [page.locator(s) for s in self.secret_selectors]

    async def log(self, message: str, level: str = "info") -> None:
        pass

    async def act(self, action: str, **fields: Any) -> dict[str, Any]:
        step = STEPS[action](id="step", action=action, **fields)
        return await EXECUTORS[action](step, step.templated(), self)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.session.close()


@pytest_asyncio.fixture
async def open_run(browser_host: BrowserHost, tmp_path: Path) -> AsyncIterator[Callable[[NetworkPolicy], StepRun]]:
    runs: list[StepRun] = []

    def open_(policy: NetworkPolicy) -> StepRun:
        run = StepRun(BrowserSession(browser_host, Vault(Fernet.generate_key()), policy=policy), policy, tmp_path)
        runs.append(run)
        return run

    yield open_
    for run in runs:
        await run.close()


@pytest.fixture(autouse=True)
def no_configured_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOP_EGRESS_DENY", raising=False)
    monkeypatch.delenv("SOP_EGRESS_ALLOW", raising=False)


async def read_page(run: StepRun) -> str:
    """Everything the page and its frames show, read the way a step would."""
    page = await run.page()
    texts = [str((await run.act("evaluate", script=READ_ALL))["value"])]
    for frame in page.frames:
        assert not frame.url.startswith(("file:", "view-source:", "chrome:")), frame.url
        if frame.url:  # a frame the browser refused to load has no URL and no document to read
            texts.append(await frame.content())
    return "\n".join(texts)


# file: and the browser's own pages ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "scheme"),
    [
        ("fi\tle://{path}", "file"),
        ("fi\nle://{path}", "file"),
        (" FILE://{path}\n", "file"),
        ("view-source:file://{path}", "view-source"),
        ("chrome://version", "chrome"),
    ],
)
async def test_navigate_refuses_file_and_browser_pages_in_the_server(open_run, sites: Sites, spelling, scheme):
    run = open_run(NetworkPolicy.for_server())
    with pytest.raises(PolicyError) as refused:
        await run.act("navigate", url=spelling.format(path=sites.secret))
    assert f"{scheme}: URLs are not allowed here" in refused.value.message
    assert MARKER not in await read_page(run)


async def test_the_runner_fails_a_tabbed_file_url_with_the_policy_error(store, browser_host, recorder):
    loaded = load_sop("""
sop: 1
id: passwd
outputs: [text]
steps:
  - {id: open, action: navigate, url: "fi\\tle:///etc/passwd"}
  - {id: read, action: evaluate, script: "() => document.body.innerText", outputs: {text: value}}
""")
    runner = server_runner(store, browser_host, recorder)
    row = await runner.create_run(loaded, resolve_inputs(loaded.sop, {}))
    outcome = await runner.execute(row.id, loaded, {})
    assert outcome.status == RunStatus.FAILED
    error = store.steps(outcome.run_id)[0].error
    assert error["kind"] == "policy" and error["retryable"] is False
    assert "file: URLs are not allowed here" in error["message"]
    assert "root:" not in str([e.data for e in recorder.events])


def server_runner(store: Any, browser_host: BrowserHost, recorder: Any) -> Runner:
    return Runner(store, browser_host, [recorder], policy=NetworkPolicy.for_server())


async def test_a_page_that_sends_itself_to_a_file_never_shows_it(open_run, sites: Sites):
    run = open_run(NetworkPolicy.for_server())
    try:
        await run.act("navigate", url=f"{sites.allowed}js-redirect.html")
    except StepError as exc:
        assert MARKER not in exc.message
    assert MARKER not in await read_page(run)


async def test_an_iframe_of_a_file_never_shows_it(open_run, sites: Sites):
    run = open_run(NetworkPolicy.for_server())
    await run.act("navigate", url=f"{sites.allowed}iframe.html")
    assert MARKER not in await read_page(run)
    shot = await run.act("screenshot")
    assert Path(shot["path"]).is_file()


async def test_a_frame_that_lands_on_a_browser_page_is_cleaned_up_and_fails_the_step(open_run):
    """Goes around navigate's own check, the way a page could: the guard still sees where the frame landed
    (chrome: pages never reach the route handler)."""
    run = open_run(NetworkPolicy.for_server())
    page = await run.page()
    await page.goto("chrome://version")
    with pytest.raises(PolicyError, match="the page navigated to a chrome: URL, which this server does not allow"):
        await run.act("evaluate", script="() => document.body.innerText")
    assert page.url == "about:blank"
    assert run.session.current("main") is page
    assert (await run.act("evaluate", script="() => location.href"))["value"] == "about:blank"  # the next step goes on

    await page.goto("chrome://version")
    with pytest.raises(PolicyError, match="a chrome: URL"):
        await run.act("screenshot", file="version.png")
    assert not (run.artifacts_dir / "version.png").exists()


@pytest.mark.parametrize("prefix", ["", "view-source:"])
async def test_a_file_request_is_refused_by_the_route_handler(open_run, sites: Sites, prefix: str):
    run = open_run(NetworkPolicy.for_server())
    page = await run.page()
    with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
        await page.goto(prefix + sites.secret.as_uri())
    await page.wait_for_url("chrome-error://chromewebdata/")  # the browser's error page, not the file
    assert MARKER not in await read_page(run)


async def test_the_command_line_still_opens_files_unless_strict(open_run, sites: Sites):
    run = open_run(NetworkPolicy.for_cli())
    await run.act("navigate", url=sites.secret.as_uri())
    assert MARKER in (await run.act("evaluate", script="() => document.body.innerText"))["value"]
    strict = open_run(NetworkPolicy.for_cli(strict=True))
    with pytest.raises(PolicyError):
        await strict.act("navigate", url=sites.secret.as_uri())


# egress ------------------------------------------------------------------------------------------


@pytest.fixture
def deny_second_loopback(monkeypatch: pytest.MonkeyPatch) -> NetworkPolicy:
    monkeypatch.setenv("SOP_EGRESS_DENY", "127.0.0.2")
    return NetworkPolicy.for_server()


async def test_a_denied_address_is_not_navigated_to(open_run, sites: Sites, deny_second_loopback):
    run = open_run(deny_second_loopback)
    with pytest.raises(PolicyError) as refused:
        await run.act("navigate", url=f"{sites.denied}secret.html")
    assert refused.value.message == (
        f"navigate to {sites.denied}secret.html: egress policy: 127.0.0.2 (127.0.0.2) is denied by 127.0.0.2 "
        "(SOP_EGRESS_DENY)"
    )
    with pytest.raises(PolicyError, match="is denied by 127.0.0.2"):
        await run.act("navigate", url=f"http://2130706434:{sites.denied.rsplit(':', 1)[1]}")


@pytest.mark.parametrize("base", [NetworkPolicy.for_cli, NetworkPolicy.for_server])
async def test_an_sops_own_deny_list_holds_in_the_browser_and_in_http(open_run, sites: Sites, base):
    from types import SimpleNamespace

    run = open_run(base().narrowed(SimpleNamespace(egress={"deny": ["127.0.0.2"]})))
    with pytest.raises(PolicyError, match=r"is denied by 127\.0\.0\.2 \(the SOP's egress\.deny\)"):
        await run.act("navigate", url=f"{sites.allowed}go")
    with pytest.raises(PolicyError, match=r"is denied by 127\.0\.0\.2 \(the SOP's egress\.deny\)"):
        await run.act("http", url=f"{sites.allowed}go")
    assert (await run.act("http", url=f"{sites.allowed}page.html"))["status"] == 200


@pytest.mark.parametrize("path", ["go", "go-tls"])  # to http (forwarded by the proxy), to https (a tunnel)
async def test_a_redirect_to_a_denied_address_is_refused_in_the_browser(
    open_run, sites: Sites, deny_second_loopback, path: str
):
    run = open_run(deny_second_loopback)
    with pytest.raises(PolicyError) as refused:
        await run.act("navigate", url=f"{sites.allowed}{path}")
    assert f"navigate to {sites.allowed}{path}: egress policy: 127.0.0.2 (127.0.0.2) is denied by" in (
        refused.value.message
    )
    if path == "go":  # (after a refused tunnel, the browser's error page reloads itself: nothing to read)
        assert MARKER not in await read_page(run)


async def test_a_pages_own_requests_to_a_denied_address_are_refused(open_run, sites: Sites, deny_second_loopback):
    run = open_run(deny_second_loopback)
    await run.act("navigate", url=f"{sites.allowed}subresources.html")
    got = (await run.act("evaluate", script="() => window.got"))["value"]
    assert MARKER not in got


async def test_the_http_action_refuses_a_denied_address_and_a_redirect_to_it(
    open_run, sites: Sites, deny_second_loopback
):
    run = open_run(deny_second_loopback)
    with pytest.raises(PolicyError, match=r"GET http://127\.0\.0\.2:\d+/secret.html: egress policy: 127\.0\.0\.2"):
        await run.act("http", url=f"{sites.denied}secret.html")
    with pytest.raises(PolicyError) as refused:
        await run.act("http", url=f"{sites.allowed}go")
    assert f"(redirected to {sites.denied}secret.html): egress policy: 127.0.0.2" in refused.value.message
    assert (await run.act("http", url=f"{sites.allowed}page.html"))["status"] == 200


async def test_the_servers_own_api_is_not_reachable(open_run, sites: Sites):
    run = open_run(NetworkPolicy.for_server([sites.allowed.rstrip("/")]))
    with pytest.raises(PolicyError, match="the server's own origin"):
        await run.act("navigate", url=f"{sites.allowed}api/runs")
    with pytest.raises(PolicyError, match="the server's own origin"):
        await run.act("http", url=f"{sites.allowed.replace('127.0.0.1', 'localhost')}%61pi/runs")


OPEN_SOCKET = """url => new Promise(done => {
  const socket = new WebSocket(url);
  socket.onopen = () => done('open');
  socket.onclose = e => done('closed ' + e.code);
})"""


async def test_websockets_are_checked_too(open_run, sites: Sites, deny_second_loopback):
    run = open_run(NetworkPolicy.for_server([sites.allowed.rstrip("/")]))
    await run.act("navigate", url="about:blank")
    own = sites.allowed.replace("http", "ws") + "socket.io/?EIO=4&transport=websocket"
    assert (await run.act("evaluate", script=OPEN_SOCKET, arg=own))["value"] == "closed 1008"
    assert (await run.act("evaluate", script=OPEN_SOCKET, arg=sites.denied.replace("http", "ws")))["value"] == (
        "closed 1008"
    )
    assert not any("socket.io" in path for path in sites.allowed_seen)


FROM_A_WORKER = """url => new Promise(done => {
  const code = `const s = new WebSocket(${JSON.stringify(url)});
    s.onopen = () => postMessage('open'); s.onclose = e => postMessage('closed ' + e.code);`;
  const worker = new Worker(URL.createObjectURL(new Blob([code], {type: 'text/javascript'})));
  worker.onmessage = m => done(m.data);
})"""


async def test_a_worker_cannot_reach_the_servers_own_socket(open_run, sites: Sites):
    """A worker's WebSocket is not routed by the page: it goes through the proxy's tunnel, which hides the path,
    so a tunnel to the server's own origin is refused whole."""
    run = open_run(NetworkPolicy.for_server([sites.allowed.rstrip("/")]))
    await run.act("navigate", url=f"{sites.allowed}demo/page.html")  # a page of the server SOPs may open
    own = sites.allowed.replace("http", "ws") + "socket.io/?EIO=4&transport=websocket"
    assert (await run.act("evaluate", script=FROM_A_WORKER, arg=own))["value"] != "open"
    assert not any("socket.io" in path for path in sites.allowed_seen)


# DNS rebinding: a name checked as one address and connected to as another --------------------------


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`rebind.test` resolves to 127.0.0.1 the first time, to 127.0.0.2 after (no DNS query is made)."""
    answers = ["127.0.0.1"]
    original = NetworkPolicy.resolve

    async def resolve(self: NetworkPolicy, host: str, port: int) -> list[Any]:
        if host != "rebind.test":
            return await original(self, host, port)
        from ipaddress import ip_address

        answer = answers[0] if len(answers) == 1 else answers.pop(0)
        return [ip_address(answer)]

    monkeypatch.setattr(NetworkPolicy, "resolve", resolve)
    return answers


async def test_the_http_action_connects_only_to_the_address_it_checked(
    open_run, sites: Sites, deny_second_loopback, rebinding
):
    run = open_run(deny_second_loopback)
    port = sites.allowed.rsplit(":", 1)[1].rstrip("/")
    result = await run.act("http", url=f"http://rebind.test:{port}/page.html")
    assert result["status"] == 200 and "plain" in result["text"]  # reached through the checked address
    rebinding[:] = ["127.0.0.1", "127.0.0.2"]  # the check sees 127.0.0.1, the connection would get 127.0.0.2
    fresh = open_run(deny_second_loopback)
    with pytest.raises(PolicyError, match=r"rebind\.test \(127\.0\.0\.2\) is denied"):
        await fresh.act("http", url=f"http://rebind.test:{port}/page.html")


async def test_the_browser_connects_through_the_policys_proxy(open_run, sites: Sites, deny_second_loopback, rebinding):
    run = open_run(deny_second_loopback)
    port = sites.allowed.rsplit(":", 1)[1].rstrip("/")
    await run.act("navigate", url=f"http://rebind.test:{port}/page.html")  # Chromium could not resolve it itself
    assert (await run.act("evaluate", script="() => document.title"))["value"] == "ok"


# screenshots and uploads ---------------------------------------------------------------------------


async def test_a_screenshot_masks_the_secret_locators(open_run, sites: Sites):
    run = open_run(NetworkPolicy.for_server())
    await run.act("navigate", url=f"{sites.allowed}page.html")
    page = await run.page()
    run.secret_selectors = ["#secret"]
    shots = []
    for text in ("hunter2", "swordfish"):
        await page.evaluate("t => document.querySelector('#secret').textContent = t", text)
        shots.append(Path((await run.act("screenshot", file=f"{text}.png"))["path"]).read_bytes())
    assert shots[0] == shots[1]
    run.secret_selectors = []
    plain = Path((await run.act("screenshot", file="plain.png"))["path"]).read_bytes()
    assert plain != shots[1]


async def test_uploads_come_only_from_the_sops_folder_and_the_runs_artifacts(open_run, sites: Sites, tmp_path: Path):
    run = open_run(NetworkPolicy.for_server())
    run.base_dir = tmp_path / "sop"
    run.base_dir.mkdir()
    (run.base_dir / "ok.txt").write_text("ok")
    await run.act("navigate", url="about:blank")
    page = await run.page()
    await page.set_content("<input type=file id=f multiple>")
    assert (await run.act("upload", selector="#f", files="ok.txt"))["files"] == ["ok.txt"]
    shot = await run.act("screenshot", file="shot.png")
    assert (await run.act("upload", selector="#f", files=shot["path"]))["files"] == ["shot.png"]
    for outside in (str(sites.secret), "../sop/../../" + sites.secret.name, "sop/../ok.txt/../../x"):
        with pytest.raises(StepError, match="only files in the SOP's folder"):
            await run.act("upload", selector="#f", files=outside)
