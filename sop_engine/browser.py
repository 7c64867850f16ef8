"""Playwright lifecycle: which Chromium, how it is launched; one browser per process, a context per run."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import TYPE_CHECKING, Any

from . import metrics, settings

if TYPE_CHECKING:  # Playwright loads when a run first needs a browser (start), not with the command line
    from playwright.async_api import Browser, BrowserContext, Playwright

_ON_PATH = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
QUIET_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
)


class BrowserNotFound(RuntimeError):
    pass


def find_chromium() -> str | None:
    """SOP_BROWSER if set; else a Chromium or Chrome on PATH; else None (Playwright's own download)."""
    named = settings.current().browser
    if named:
        found = shutil.which(named) or (named if os.path.exists(named) else None)
        if not found:
            raise BrowserNotFound(f"SOP_BROWSER={named} is not an executable")
        return found
    for name in _ON_PATH:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_options(headed: bool = False) -> dict[str, Any]:
    args = list(QUIET_FLAGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    options: dict[str, Any] = {"headless": not headed, "args": args}
    executable = find_chromium()
    if executable:
        options["executable_path"] = executable
    return options


class BrowserHost:
    """One Chromium for the process, shared by every run; each run gets its own context."""

    def __init__(self, headed: bool = False, extra_args: list[str] | None = None) -> None:
        self.headed = headed
        self.extra_args = extra_args or []
        self.launches = 0
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._lock = asyncio.Lock()  # runs that find the browser gone relaunch it once, not once each

    async def start(self) -> BrowserHost:
        async with self._lock:
            await self._launch()
        return self

    async def _launch(self) -> None:
        if self._playwright is None:
            from playwright.async_api import async_playwright

            self._playwright = await async_playwright().start()
        if self._browser is None or not self._browser.is_connected():
            options = launch_options(self.headed)
            options["args"] = [*options["args"], *self.extra_args]
            try:
                self._browser = await self._playwright.chromium.launch(**options)
                self.launches += 1
            except Exception as exc:
                raise BrowserNotFound(
                    f"Chromium did not start: {str(exc).splitlines()[0]}. Run `make setup`, or set "
                    "SOP_BROWSER to a Chromium or Chrome executable."
                ) from None

    async def new_context(self, **options: Any) -> BrowserContext:
        if self._browser is None or not self._browser.is_connected():
            await self.start()  # first use, or the browser crashed: (re)launch it
        assert self._browser is not None
        context = await self._browser.new_context(**options)
        recording = metrics.recording()
        if recording is not None:  # sop_browser_contexts, until the context closes
            recording.context_opened(context)
        return context

    async def close(self) -> None:
        if self._browser is not None:
            await self._browser.close()
            self._browser = None
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None

    async def __aenter__(self) -> BrowserHost:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
