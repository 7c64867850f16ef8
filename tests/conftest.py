"""Shared fixtures: the fixture sites on loopback, one Chromium per session, a fresh store per test."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sop_engine.browser import BrowserHost
from sop_engine.document import load_sop, resolve_inputs
from sop_engine.events import Event
from sop_engine.runner import Runner, RunOutcome
from sop_engine.static_site import serve_folder
from sop_engine.store import Store
from tests.loopback import LoopbackServer, Reply, Request, json_reply
from tests.services import Postgres

ROOT = Path(__file__).resolve().parent.parent
SITES = ROOT / "fixtures" / "sites"
SOPS = ROOT / "fixtures" / "sops"


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def repository_data_untouched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes into the repository's own data/ (or build/) folder: every process a test starts defaults to a
    temporary data folder, and the repository's is checked unchanged at the end."""
    before = {name: _files(ROOT / name) for name in ("data", "build")}
    os.environ["SOP_DATA_DIR"] = str(tmp_path_factory.mktemp("default-data"))
    os.environ.pop("SOP_DATABASE_URL", None)
    yield
    after = {name: _files(ROOT / name) for name in ("data", "build")}
    assert after == before, "a test wrote into the repository's data/ or build/ folder"


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    """Base URL of fixtures/sites, served on 127.0.0.1 (ends with '/')."""
    with serve_folder(SITES) as url:
        yield url


@pytest_asyncio.fixture(scope="session")
async def browser_host() -> AsyncIterator[BrowserHost]:
    host = BrowserHost()
    await host.start()
    yield host
    await host.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the session, started as the project's scripts start it; a database per test."""
    cluster = Postgres().start()
    yield cluster
    cluster.stop()


# the store's, API's, controls', batches' and durability tests run on both: `pytestmark = both_databases` in
# their module (or on a test): each of its tests that uses a store or a server runs on SQLite and on PostgreSQL
both_databases = pytest.mark.both_databases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_databases") and "database" in metafunc.fixturenames:
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


SECRET_KEY = "yS3tWJpcsBfS2zOQ3aOuA1lyKuA8lHc2ToGvyS8kJ0Y="  # a Fernet key the tests' processes share on PostgreSQL


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """The database a test's store is on: sqlite unless the test is parametrised with both (or the whole suite
    is sent to PostgreSQL with SOP_TEST_DATABASE=postgresql, to try every test there)."""
    return getattr(request, "param", os.environ.get("SOP_TEST_DATABASE", "sqlite"))


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str, request: pytest.FixtureRequest) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("SOP_DATA_DIR", str(folder))
    monkeypatch.delenv("SOP_DATABASE_URL", raising=False)
    if database == "postgresql":
        monkeypatch.setenv("SOP_DATABASE_URL", request.getfixturevalue("postgres").new_database())
        monkeypatch.setenv("SOP_SECRET_KEY", SECRET_KEY)
    return folder


@pytest.fixture
def store(data_dir: Path, database: str) -> Iterator[Store]:
    store = Store()
    assert store.dialect == database, f"the store is on {store.dialect}, not {database}"
    yield store
    store.close()


class Recorder:
    """An event sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()  # set by each event: wait_for looks again

    async def emit(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    def of(self, type_: str, **match: Any) -> list[Event]:
        return [e for e in self.events if e.type == type_ and all(e.data.get(k) == v for k, v in match.items())]

    async def wait_for(self, type_: str, **match: Any) -> Event:
        """The first event of that type and data, waiting for it to be told."""
        while not (found := self.of(type_, **match)):
            self._arrived.clear()
            await self._arrived.wait()
        return found[0]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def run_sop(store: Store, browser_host: BrowserHost, recorder: Recorder, site: str):
    """Runs a document given as text; `$SITE/` in it becomes the fixture sites' base URL."""

    async def run(text: str, inputs: dict[str, Any] | None = None, base_dir: Path | None = None) -> RunOutcome:
        loaded = load_sop(text.replace("$SITE/", site), base_dir)
        resolved = resolve_inputs(loaded.sop, inputs or {})
        runner = Runner(store, browser_host, [recorder])
        row = await runner.create_run(loaded, resolved)
        return await runner.execute(row.id, loaded, resolved)

    return run


def fixture_sop(name: str, site: str) -> str:
    """A fixture SOP's text, its relative demo URLs (`/demo/todo.html`) pointed at the test's site server."""
    return (SOPS / name).read_text().replace('"/demo/', f'"{site}')


# the server, as a real process on a loopback port -------------------------------------------

TOKEN = "test-token"  # admin
ALICE = "alice-token"  # admin
BOB = "bob-token"  # operator
CAROL = "carol-token"  # operator
VIC = "vic-token"  # viewer
TOKENS = f"alice:admin:{ALICE},bob:operator:{BOB},carol:operator:{CAROL},vic:viewer:{VIC}"


