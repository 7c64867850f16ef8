"""Shared fixtures: the fixture sites on loopback, one Chromium per session, a fresh store per test."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parent.parent
SITES = ROOT / "fixtures" / "sites"
SOPS = ROOT / "fixtures" / "sops"
DEMO_PREFIX = "http://127.0.0.1:8765/"


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


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("SOP_DATA_DIR", str(folder))
    monkeypatch.delenv("SOP_DATABASE_URL", raising=False)
    return folder


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    store = Store()
    yield store
    store.close()


class Recorder:
    """An event sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.events.append(event)

    def of(self, type_: str, **match: Any) -> list[Event]:
        return [e for e in self.events if e.type == type_ and all(e.data.get(k) == v for k, v in match.items())]


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
        row = runner.create_run(loaded, resolved)
        return await runner.execute(row.id, loaded, resolved)

    return run


def fixture_sop(name: str, site: str) -> str:
    """A fixture SOP's text, its demo URLs pointed at the test's site server."""
    return (SOPS / name).read_text().replace(DEMO_PREFIX, site)
