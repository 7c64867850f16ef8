"""A secret on screen never reaches a picture: the screenshot step's image, the failure screenshot and the
live frames cover the fields filled with a secret and the elements showing one with the mask colour."""

from __future__ import annotations

import base64
from typing import Any

from sop_engine.document import load_sop, resolve_inputs
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
    """A frame sink with someone watching: keeps every frame by step key."""

    def __init__(self) -> None:
        self.frames: dict[str, bytes] = {}

    def watching(self, run_id: str) -> bool:
        return True

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None:
        self.frames[key] = jpeg


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
        # frames are JPEG: near the colour, with no text in it (a dark glyph would be far from it)
        assert await distance(page, frames.frames["show"], FIELD, 4) < 40
        assert await distance(page, frames.frames["show"], BOX, 4) < 40
        assert await distance(page, frames.frames["open"], BOX, 4) > 100  # nothing secret shown yet
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
        assert await distance(page, frames.frames["open"], BOX, 4) < 40
        assert await distance(page, shot, FIELD, 1) > 100  # nothing was filled in: the field is shown
    finally:
        await context.close()
