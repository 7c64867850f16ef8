"""A run's browser: its context and tabs, and the checkpoints that put a fresh context back where the run was
after a crash or a restart (each tab's URL, cookies and local storage), sealed at rest."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .browser import BrowserHost
from .cost import CostMeter
from .dialogs import DialogDesk
from .errors import ErrorKind, StepError
from .events import utcnow
from .policy import NetworkPolicy, PolicyError
from .policy.guard import BrowserGuard
from .steps import Step, uses_browser
from .vault import Vault

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

STORAGE_EVERY = 1.0  # seconds between checkpoints of cookies and local storage on the same pages
TRACE_STOP_SECONDS = 60.0  # a trace not written by then (a hung browser) is not kept


class BrowserSession:
    def __init__(
        self,
        host: BrowserHost,
        vault: Vault,
        saved: dict[str, Any] | None = None,
        policy: NetworkPolicy | None = None,
        options: dict[str, Any] | None = None,
        dialogs: DialogDesk | None = None,
        meter: CostMeter | None = None,
    ) -> None:
        """`policy`: where the run's pages may go (the command line's, which allows everything, by default);
        with any restriction, every context gets the policy's proxy, route handler and frame guard.
        `options`: the document's own context options (its `browser:` section, rendered); `dialogs`: who
        answers the dialogs of every page of the context (by default each is dismissed); `meter`: counts what
        every page of the context costs."""
        self.host = host
        self.options = options or {}
        self.dialogs = dialogs or DialogDesk(None, lambda text: text, _no_log)
        self.dialogs.tab_of = self.tab_of
        self.vault = vault
        self.meter = meter
        self.policy = policy or NetworkPolicy.for_cli()
        self.guard = None if self.policy.unrestricted else BrowserGuard(self.policy)
        self._context: BrowserContext | None = None
        self._tabs: dict[str, Page] = {}
        self._closed: dict[str, str] = {}  # tab -> how it was closed
        self._lost = False
        self._lock = asyncio.Lock()  # two parallel first steps open one context, not two
        self._storage_at = float("-inf")
        self._saved: dict[str, Any] = {}
        if saved:
            self._saved = {
                "key": saved.get("key"),
                "tabs": vault.open(saved["tabs"]) if saved.get("tabs") else {},
                "storage": vault.open(saved["storage"]) if saved.get("storage") else None,
            }
        # each time a context was rebuilt from a checkpoint: the step key it was taken after, and when
        self.restorations: list[tuple[str | None, datetime]] = []
        self.tracing = False  # every context records a Playwright trace (the run's `trace`); close() saves it

    def tab_of(self, page: Page) -> str | None:
        return next((name for name, tab in self._tabs.items() if tab is page), None)

    def url(self, tab: str) -> str | None:
        page = self._tabs.get(tab)
        return page.url if page is not None and not page.is_closed() else None

    def current(self, tab: str) -> Page | None:
        """The tab's page, if it is open and may be looked at (not while it is somewhere the policy forbids)."""
        page = self._tabs.get(tab)
        if page is None or page.is_closed() or self._lost:
            return None
        return None if self.guard is not None and self.guard.dirty(page) else page

    async def page(self, tab: str, reopen: bool = False) -> Page:
        """The tab's page, opened when needed; raises the PolicyError it owes when it went where it may not.
        A tab that was closed (by close_tab, or by its own page) stays closed, and a step on it fails saying so,
        unless it `reopen`s it (a navigate does)."""
        if reopen:
            self._closed.pop(tab, None)
        elif tab in self._closed:
            raise StepError(ErrorKind.ACTION, f"tab {tab!r} {self._closed[tab]}; a navigate on it opens it again")
        page = self._tabs.get(tab)
        if page is not None and page.is_closed() and not self._lost and not reopen:
            self._closed[tab] = "was closed by its page"
            raise StepError(ErrorKind.ACTION, f"tab {tab!r} was closed by its page; a navigate on it opens it again")
        if page is not None and self.guard is not None:
            await self.guard.settle(page)
        page = self.current(tab)
        if page is not None:
            return page
        async with self._lock:
            if self._context is None or self._lost:
                await self._open()
            page = self.current(tab)
            if page is None:
                assert self._context is not None
                page = self._tabs[tab] = await self._new_page()
            return page

    async def _new_page(self) -> Page:
        assert self._context is not None
        page = await self._context.new_page()
        self._watch(page)
        if self.meter is not None:  # counted from its first request
            await self.meter.watch(page)
        return page

    def _watch(self, page: Page) -> None:
        """Every page of the context, a popup the run never named too: the egress guard, the dialogs, the cost."""
        if self.guard is not None:
            self.guard.watch(page)
        self.dialogs.watch(page)
        if self.meter is not None:
            self.meter.watch_soon(page)

    async def adopt(self, tab: str, page: Page) -> None:
        """A page an action opened (a popup, a link to a new tab) is the tab `tab` from now on."""
        self._watch(page)
        self._closed.pop(tab, None)
        old = self._tabs.get(tab)
        self._tabs[tab] = page
        if old is not None and old is not page:
            with contextlib.suppress(Exception):
                await old.close()

    async def close_tab(self, tab: str) -> bool:
        """Closes the tab; False when it was not open."""
        page = self._tabs.pop(tab, None)
        self._closed[tab] = "was closed by close_tab"
        if page is None or page.is_closed():
            return False
        await page.close()
        return True

    async def _open(self) -> None:
        """A context for the run; after a crash or a restart, put back where the last checkpoint left it."""
        if self._context is not None:
            with contextlib.suppress(Exception):
                await self._context.close()
        options = dict(self.options)
        if self.guard is not None:
            if self.guard.proxy is not None and "proxy" in options:  # every connection is checked, then goes on
                await self.guard.chain(options.pop("proxy"))
            options.update(await self.guard.context_options())
        self._context = await self.host.new_context(storage_state=self._saved.get("storage") or None, **options)
        self._context.on("close", lambda _: setattr(self, "_lost", True))
        self._context.on("page", self._watch)
        if self.tracing:  # a context rebuilt after a crash starts a new trace: the old one died with its context
            await self._context.tracing.start(screenshots=True, snapshots=True, sources=False)
        if self.guard is not None:
            await self.guard.install(self._context)
        self._lost = False
        self._tabs = {}
        if self._saved.get("tabs") or self._saved.get("storage"):
            self.restorations.append((self._saved.get("key"), utcnow()))
        for name, url in (self._saved.get("tabs") or {}).items():
            page = self._tabs[name] = await self._new_page()
            if url and url != "about:blank" and self._may_open(url):
                with contextlib.suppress(Exception):  # the step that needs the page says what is wrong
                    await page.goto(url, timeout=30_000)

    def _may_open(self, url: str) -> bool:
        try:
            self.policy.check_url(url)
        except PolicyError:
            return False
        return True

    async def checkpoint(self, step: Step, key: str) -> dict[str, Any] | None:
        """After a browser step: the tabs' URLs always; cookies and local storage when a URL changed, after a
        navigation, and otherwise at most every STORAGE_EVERY seconds (they cost a few ms to read)."""
        if not uses_browser(step) or self._context is None or self._lost:
            return None
        tabs = {name: page.url for name, page in self._tabs.items() if not page.is_closed()}
        moved = tabs != self._saved.get("tabs")
        now = asyncio.get_running_loop().time()
        if not moved and step.action != "navigate" and now - self._storage_at < STORAGE_EVERY:
            return None  # nothing new to keep: the last checkpoint still holds
        sealed: dict[str, Any] = {"key": key, "tabs": self.vault.seal(tabs)}
        with contextlib.suppress(Exception):
            storage = await self._context.storage_state()
            self._saved["storage"] = storage
            sealed["storage"] = self.vault.seal(storage)  # type: ignore[arg-type]
            self._storage_at = now
        self._saved["tabs"] = tabs
        self._saved["key"] = key
        return sealed

    @property
    def recording(self) -> bool:
        """A context was opened, and records a trace."""
        return self.tracing and self._context is not None

    async def close(self, trace_to: Path | None = None) -> bool:
        """`trace_to`: where the context's trace goes before it closes (when it records one); True when it was
        written there (not when the context was lost: its trace went with it)."""
        written = False
        if self._context is not None:
            if trace_to is not None and self.tracing and not self._lost:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(TRACE_STOP_SECONDS):
                        await self._context.tracing.stop(path=trace_to)
                    written = True
            with contextlib.suppress(Exception):  # the browser may already be gone: nothing to release
                await self._context.close()
            self._context = None
        if self.guard is not None:
            await self.guard.close()
        return written


async def _no_log(key: str, line: str) -> None:
    return None
