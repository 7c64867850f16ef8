"""Live frames: a JPEG of the page after browser steps, for whoever watches the run, taken beside the steps.

A step asks for a frame and goes on; the picture is taken in the background, one at a time, at most every
`every` seconds (SOP_FRAME_SECONDS; 0: none). A step that ends while one is being taken (or too soon after)
leaves a request that the next picture answers, labelled with the latest step: what a watcher sees last is
always the latest state.

Secrets stay covered although the next step acts while a picture is taken. A picture covers what the run knew
was secret when it started (the fields filled with a secret, the texts of secrets). A step that is about to
make more of the page secret (fill a field with a secret, or one that learned a new secret) first waits for a
picture under way, which was started with the old cover (`before_acting`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..attempts import MASK_COLOR

if TYPE_CHECKING:
    from playwright.async_api import Locator, Page

    from .outcome import FrameSink

FRAME_TIMEOUT = 2.0  # seconds a picture may take; one that takes longer is dropped


class LiveFrames:
    """The frames of one run."""

    def __init__(self, sink: FrameSink | None, run_id: str, every: float) -> None:
        self.sink = sink
        self.run_id = run_id
        self.every = every
        self.cover = 0  # moves on each time the run learns more to cover: a picture started before is stale
        self._wanted: tuple[str, Page, Callable[[], list[Locator]]] | None = None
        self._taking: asyncio.Task[None] | None = None  # takes what is wanted, pausing between pictures
        self._shot: asyncio.Task[None] | None = None  # the picture being taken now
        self._shot_cover = 0
        self._last_start = float("-inf")
        self._closed = False
        self._hurry = asyncio.Event()

    def watched(self) -> bool:
        return self.sink is not None and self.every > 0 and not self._closed and self.sink.watching(self.run_id)

    def want(self, key: str, page: Page, mask: Callable[[], list[Locator]]) -> None:
        """After the browser step `key`: a picture of `page`, covering what `mask()` gives when it is taken."""
        if not self.watched():
            return
        self._wanted = (key, page, mask)
        if self._taking is None:
            self._taking = asyncio.ensure_future(self._take_wanted())

    async def before_acting(self) -> None:
        """Before a step acts: waits for a picture under way that was started with less cover than the run
        now has (rare: a step that fills a secret, or one after a new secret was learned)."""
        shot = self._shot
        if shot is not None and self._shot_cover != self.cover:
            await asyncio.wait([shot])

    async def close(self, last: bool = True) -> None:
        """The run is ending: the picture under way, and one still wanted (`last`), are taken before the
        browser closes, so a watcher sees where the run stopped."""
        taking = self._taking
        self._hurry.set()  # the last picture now: the run does not wait out the pause between pictures
        if taking is not None and not last:
            taking.cancel()
            if self._shot is not None:
                self._shot.cancel()
        if taking is not None:
            await asyncio.wait([taking])
        self._closed = True

    async def _take_wanted(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._wanted is not None and self.sink is not None:
                wait = self._last_start + self.every - loop.time()
                if wait > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):  # the pause between pictures, cut short at the end
                        await asyncio.wait_for(self._hurry.wait(), wait)
                wanted, self._wanted = self._wanted, None
                if wanted is None:
                    break
                self._last_start = loop.time()
                self._shot_cover = self.cover
                self._shot = asyncio.ensure_future(self._picture(*wanted))
                try:
                    await asyncio.wait([self._shot])
                finally:
                    self._shot = None
        finally:
            self._taking = None

    async def _picture(self, key: str, page: Page, mask: Callable[[], list[Locator]]) -> None:
        assert self.sink is not None
        with contextlib.suppress(Exception):  # a frame for the live view is never worth failing a step for
            jpeg = await page.screenshot(
                type="jpeg", quality=60, timeout=FRAME_TIMEOUT * 1000, mask=mask(), mask_color=MASK_COLOR
            )
            await self.sink.frame(self.run_id, key, jpeg)
