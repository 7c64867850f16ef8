"""SOP_FRAME_SECONDS: how often a watched run's live pictures are taken (default one a second), 0 for none; a
value that is not 0 or a number of seconds from 0.1 stops the process with a message naming it."""

from __future__ import annotations

import pytest

from sop_engine import settings
from sop_engine.document import load_sop, resolve_inputs
from sop_engine.runner import Runner
from sop_engine.states import RunStatus


class Watching:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def watching(self, run_id: str) -> bool:
        return True

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None:
        self.keys.append(key)


def test_the_default_is_one_picture_a_second_at_most(monkeypatch):
    monkeypatch.delenv("SOP_FRAME_SECONDS", raising=False)
    assert settings.current().frame_seconds == 1.0
    monkeypatch.setenv("SOP_FRAME_SECONDS", "0.25")
    assert settings.current().frame_seconds == 0.25
    monkeypatch.setenv("SOP_FRAME_SECONDS", "0")
    assert settings.current().frame_seconds == 0


@pytest.mark.parametrize("raw", ["soon", "-1", "0.01", "nan", "inf", "1e9"])
def test_a_value_that_is_not_seconds_is_refused_by_name(monkeypatch, raw: str):
    monkeypatch.setenv("SOP_FRAME_SECONDS", raw)
    with pytest.raises(SystemExit, match="SOP_FRAME_SECONDS"):
        settings.current()


DOCUMENT = """
sop: 1
id: frames
steps:
  - {id: open, action: navigate, url: "$SITE/todo.html"}
  - {id: add, action: fill, selector: ".new-todo", value: one}
"""


async def watched_run(store, browser_host, site: str) -> list[str]:
    frames = Watching()
    loaded = load_sop(DOCUMENT.replace("$SITE/", site))
    inputs = resolve_inputs(loaded.sop, {})
    runner = Runner(store, browser_host, frames=frames)
    row = await runner.create_run(loaded, inputs)
    outcome = await runner.execute(row.id, loaded, inputs)
    assert outcome.status == RunStatus.COMPLETED
    return frames.keys


async def test_a_watched_run_gets_pictures_unless_they_are_off(store, browser_host, site, monkeypatch):
    monkeypatch.setenv("SOP_FRAME_SECONDS", "0.5")
    assert await watched_run(store, browser_host, site)  # the last one at least, taken as the run ends
    monkeypatch.setenv("SOP_FRAME_SECONDS", "0")
    assert await watched_run(store, browser_host, site) == []
