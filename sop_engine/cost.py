"""What a run cost: wall time, the browser's CPU time and JS heap, bytes received, requests, and the bytes of
the files it saved; per run (accumulated over its executions) and per step.

Counting is passive: each page of the run's context gets a CDP session whose Network events are counted as
they come (`requestWillBeSent`: a request, each hop of a redirect too; `loadingFinished`: its
`encodedDataLength`, the bytes as they came over the wire, which Chromium counts with the response's headers
for most responses but not all). CPU time and heap come from `Performance.getMetrics` (`TaskDuration`,
`JSHeapUsedSize`): a reading is *sent* as a browser step ends and answered while the next step runs, so no
step waits for it; Chromium answers a page's messages in order, so it reads the page as the step left it. A
page is read at most every SAMPLE_EVERY seconds (a reading costs the browser about as much as a quick step's
engine overhead): the CPU time between two readings is shared among the steps that ended on the page in
between, by their wall time, and each of them gets the heap of that reading. Those two figures are
approximate: a renderer process may serve several pages (of this run or of others), a cross-site navigation
swaps it (its counters start again), the time between steps counts too, and a heap read now and then is not
its peak. A step's other figures are written when it ends; its CPU and heap once read, with a later write of
the run (`late`)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.async_api import Page

FIGURES = ("wall_ms", "browser_cpu_ms", "js_heap_peak_bytes", "bytes_received", "requests", "artifact_bytes")
APPROXIMATE = ["browser_cpu_ms", "js_heap_peak_bytes"]
WRITE_EVERY = 1.0  # seconds between writes of the run's figures (and the steps' late ones) while it runs
SAMPLE_EVERY = 0.2  # seconds between two readings of a page's CPU time and heap: one costs the browser ~0.5 ms
SAMPLE_TIMEOUT = 2.0  # seconds a page's attachment is waited for, and the last readings as the run ends
METERED = True  # off only to measure what metering costs (bench)


@dataclass
class Figures:
    """One set of figures; None: not measured (no page was sampled)."""

    wall_ms: float = 0.0
    browser_cpu_ms: float | None = None
    js_heap_peak_bytes: int | None = None
    bytes_received: int = 0
    requests: int = 0
    artifact_bytes: int = 0

    @classmethod
    def read(cls, stored: Any) -> Figures:
        """Figures stored earlier (a run resumed or recovered goes on from them); what does not read is 0."""
        found = cls()
        if isinstance(stored, dict):
            for name in FIGURES:
                value = stored.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    setattr(found, name, value)
        return found

    def plus(self, other: Figures) -> Figures:
        """Both together: times, bytes and requests add up; the heap's peak is the larger."""
        return Figures(
            self.wall_ms + other.wall_ms,
            _add(self.browser_cpu_ms, other.browser_cpu_ms),
            _max(self.js_heap_peak_bytes, other.js_heap_peak_bytes),
            self.bytes_received + other.bytes_received,
            self.requests + other.requests,
            self.artifact_bytes + other.artifact_bytes,
        )

    @classmethod
    def total(cls, sums: dict[str, Any]) -> Figures:
        """Figures summed by a query (None where no run had the figure)."""
        return cls(**{name: sums[name] if sums.get(name) is not None else getattr(cls(), name) for name in FIGURES})

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {name: getattr(self, name) for name in FIGURES}
        shown["wall_ms"] = round(self.wall_ms, 1)
        if self.browser_cpu_ms is not None:
            shown["browser_cpu_ms"] = round(self.browser_cpu_ms, 1)
        return {**shown, "approximate": list(APPROXIMATE)}


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class _Counters:
    bytes_received: int = 0
    requests: int = 0
    artifact_bytes: int = 0


@dataclass
class _Start:
    at: float
    counted: _Counters
    sampled: bool  # a leaf step: `sample` follows its end


class _PageMeter:
    """One page's CDP session and its last CPU and heap reading."""

    def __init__(self) -> None:
        self.session: Any = None
        self.task_s: float | None = None  # TaskDuration at the last sample
        self.sent_at = float("-inf")  # when the last sample was asked for
        self.steps: list[tuple[str, dict[str, Any]]] = []  # steps ended on the page since: key, figures


