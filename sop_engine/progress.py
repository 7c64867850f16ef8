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


class RunProgress:
    """The figures of `progress` for one run, and the seconds its steps still pending or running typically
    take, kept up to date event by event at a cost that does not grow with the steps already done: the feed
    sends them after every step that ends. Built from the run's rows and loop sizes once (`of`); an event
    it cannot follow (`follows` is False) means building it again."""

    UNDERSTOOD = frozenset({"steps.added", "step.updated", "loop.sized", "step.retried", "log"})

    def __init__(
        self, rows: Iterable[tuple[str, str, str]], sized: Mapping[str, Mapping[str, Any]], typical: Mapping[str, float]
    ) -> None:
        """`rows`: (key, step id, status) of each step instance so far; `typical`: step id -> seconds."""
        self.typical = typical
        self.status: dict[str, str] = {}
        self.step_ids: dict[str, str] = {}
        self.done = 0
        self.left_s = 0.0  # typical seconds of the instances pending or running
        self.made: dict[str, int] = {}  # loop key -> rows made inside it so far (nested loops' too)
        self.sized: dict[str, int] = {}  # loop key -> the rows its size says it will have, while it has not ended
        for key, step_id, status in rows:
            self._add(key, step_id)
            self._move(key, status)
        for key, size in sized.items():
            self._size(key, size)

    def follows(self, event_type: str) -> bool:
        return event_type in self.UNDERSTOOD

    def apply(self, type_: str, data: Mapping[str, Any]) -> None:
        if type_ == "steps.added":
            for key in data.get("keys", ()):
                self._add(key, key.rsplit(".", 1)[-1])  # a key ends with its step's id (loops.instance_key)
        elif type_ == "step.updated" and "status" in data and data.get("key") in self.status:
            self._move(data["key"], data["status"])
        elif type_ == "loop.sized":
            self._size(data["key"], data)

    def figures(self) -> dict[str, Any]:
        total = len(self.status)
        total += sum(max(0, expected - self.made.get(key, 0)) for key, expected in self.sized.items())
        percent = round(100 * self.done / total, 1) if total else 0.0
        return {"completed": self.done, "total": total, "percent": percent}

    def eta_s(self) -> float | None:
        return round(self.left_s, 1) if self.typical else None

    def _add(self, key: str, step_id: str) -> None:
        if key in self.status:
            return
        self.status[key] = ""
        self.step_ids[key] = step_id
        for at, char in enumerate(key):  # every loop the key is inside: `a[1].b[0].c` is in `a` and `a[1].b`
            if char == "[":
                self.made[key[:at]] = self.made.get(key[:at], 0) + 1
        self._move(key, "pending")

    def _move(self, key: str, status: str) -> None:
        old = self.status[key]
        self.status[key] = status
        self.done += (status in ENDED) - (old in ENDED)
        seconds = self.typical.get(self.step_ids[key], 0.0)
        self.left_s += seconds * ((status in LEFT) - (old in LEFT))
        if status in ENDED:
            self.sized.pop(key, None)  # an ended loop (or one stopped early) has all its rows

    def _size(self, key: str, size: Mapping[str, Any]) -> None:
        if self.status.get(key) not in ENDED:
            self.sized[key] = int(size.get("iterations", 0)) * int(size.get("per_iteration", 0))


LEFT = frozenset({"pending", "running"})

__all__ = ["ENDED", "RunProgress", "instances_per_iteration", "progress", "sized_loops"]
