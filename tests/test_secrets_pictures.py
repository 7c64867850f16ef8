"""A secret on screen never reaches a picture: the screenshot step's image, the failure screenshot and the
live frames cover the fields filled with a secret and the elements showing one with the mask colour."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from sop_engine.document import load_sop, resolve_inputs
from sop_engine.events import Event
from sop_engine.runner import Runner
from sop_engine.states import RunStatus

SECRET = "Hunter2-Secret"
FIELD = (20, 20, 300, 40)  # x, y, width, height of #field in secret-box.html
BOX = (20, 100, 400, 60)  # of #box
BUTTON = (20, 200, 20, 10)  # a corner of the Show button: not a secret, not covered

# the largest distance of any pixel of a region from the mask colour (#FF00FF), over the three channels
_DISTANCE_JS = """async ([source, x, y, w, h]) => {
  const image = new Image();
  image.src = source;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const g = canvas.getContext("2d");
  g.drawImage(image, 0, 0);
  const d = g.getImageData(x, y, w, h).data;
  let far = 0;
  for (let i = 0; i < d.length; i += 4) {
    far = Math.max(far, Math.abs(d[i] - 255), d[i + 1], Math.abs(d[i + 2] - 255));
  }
  return far;
}"""


class Watching:
    """A frame sink with someone watching: keeps every frame, in order, with the step it was taken after."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, bytes]] = []

    def watching(self, run_id: str) -> bool:
        return True

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None:
        self.frames.append((key, jpeg))

    def after(self, keys: list[str], first: str) -> list[bytes]:
        """The frames taken after step `first` or a later one (`keys`: the steps in order). Frames are taken
        beside the next steps, so a frame may show a later state than its step's, never an earlier one."""
        return [jpeg for key, jpeg in self.frames if keys.index(key) >= keys.index(first)]


async def distance(page: Any, image: bytes, region: tuple[int, int, int, int], inset: int) -> int:
    """How far the region (shrunk by `inset` pixels on each side) is from uniformly the mask colour."""
    kind = "png" if image[:4] == b"\x89PNG" else "jpeg"
    source = f"data:image/{kind};base64,{base64.b64encode(image).decode()}"
    x, y, w, h = region
    return await page.evaluate(_DISTANCE_JS, [source, x + inset, y + inset, w - 2 * inset, h - 2 * inset])


async def run_pictures(text: str, store, browser_host, site: str, frames: Watching):
    loaded = load_sop(text.replace("$SITE/", site))
    inputs = resolve_inputs(loaded.sop, {"password": SECRET})
    runner = Runner(store, browser_host, frames=frames)
    row = await runner.create_run(loaded, inputs)
    return await runner.execute(row.id, loaded, inputs)


async def test_screenshots_and_frames_cover_a_secret_field_and_the_text_showing_it(store, browser_host, site, data_dir):
    frames = Watching()
    outcome = await run_pictures(
        """
sop: 1
id: pictures
inputs:
  password: {type: string, secret: true}
steps:
  - {id: open, action: navigate, url: "$SITE/secret-box.html"}
  - {id: type, action: fill, selector: "#field", value: "{{ password }}", inputs: [password]}
  - {id: show, action: click, selector: "#show"}
  - {id: shot, action: screenshot, file: shot.png}
  - {id: check, action: assert, selector: "#box", text: "something else", timeout: 200ms}
""",
        store,
        browser_host,
        site,
        frames,
    )
    assert outcome.status == RunStatus.FAILED
    rows = {r.key: r for r in store.steps(outcome.run_id)}
    assert rows["check"].error["found"] == "***"  # the page printed it: the error masks it
    shot = (data_dir / "artifacts" / rows["shot"].artifacts[0]).read_bytes()
    failure = (data_dir / "artifacts" / rows["check"].artifacts[0]).read_bytes()
    assert rows["check"].artifacts[0].endswith("failure.png")
    context = await browser_host.new_context()
    try:
        page = await context.new_page()
        for image in (shot, failure):
            assert await distance(page, image, FIELD, 1) == 0
            assert await distance(page, image, BOX, 1) == 0
            assert await distance(page, image, BUTTON, 0) > 100  # the rest of the page is shown as it is
        # frames are JPEG: near the colour, with no text in it (a dark glyph would be far from it); the last
        # one is taken before the browser closes, so there is one after `show` at least
        keys = ["open", "type", "show", "shot"]
        assert frames.after(keys, "show"), [key for key, _ in frames.frames]
        for jpeg in frames.after(keys, "type"):
            assert await distance(page, jpeg, FIELD, 4) < 40
        for jpeg in frames.after(keys, "show"):
            assert await distance(page, jpeg, BOX, 4) < 40
        for _, jpeg in frames.frames:
            assert await distance(page, jpeg, BUTTON, 0) > 100  # the rest of the page is shown
    finally:
        await context.close()