class CostMeter:
    """The cost of one execution of a run, on top of what the run's earlier executions cost (`stored`)."""

    def __init__(self, stored: Any = None) -> None:
        self.base = Figures.read(stored)
        self.on = METERED
        self.counted = _Counters()
        self.cpu_ms: float | None = None
        self.heap_peak: int | None = None
        self._started: float | None = None
        self._pages: dict[Page, asyncio.Future[_PageMeter | None]] = {}
        self._steps: dict[str, _Start] = {}
        self._ended: dict[str, dict[str, Any]] = {}  # step key -> its figures as it ended, until `sample`
        self._late: dict[str, dict[str, Any]] = {}  # step key -> its figures with CPU and heap, to be written
        self._samples: set[asyncio.Future[None]] = set()
        self._written_at = float("-inf")
        self._closed = False

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def start(self) -> None:
        """The execution starts: its wall time runs from now."""
        self._started = self._now()

    # pages ------------------------------------------------------------------------------------

    async def watch(self, page: Page) -> None:
        """Counts `page` from now on; once attached (awaited before a page the run opens is used, so that its
        first request is counted). A page watched already is not attached twice."""
        if not self.on or self._closed:
            return
        found = self._pages.get(page)
        if found is None:
            found = self._pages[page] = asyncio.ensure_future(self._attach(page))
        await asyncio.wait([found], timeout=SAMPLE_TIMEOUT)  # a page that hangs is counted once attached

    def watch_soon(self, page: Page) -> None:
        """A page the run did not open itself (a popup): attached in the background, so its very first
        requests may go uncounted."""
        if self.on and not self._closed and page not in self._pages:
            self._pages[page] = asyncio.ensure_future(self._attach(page))

    async def _attach(self, page: Page) -> _PageMeter | None:
        meter = _PageMeter()
        try:
            session = await page.context.new_cdp_session(page)
            session.on("Network.requestWillBeSent", self._request)
            session.on("Network.loadingFinished", self._received)
            _, _, metrics = await asyncio.gather(
                session.send("Network.enable"),
                session.send("Performance.enable"),
                session.send("Performance.getMetrics"),
            )
        except Exception:  # a page closed as it opened: nothing to count
            return None
        meter.session = session
        meter.task_s, _ = _readings(metrics)
        return meter

    def _request(self, _: Any) -> None:
        self.counted.requests += 1

    def _received(self, params: dict[str, Any]) -> None:
        size = params.get("encodedDataLength")
        if isinstance(size, int | float) and size > 0:
            self.counted.bytes_received += int(size)

    # steps ------------------------------------------------------------------------------------

    def step_started(self, key: str, sampled: bool = True) -> None:
        """`sampled`: `sample(key, ...)` is called once the step ended (a leaf step; not a loop or an if)."""
        if self.on:
            counted = _Counters(self.counted.bytes_received, self.counted.requests, self.counted.artifact_bytes)
            self._steps[key] = _Start(self._now(), counted, sampled)

    def artifact(self, size: int) -> None:
        """A file of the run was saved: its bytes count."""
        self.counted.artifact_bytes += size

    def step_ended(self, key: str) -> dict[str, Any] | None:
        """The step's figures as it ends: what the run's pages received, and the files the run saved, between
        its start and now (a loop's or an if's children's included; parallel steps each count what happened
        while they ran). CPU and heap come with its sample (`sample`). None when the step was not started."""
        start = self._steps.pop(key, None)
        if start is None:
            return None
        counted, before = self.counted, start.counted
        figures = Figures(
            wall_ms=(self._now() - start.at) * 1000,
            bytes_received=counted.bytes_received - before.bytes_received,
            requests=counted.requests - before.requests,
            artifact_bytes=counted.artifact_bytes - before.artifact_bytes,
        ).as_dict()
        if start.sampled:
            self._ended[key] = figures
        return figures

    def sample(self, key: str, page: Page | None) -> None:
        """After the step `key` ended: when it acted on `page`, its CPU time and heap, read in the background
        and given back with `late`. A page is read at most every SAMPLE_EVERY seconds: the CPU time between
        two readings is shared among the steps that ended on the page in between, by their wall time."""
        figures = self._ended.pop(key, None)
        meter = _attached(self._pages.get(page)) if page is not None else None
        if figures is None or meter is None or self._closed:
            return
        meter.steps.append((key, figures))
        now = self._now()
        if now - meter.sent_at >= SAMPLE_EVERY:
            self._read(meter, now)

    def _read(self, meter: _PageMeter, now: float) -> None:
        meter.sent_at = now
        steps, meter.steps = meter.steps, []
        task = asyncio.ensure_future(self._sample(meter, steps))
        self._samples.add(task)
        task.add_done_callback(self._samples.discard)

    async def _sample(self, meter: _PageMeter, steps: list[tuple[str, dict[str, Any]]]) -> None:
        with contextlib.suppress(Exception):  # the page closed meanwhile: its last reading stays
            task_s, heap = _readings(await meter.session.send("Performance.getMetrics"))
            if task_s is None:
                return
            # a cross-site navigation swaps the page's renderer: its counter starts again from 0
            before = meter.task_s if meter.task_s is not None and meter.task_s <= task_s else 0.0
            meter.task_s = task_s
            cpu_ms = (task_s - before) * 1000
            self.cpu_ms = (self.cpu_ms or 0.0) + cpu_ms
            self.heap_peak = _max(self.heap_peak, heap)
            walls = sum(figures["wall_ms"] for _, figures in steps)
            for key, figures in steps:
                share = figures["wall_ms"] / walls if walls > 0 else 1 / len(steps)
                self._late[key] = {**figures, "browser_cpu_ms": round(cpu_ms * share, 1), "js_heap_peak_bytes": heap}

    # writes -----------------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether the run's figures (and the steps' late ones) are to go with this write: at most every
        WRITE_EVERY seconds while the run goes on."""
        if not self.on:
            return False
        now = self._now()
        if now - self._written_at < WRITE_EVERY:
            return False
        self._written_at = now
        return True

    def late(self) -> dict[str, dict[str, Any]]:
        """Steps whose CPU and heap came back since the last call: step key -> all its figures."""
        found, self._late = self._late, {}
        return found

    def figures(self) -> Figures:
        wall = (self._now() - self._started) * 1000 if self._started is not None else 0.0
        counted = self.counted
        mine = Figures(
            wall, self.cpu_ms, self.heap_peak, counted.bytes_received, counted.requests, counted.artifact_bytes
        )
        return self.base.plus(mine)

    def run_cost(self) -> dict[str, Any]:
        return self.figures().as_dict()

    async def close(self) -> None:
        """Before the browser closes: the samples under way, then a last one of every page still open (what
        happened after the last step)."""
        if self._closed:
            return
        self._closed = True
        now = self._now()
        for found in self._pages.values():
            meter = _attached(found)
            if meter is not None:
                self._read(meter, now)
        if self._samples:
            await asyncio.wait(list(self._samples), timeout=SAMPLE_TIMEOUT)
        for found in self._pages.values():
            found.cancel()


def _attached(found: asyncio.Future[_PageMeter | None] | None) -> _PageMeter | None:
    """The page's meter, once it is attached."""
    if found is None or not found.done() or found.cancelled():
        return None
    return found.result()


def _readings(answer: Any) -> tuple[float | None, int | None]:
    """TaskDuration (seconds) and JSHeapUsedSize (bytes) from a Performance.getMetrics answer."""
    values = {m.get("name"): m.get("value") for m in (answer or {}).get("metrics", ())}
    task, heap = values.get("TaskDuration"), values.get("JSHeapUsedSize")
    return (
        float(task) if isinstance(task, int | float) else None,
        int(heap) if isinstance(heap, int | float) else None,
    )