def readme_section(heading: str) -> str:
    """The README's text from `heading` (a whole line, like `### Schedules`) to the next heading of its level
    or above: where a feature's tested example is printed."""
    text = (ROOT / "README.md").read_text()
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index("\n" + heading + "\n") + 1
    after = start + len(heading) + 1
    end = re.search(rf"^#{{1,{level}}} ", text[after:], re.M)
    return text[start : after + end.start()] if end else text[start:]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`sop-engine serve` in a subprocess, with its own data folder and a known token."""

    def __init__(
        self, data: Path, concurrency: int = 4, env: dict[str, str] | None = None, database_url: str | None = None
    ) -> None:
        self.data = data
        self.concurrency = concurrency
        self.env = env or {}
        self.database_url = database_url  # None: SQLite in the data folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Any = None
        self.log = data / "server.log"
        self.health: dict[str, Any] = {}

    def start(self) -> ServerProcess:
        import os
        import subprocess
        import sys
        import time

        import httpx

        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SOP_DATA_DIR": str(self.data), "SOP_API_TOKEN": TOKEN, "SOP_API_TOKENS": TOKENS}
        env.pop("SOP_DATABASE_URL", None)
        env["SOP_DRAIN_SECONDS"] = "0"  # a stopped test server hands its runs back at once
        if self.database_url:
            env.update(SOP_DATABASE_URL=self.database_url, SOP_SECRET_KEY=SECRET_KEY)
        env.update(self.env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "web",
                    "serve",
                    "--port",
                    str(self.port),
                    "--concurrency",
                    str(self.concurrency),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                health = httpx.get(f"{self.url}/healthz", timeout=2)
                if health.status_code == 200:
                    self.health = health.json()
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @staticmethod
    def auth(token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def client(self, token: str = TOKEN) -> Any:
        import httpx

        return httpx.Client(base_url=self.url, headers=self.auth(token), timeout=15)


class WorkerProcess:
    """`sop-engine worker` in a subprocess, on a shared database; `ready` once it has started its pool."""

    def __init__(self, data: Path, database_url: str, concurrency: int = 2, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.database_url = database_url
        self.concurrency = concurrency
        self.env = env or {}
        self.proc: Any = None
        self.log = data / f"worker-{next(_workers)}.log"

    def start(self) -> WorkerProcess:
        import os
        import subprocess
        import sys

        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SOP_DATA_DIR": str(self.data), "SOP_DATABASE_URL": self.database_url}
        env.update({"SOP_SECRET_KEY": SECRET_KEY, "SOP_DRAIN_SECONDS": "0", **self.env})
        command = [sys.executable, "-m", "web", "worker", "--concurrency", str(self.concurrency)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._started(), timeout=60)
        return self

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited: {self.log.read_text()[-2000:]}")
        return "run(s) at once" in self.log.read_text()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, kill: bool = False) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.kill() if kill else self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except Exception:
            self.proc.kill()
            return self.proc.wait(timeout=10)


_workers = iter(range(10**6))


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data").start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("pg-server") / "data"
    process = ServerProcess(data, database_url=postgres.new_database("server")).start()
    yield process
    process.stop()


@pytest.fixture
def server(database: str, request: pytest.FixtureRequest) -> ServerProcess:
    """The tests' shared server, on the test's database; it must say it is on that one (no silent fallback)."""
    process: ServerProcess = request.getfixturevalue(f"{database}_server")
    import httpx

    assert httpx.get(f"{process.url}/healthz", timeout=10).json()["database"] == database
    return process


@pytest.fixture
def database_url(database: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """For a server of a test's own: None (SQLite in its data folder) or a new PostgreSQL database, which the
    test's own process may open too (it has the processes' shared key)."""
    if database != "postgresql":
        return None
    monkeypatch.setenv("SOP_SECRET_KEY", SECRET_KEY)
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Any]:
    with server.client() as client:
        yield client


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.05) -> Any:
    """Polls until `predicate()` is truthy (and returns it), or fails after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {predicate}")
        time.sleep(interval)


def wait_run(api: Any, run_id: str, statuses: set[str] | str, timeout: float = 30) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def reached() -> dict[str, Any] | None:
        run = api.get(f"/api/runs/{run_id}").json()
        if run["status"] in {"completed", "failed", "cancelled"} - wanted:
            raise AssertionError(f"the run ended {run['status']}: {run['error']} {run['steps']}")
        return run if run["status"] in wanted else None

    return wait_for(reached, timeout)


_counter = iter(range(10**6))


def post_sop(api: Any, text: str, prefix: str = "t") -> str:
    """Stores a document under a fresh id (tests share one server); returns the id."""
    sop_id = f"{prefix}-{next(_counter)}"
    response = api.post("/api/sops", content=text.replace("SOP_ID", sop_id))
    assert response.status_code == 201, response.text
    return sop_id


def start_run(api: Any, sop_id: str, inputs: dict[str, Any] | None = None, **extra: Any) -> str:
    response = api.post("/api/runs", json={"sop_id": sop_id, "inputs": inputs or {}, **extra})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
async def page(browser_host: BrowserHost, server: ServerProcess) -> AsyncIterator[Any]:
    """A page of the server in real Chromium, signed in as the admin."""
    context = await browser_host.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(30000)
    await sign_in(page, server.url)
    yield page
    await context.close()


async def sign_in(page: Any, base_url: str, token: str = TOKEN) -> None:
    """Opens the sign-in URL the server prints; the page takes the token out of the URL and posts it."""
    async with page.expect_navigation(url=f"{base_url}/"):
        await page.goto(f"{base_url}/login?token={token}")


# a step held until the test lets it go ---------------------------------------------------------


class Gate:
    """A loopback endpoint whose first call hangs until the test opens the gate (or the caller dies); later
    calls answer at once. `called` is set when the first call arrives."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.open = threading.Event()
        self.calls = 0
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/wait"

    def _answer(self, request: Request) -> Reply:
        self.calls += 1
        if self.calls == 1:
            self.called.set()
            self.open.wait(120)
        return json_reply({"ok": True})

    def close(self) -> None:
        self.open.set()
        self.server.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    made = Gate()
    yield made
    made.close()
