"""Circuit breakers per target host: after `failures` failures in a row that point at a host (it could not be
reached, it answered 5xx, it did not answer in time) within `window` seconds, steps against it fail at once
for `cooldown` seconds; then one attempt, the trial, goes through: its success closes the breaker, its
failure opens it again.

The database is the authority (store.breakers), so that every process sees one state. A process keeps what it
last read of each host: a closed breaker with no failures counted is trusted for FRESH seconds, so that the
usual step (a healthy host) costs no database call; anything else is asked of the database."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import settings
from .errors import ErrorKind, StepError
from .events import call_store, utcnow
from .steps import uses_browser
from .store import BreakerState

if TYPE_CHECKING:
    from .attempts import StepContext
    from .document import BreakerSpec
    from .steps import Step
    from .store import Store

FRESH = 5.0  # seconds a process trusts a closed breaker it read, before it reads it again
TARGETED = frozenset({"navigate", "http"})  # the actions that send a request to a host of their own
COUNTED = frozenset({ErrorKind.NAVIGATION, ErrorKind.HTTP, ErrorKind.TIMEOUT})  # of those actions' failures
# a step on a page already loaded (click, fill, extract…) counts only a navigation that failed (a link to a
# host that is down); its timeouts are element waits, which say nothing of the host
ON_PAGE_COUNTED = frozenset({ErrorKind.NAVIGATION})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
STATES = ("closed", "open", "half_open")
HOST_KEY = re.compile(r"[a-z0-9._\-\[\]:]{1,300}")  # what a breaker's key may be

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Limits:
    failures: int  # in a row to open a breaker; 0: breakers are off
    window: float  # seconds those failures must fall within
    cooldown: float  # seconds an opened breaker stays open

    @classmethod
    def configured(cls) -> Limits:
        options = settings.current()
        return cls(options.breaker_failures, float(options.breaker_window), float(options.breaker_cooldown))

    def tightened(self, spec: BreakerSpec | None) -> Limits:
        """The server's limits made stricter by a document's `defaults.breaker`; a looser value in it is
        ignored (fewer failures, a longer window and cool-down are stricter)."""
        if spec is None:
            return self
        failures = self.failures
        if spec.failures is not None:
            failures = spec.failures if failures == 0 else min(failures, spec.failures)
        return Limits(failures, max(self.window, spec.window or 0.0), max(self.cooldown, spec.cooldown or 0.0))


@functools.lru_cache(maxsize=4096)  # a run asks it of the same few URLs at every step
def host_of(url: str) -> str | None:
    """The breaker's key for a URL: `host:port`, lower case, the scheme's port when it gives none; None for a
    URL that names no network host (file:, data:, about:)."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    try:
        host = parts.hostname.encode("idna").decode("ascii").lower()  # as it goes on the wire: bücher → xn--
    except UnicodeError:
        return None
    key = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return key if HOST_KEY.fullmatch(key) else None


class CircuitOpen(StepError):
    def __init__(self, host: str, until: datetime | None, trial: bool = False) -> None:
        when = until.strftime("%Y-%m-%d %H:%M:%S UTC") if until else "its cool-down ends"
        under_way = " (its trial attempt is under way)" if trial else ""
        super().__init__(ErrorKind.CIRCUIT, f"circuit open for {host} until {when}{under_way}")
        self.host = host
        self.until = until