async def test_a_value_computed_from_a_secret_is_covered_where_the_page_prints_it(store, browser_host, site, data_dir):
    frames = Watching()
    outcome = await run_pictures(
        """
sop: 1
id: derived-pictures
inputs:
  password: {type: string, secret: true}
steps:
  - {id: derive, action: set, inputs: [password], values: {backwards: "{{ password|reverse }}"}}
  - {id: open, action: navigate, url: "$SITE/secret-box.html#{{ backwards }}", inputs: [backwards]}
  - {id: shot, action: screenshot}
""",
        store,
        browser_host,
        site,
        frames,
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    rows = {r.key: r for r in store.steps(outcome.run_id)}
    shot = (data_dir / "artifacts" / rows["shot"].artifacts[0]).read_bytes()
    context = await browser_host.new_context()
    try:
        page = await context.new_page()
        assert await distance(page, shot, BOX, 1) == 0
        assert frames.frames  # the last one is taken as the run ends, at the latest
        for _, jpeg in frames.frames:  # every one shows the page the secret opened, which prints it
            assert await distance(page, jpeg, BOX, 4) < 40
        assert await distance(page, shot, FIELD, 1) > 100  # nothing was filled in: the field is shown
    finally:
        await context.close()


class Held(Watching):
    """A watcher whose frames are held up until the test lets them go: a step that waited for its frame
    would never end."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None:
        await self.go.wait()
        await super().frame(run_id, key, jpeg)


async def test_live_frames_are_taken_beside_the_steps_never_before_the_next_one(store, browser_host, site):
    frames = Held()
    items = [f"item {i}" for i in range(12)]
    loaded = load_sop(
        f"""
sop: 1
id: frames-beside
inputs: {{items: {{type: list}}}}
steps:
  - {{id: open, action: navigate, url: "{site}todo.html"}}
  - id: add
    action: loop
    for_each: "{{{{ items }}}}"
    inputs: [items]
    steps:
      - {{id: type, action: fill, selector: input.new-todo, value: "{{{{ item }}}}", inputs: [item]}}
      - {{id: enter, action: press, selector: input.new-todo, key: Enter}}
"""
    )
    last = "add[11].enter"
    ended = asyncio.Event()

    class Ended:
        async def emit(self, event: Event) -> None:
            if event.type == "step.updated" and event.data == {**event.data, "key": last, "status": "completed"}:
                ended.set()

    runner = Runner(store, browser_host, [Ended()], frames=frames)
    row = await runner.create_run(loaded, {"items": items})
    running = asyncio.ensure_future(runner.execute(row.id, loaded, {"items": items}))
    # a fail-safe only (a step that waited for its frame would wait for ever): the test waits on the event
    await asyncio.wait([running, asyncio.ensure_future(ended.wait())], timeout=120, return_when="FIRST_COMPLETED")
    assert ended.is_set() and not running.done()  # every step ended while the first frame was held up
    assert frames.frames == []
    frames.go.set()
    outcome = await running
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    keys = [key for key, _ in frames.frames]
    # one picture at a time, the steps that ended meanwhile answered by the next one: the first, and the last
    assert keys[0] == "open" and keys[-1] == last and len(keys) < 10, keys
