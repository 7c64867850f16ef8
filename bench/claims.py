"""What a drain of the queue shows in the run events: throughput, claim latency, and that every run ran once.

Pure: it reads events already fetched from the database (every process on one machine, so one clock)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class RunEvent:
    run_id: str
    type: str  # run.updated, step.updated
    status: str | None
    worker: str | None  # on a claim: who took the run
    key: str | None  # on a step's event: the step
    at: datetime


@dataclass
class Drain:
    """One drain of `runs` queued runs by `workers` worker processes."""

    workers: int
    runs: int
    completed: int = 0
    seconds: float = 0.0  # from the first claim to the last run's completion
    latencies_ms: list[float] = field(default_factory=list)
    runs_per_worker: list[int] = field(default_factory=list)
    start_spread: float = 0.0  # seconds between the first worker's first claim and the last worker's
    claimed_twice: int = 0  # runs claimed more than once
    steps_twice: int = 0  # steps (of any run) that started more than once
    # the conditions, measured around the drain rather than read from its events
    jobs: int = 0  # Procrastinate jobs deferred in all (one a run, unless a run was delivered twice)
    cpu_wait: float = 0.0  # seconds a second the bench's processes' threads waited for a core, summed
    load: float = 0.0  # the machine's 1-minute load average, mean over the drain

    @property
    def throughput(self) -> float:
        """Runs completed a second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def latency(self, percent: float) -> float | None:
        return percentile(self.latencies_ms, percent)

    @property
    def sound(self) -> bool:
        return self.completed == self.runs and self.claimed_twice == 0 and self.steps_twice == 0


def percentile(values: list[float], percent: float) -> float | None:
    """Nearest rank: the smallest value with at least `percent` % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def analyse(events: list[RunEvent], runs: int, workers: int) -> Drain:
    """Claim latency: for each worker, the gap between the completion of a run it executed and its next
    claim, the time a free worker slot waits for its next run while runs are queued. A worker's first claim
    has no run before it, so it counts only in the start spread."""
    claims = [e for e in events if e.type == "run.updated" and e.status == "running" and e.worker]
    done = {e.run_id: e.at for e in events if e.type == "run.updated" and e.status == "completed"}
    drain = Drain(workers, runs, completed=len(done))
    drain.claimed_twice = sum(1 for n in Counter(c.run_id for c in claims).values() if n > 1)
    started = Counter((e.run_id, e.key) for e in events if e.type == "step.updated" and e.status == "running")
    drain.steps_twice = sum(1 for n in started.values() if n > 1)
    if not claims or not done:
        return drain
    drain.seconds = (max(done.values()) - min(c.at for c in claims)).total_seconds()
    by_worker: dict[str, list[RunEvent]] = defaultdict(list)
    for claim in sorted(claims, key=lambda c: c.at):
        by_worker[claim.worker].append(claim)  # type: ignore[index]
    firsts = [taken[0].at for taken in by_worker.values()]
    drain.start_spread = (max(firsts) - min(firsts)).total_seconds()
    drain.runs_per_worker = sorted((len(taken) for taken in by_worker.values()), reverse=True)
    for taken in by_worker.values():
        for before, after in zip(taken, taken[1:], strict=False):
            if before.run_id in done:
                drain.latencies_ms.append((after.at - done[before.run_id]).total_seconds() * 1000)
    return drain
