"""How far a run is: step instances that ended out of those it will have. Loops add their iterations' rows as
they go, so a loop that knows its items says how many instances are still to come (its `loop.sized` event):
the total does not jump as the iterations expand, and the bar does not run ahead of the work."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .states import STEP_TERMINAL
from .steps import If, Step

ENDED = frozenset(s.value for s in STEP_TERMINAL)


def instances_per_iteration(steps: list[Step]) -> int:
    """Rows one iteration of a loop body makes: a nested loop counts once (it sizes itself when it starts),
    an `if` its larger branch."""
    count = 0
    for step in steps:
        count += 1
        if isinstance(step, If):
            count += max(instances_per_iteration(step.then), instances_per_iteration(step.else_))
    return count


def progress(rows: Iterable[tuple[str, str]], sized: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`rows`: (key, status) of each step instance so far; `sized`: loop key -> its `loop.sized` event data."""
    rows = list(rows)
    status = dict(rows)
    done = sum(1 for _, s in rows if s in ENDED)
    total = len(rows)
    for key, size in sized.items():
        if status.get(key) in ENDED:
            continue  # the loop ended (or stopped early): its rows are all there
        expected = int(size.get("iterations", 0)) * int(size.get("per_iteration", 0))
        made = sum(1 for k, _ in rows if k.startswith(f"{key}["))
        total += max(0, expected - made)
    return {"completed": done, "total": total, "percent": round(100 * done / total, 1) if total else 0.0}


def sized_loops(events: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The latest `loop.sized` data per loop key (a loop run again sizes itself again)."""
    return {e["key"]: e for e in events}


__all__ = ["ENDED", "instances_per_iteration", "progress", "sized_loops"]
