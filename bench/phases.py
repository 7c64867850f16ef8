"""Where the wall time of a run goes, phase by phase: `python -m bench.phases run FILE [run's options]` runs
the `sop-engine run` command in this process with a clock around each phase of a step (the commit, the
Playwright call, template rendering, the checkpoint) and prints, on stderr, each phase's total, count and
mean. Timers nest (a step's total holds its Playwright call): read it top-down. Used for docs/speed.md."""

from __future__ import annotations

import asyncio
import atexit
import functools
import sys
import time
from collections import Counter, defaultdict
from typing import Any

TOTAL: defaultdict[str, float] = defaultdict(float)
COUNT: Counter[str] = Counter()


def clocked(owner: Any, name: str, label: str) -> None:
    """Puts a clock around `owner.name` (a function or a coroutine function)."""
    original = getattr(owner, name)

    def count(started: float) -> None:
        TOTAL[label] += time.perf_counter() - started
        COUNT[label] += 1

    if asyncio.iscoroutinefunction(original):

        @functools.wraps(original)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                count(started)

        setattr(owner, name, timed_async)
    else:

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                count(started)

        setattr(owner, name, timed)


def report() -> None:
    for label, seconds in sorted(TOTAL.items(), key=lambda item: -item[1]):
        print(f"{seconds:8.3f} s {COUNT[label]:6d} × {seconds / COUNT[label] * 1000:7.3f} ms  {label}", file=sys.stderr)


def main() -> None:
    from playwright.async_api import Locator

    from sop_engine import attempts, browser_session, events
    from sop_engine.runner import execution, leaf
    from sop_engine.store import journal
    from web.cli import app

    clocked(leaf.Leaf, "_leaf_once", "a step (leaf)")
    clocked(leaf, "attempt_step", "  its attempts")
    clocked(Locator, "fill", "    Locator.fill")
    clocked(Locator, "press", "    Locator.press")
    clocked(Locator, "check", "    Locator.check")
    clocked(leaf, "render_fields", "  template rendering")
    clocked(leaf, "checked_fields", "  field checks")
    clocked(browser_session.BrowserSession, "checkpoint", "  checkpoint")
    clocked(execution.Execution, "settled", "  waiting for the commit before acting")
    clocked(events.Journal, "_commit", "a commit (thread hop and sinks included)")
    clocked(journal.Journal, "record_many", "  its transaction (in the thread)")
    clocked(attempts, "render_fields", "template rendering (conditions, outputs)")
    atexit.register(report)
    sys.argv = ["sop-engine", *sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