class Breakers:
    """This process's view of the breakers, the database's being the authority. `clock`: what time it is
    (tests move it on instead of waiting for a cool-down)."""

    def __init__(self, store: Store, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock
        self.limits = Limits.configured()
        self._known: dict[str, tuple[BreakerState, datetime]] = {}  # host: what was read, and when

    def target(self, step: Step, fields: dict[str, Any], ctx: StepContext) -> str | None:
        """The host a step sends its request to; None for a step that sends none of its own."""
        if step.action not in TARGETED:
            return None
        try:
            return host_of(ctx.policy.absolute(str(fields["url"]), step.action))
        except Exception:  # the step itself says what is wrong with its URL
            return None

    @staticmethod
    def page_host(step: Step, ctx: StepContext) -> str | None:
        """The host of the page a browser step acts on (its tab's address), for a step that sends no request
        of its own; None before the tab has a page."""
        if step.action in TARGETED or not uses_browser(step):
            return None
        url = ctx.execution.tab_url(ctx.tab)
        return host_of(url) if url else None

    async def guard(
        self, step: Step, fields: dict[str, Any], ctx: StepContext, attempt: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """Runs one attempt of the step through its host's breaker: refused at once (CircuitOpen) while it is
        open; its outcome counted against the host. A step on a page of that host (a click, a fill…) is refused
        too while the breaker is open, but it is never the trial, and only a failed navigation of its counts."""
        host = self.target(step, fields, ctx)
        on_page = host is None
        if on_page:
            host = self.page_host(step, ctx)
        limits = self.limits.tightened(ctx.execution.sop.defaults.breaker) if host else self.limits
        if host is None or limits.failures == 0:
            return await attempt()
        if on_page:
            await self._refuse_while_open(host)
            try:
                return await attempt()
            except StepError as exc:
                if exc.kind in ON_PAGE_COUNTED:
                    await self._failed(host, ctx.execution.mask(exc.describe()), limits, False, ctx)
                raise
        trial = await self._enter(host, ctx.timeout + 10.0)
        try:
            result = await attempt()
        except StepError as exc:
            if exc.kind in COUNTED:  # as every text the run writes, with its secrets masked
                await self._failed(host, ctx.execution.mask(exc.describe()), limits, trial, ctx)
            elif trial:
                await self._release(host)
            raise
        except BaseException:
            if trial:
                with contextlib.suppress(Exception):
                    await self._release(host)
            raise
        status = result.get("status")
        if isinstance(status, int) and status >= 500:  # an error page is a page, but the host is failing
            await self._failed(host, f"{step.action} to {host} answered {status}", limits, trial, ctx)
        else:
            await self._succeeded(host, trial)
        return result

    async def _enter(self, host: str, lease: float) -> bool:
        """Whether this attempt is the trial of a half-open breaker; CircuitOpen when it may not go."""
        now = self.clock()
        known = self._known.get(host)
        if known is not None and known[0].state == "closed" and now - known[1] < timedelta(seconds=FRESH):
            return False
        # a read first (on SQLite it takes no lock); a write only when the trial may be had
        found = await call_store(self.store.breaker, host, what=f"reading breaker {host}")
        trial = False
        if found is not None and _trial_due(found, now):
            found, trial = await call_store(self.store.breaker_trial, host, now, lease, what=f"trying {host}")
        self._learn(host, found or BreakerState.closed(host, now), now)
        if found is None or found.state == "closed" or trial:
            return trial
        if found.state == "half_open":
            raise CircuitOpen(host, found.trial_until, trial=True)
        raise CircuitOpen(host, found.opened_until)

    async def _refuse_while_open(self, host: str) -> None:
        """CircuitOpen while the host's breaker is open and its cool-down runs; a step on a page never takes the
        trial, and after the cool-down it goes on (its page is loaded already)."""
        now = self.clock()
        known = self._known.get(host)
        if known is not None and known[0].state == "closed" and now - known[1] < timedelta(seconds=FRESH):
            return
        found = await call_store(self.store.breaker, host, what=f"reading breaker {host}")
        self._learn(host, found or BreakerState.closed(host, now), now)
        if found is not None and found.state == "open" and not _trial_due(found, now):
            raise CircuitOpen(host, found.opened_until)

    async def _failed(self, host: str, error: str, limits: Limits, trial: bool, ctx: StepContext) -> None:
        now = self.clock()
        found, opened = await call_store(
            lambda: self.store.breaker_failed(
                host,
                error,
                now,
                threshold=limits.failures,
                window=limits.window,
                cooldown=limits.cooldown,
                trial=trial,
            ),
            what=f"counting a failure against {host}",
        )
        self._learn(host, found, now)
        if opened:
            until = found.opened_until.strftime("%Y-%m-%d %H:%M:%S UTC") if found.opened_until else "?"
            await ctx.log(f"circuit opened for {host} until {until}: {error}", "warning")

    async def _succeeded(self, host: str, trial: bool) -> None:
        known = self._known.get(host)
        if not trial and known is not None and known[0].state == "closed" and known[0].failures == 0:
            return  # the usual case: nothing to reset
        now = self.clock()
        found = await call_store(
            lambda: self.store.breaker_succeeded(host, now, trial=trial), what=f"closing breaker {host}"
        )
        self._learn(host, found or BreakerState.closed(host, now), now)

    async def _release(self, host: str) -> None:
        now = self.clock()
        self._known.pop(host, None)
        await call_store(self.store.breaker_released, host, now, what=f"releasing breaker {host}")

    def _learn(self, host: str, found: BreakerState, now: datetime) -> None:
        self._known[host] = (found, now)

    def forget(self, host: str | None = None) -> None:
        """What this process read of a host (of every one) is read again (a breaker closed by hand)."""
        if host is None:
            self._known.clear()
        else:
            self._known.pop(host, None)


def _trial_due(found: BreakerState, now: datetime) -> bool:
    if found.state == "open":
        return found.opened_until is None or found.opened_until <= now
    return found.state == "half_open" and (found.trial_until is None or found.trial_until <= now)


def state_json(found: BreakerState) -> dict[str, Any]:
    def at(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "host": found.host,
        "state": found.state,
        "failures": found.failures,
        "window_start": at(found.window_start),
        "opened_until": at(found.opened_until),
        "trial_until": at(found.trial_until),
        "last_error": found.last_error,
        "opens": found.opens,
        "updated_at": at(found.updated_at),
    }


class BreakerGauges:
    """A prometheus_client collector: each host's breaker state (0 closed, 1 open, 2 half-open) and how many
    times it opened, read from the database at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Any]:
        return list(self._families([]))

    def collect(self) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            found = self.store.breakers()
        except SQLAlchemyError:  # the scrape goes on without them
            return iter(())
        return self._families(found)

    def _families(self, found: list[BreakerState]) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily(
            "sop_breaker_state", "Circuit breaker per target host: 0 closed, 1 open, 2 half-open.", labels=["host"]
        )
        opens = CounterMetricFamily(
            "sop_breaker_opens", "Times a target host's circuit breaker opened.", labels=["host"]
        )
        for breaker in found:
            state.add_metric([breaker.host], STATES.index(breaker.state))
            opens.add_metric([breaker.host], breaker.opens)
        yield state
        yield opens
