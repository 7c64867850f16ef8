"""The policy in the browser: on every context of a run, a proxy that checks each connection (redirects
too), a route handler that refuses URLs by scheme and path, and a guard on where the page's frames land.

A frame that lands where the policy does not allow (chrome: and view-source: pages never reach the route
handler) is sent to about:blank at once, and the page owes its step a PolicyError: the next look at the
page (`settle`) waits for the clean-up, then raises it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary, WeakSet

from .network import NetworkPolicy, PolicyError
from .proxy import EgressProxy, upstream_of

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Frame, Page, Route, WebSocketRoute

CLEAN_UP_SECONDS = 10.0
_guards: WeakKeyDictionary[Page, BrowserGuard] = WeakKeyDictionary()


def guard_of(page: Page) -> BrowserGuard | None:
    return _guards.get(page)


@dataclass
class _Violation:
    error: PolicyError
    cleaned: asyncio.Event = field(default_factory=asyncio.Event)


class BrowserGuard:
    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self.proxy = EgressProxy(policy, self._denied) if policy.filters_egress else None
        self.denials: list[PolicyError] = []  # every refusal, newest last
        self._violations: WeakKeyDictionary[Page, _Violation] = WeakKeyDictionary()
        self._watched: WeakSet[Page] = WeakSet()
        self._cleaning: set[asyncio.Task[None]] = set()

    async def chain(self, proxy: dict[str, str]) -> None:
        """The SOP's own proxy (`browser.proxy`) behind this guard's: checked connections go on through it.
        Raises PolicyError when the policy does not allow its address."""
        assert self.proxy is not None
        self.proxy.upstream = await upstream_of(self.policy, proxy)

    async def context_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"service_workers": "block"}  # a service worker's requests skip the route
        if self.proxy is not None:
            options["proxy"] = {"server": await self.proxy.start()}
        return options

    async def install(self, context: BrowserContext) -> None:
        await context.route("**/*", self._route)
        await context.route_web_socket(lambda _: True, self._route_socket)
        context.on("page", self.watch)

    def watch(self, page: Page) -> None:
        if page in self._watched:
            return
        self._watched.add(page)
        _guards[page] = self
        page.on("framenavigated", lambda frame: self._landed(page, frame))

    async def close(self) -> None:
        for task in list(self._cleaning):
            task.cancel()
        if self.proxy is not None:
            await self.proxy.close()

    # what a step sees ------------------------------------------------------------------------

    def dirty(self, page: Page) -> bool:
        """The page is somewhere it may not be, and not yet cleaned up: nothing may look at it."""
        violation = self._violations.get(page)
        return violation is not None and not violation.cleaned.is_set()

    async def settle(self, page: Page) -> None:
        """Raises the PolicyError the page owes, once it is back on about:blank."""
        violation = self._violations.get(page)
        if violation is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(violation.cleaned.wait(), CLEAN_UP_SECONDS)
        if self._violations.pop(page, None) is not None:
            raise PolicyError(violation.error.message)

    def denial_mark(self) -> int:
        return len(self.denials)

    def denied_since(self, mark: int) -> PolicyError | None:
        return self.denials[-1] if len(self.denials) > mark else None

    # the browser's side ----------------------------------------------------------------------

    def _denied(self, error: PolicyError) -> None:
        self.denials.append(error)
        del self.denials[:-50]

    async def _route(self, route: Route) -> None:
        try:
            self.policy.check_url(route.request.url)
        except PolicyError as exc:
            self._denied(exc)
            with contextlib.suppress(Exception):
                await route.abort("blockedbyclient")
            return
        with contextlib.suppress(Exception):  # the page may be gone: nothing to continue
            await route.continue_()

    async def _route_socket(self, socket: WebSocketRoute) -> None:
        """A WebSocket is checked as the http request it starts with (the server's own /socket.io by path)."""
        url = socket.url
        try:
            self.policy.check_url("http" + url[2:] if url[:2].lower() == "ws" else url)
        except PolicyError as exc:
            self._denied(exc)
            with contextlib.suppress(Exception):
                await socket.close(code=1008, reason="refused by the egress policy")
            return
        socket.connect_to_server()

    def _landed(self, page: Page, frame: Frame) -> None:
        error = self.policy.frame_refusal(frame.url)
        if error is None:
            return
        self._denied(error)
        violation = self._violations.get(page)
        if violation is None or violation.cleaned.is_set():
            violation = self._violations[page] = _Violation(error)
        task = asyncio.ensure_future(self._clean(page, frame, violation))
        self._cleaning.add(task)
        task.add_done_callback(self._cleaning.discard)

    async def _clean(self, page: Page, frame: Frame, violation: _Violation) -> None:
        """The frame goes to about:blank; a page that will not go is closed (a step then gets a new one)."""
        try:
            await asyncio.wait_for(frame.goto("about:blank"), CLEAN_UP_SECONDS)
        except Exception:
            try:
                if frame is page.main_frame:
                    raise RuntimeError("the page stays where it is")
                element = await frame.frame_element()
                await element.evaluate("e => e.remove()")
            except Exception:
                with contextlib.suppress(Exception):
                    await page.close()
        finally:
            violation.cleaned.set()
