"""What a drain of the queue shows in the run events: throughput, claim latency, and that every run ran once.

Pure: it reads events already fetched from the database (every process on one machine, so one clock)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RunEvent:
    run_id: str
    type: str  # run.updated, step.updated
    status: str | None
    worker: str | None  # on a claim: who took the run
    key: str | None  # on a step's event: the step
    at: datetime


@dataclass(frozen=True)
class JobChange:
    """A change of a Procrastinate job, kept by a trigger the bench adds (finished jobs are deleted)."""

    job_id: int
    run_id: str  # the job's queueing lock
    change: str  # todo (deferred), doing (fetched by a worker), deleted (finished), or another status
    at: datetime


PARTS = ("job finished", "next job fetched", "run claimed")


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
    cpu_used: float = 0.0  # seconds a second the bench's processes' threads ran on a core, summed
    cpu_wait: float = 0.0  # seconds a second they were ready to run but waited for a core, summed
    load: float = 0.0  # the machine's 1-minute load average, mean over the drain
    # each claim latency cut in three, when the jobs' changes were kept: PARTS -> milliseconds
    parts: dict[str, list[float]] = field(default_factory=dict)

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


def analyse(events: list[RunEvent], runs: int, workers: int, jobs: list[JobChange] | None = None) -> Drain:
    """Claim latency: for each worker, the gap between the completion of a run it executed and its next
    claim, the time a free worker slot waits for its next run while runs are queued. A worker's first claim
    has no run before it, so it counts only in the start spread. With the jobs' changes, each gap is cut at
    the end of the finished run's job and at the fetch of the next run's job."""
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
    delivery = _Deliveries(jobs) if jobs else None
    drain.parts = {part: [] for part in PARTS} if delivery else {}
    for taken in by_worker.values():
        for before, after in zip(taken, taken[1:], strict=False):
            if before.run_id not in done:
                continue
            drain.latencies_ms.append(_ms(after.at - done[before.run_id]))
            cut = delivery.cut(before, after) if delivery else None
            if cut is not None:
                ends = [done[before.run_id], *cut, after.at]
                for part, start, end in zip(PARTS, ends, ends[1:], strict=False):
                    drain.parts[part].append(_ms(end - start))
    return drain


def _ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


class _Deliveries:
    """Which job delivered a claimed run (the last fetched for it before the claim), and when that job ended."""

    def __init__(self, jobs: list[JobChange]) -> None:
        self.fetched: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        self.ended: dict[int, datetime] = {}
        for job in sorted(jobs, key=lambda j: j.at):
            if job.change == "doing":
                self.fetched[job.run_id].append((job.at, job.job_id))
            elif job.change != "todo":
                self.ended.setdefault(job.job_id, job.at)

    def job(self, claim: RunEvent) -> int | None:
        return max(((at, job) for at, job in self.fetched.get(claim.run_id, []) if at <= claim.at), default=(0, None))[
            1
        ]

    def cut(self, before: RunEvent, after: RunEvent) -> tuple[datetime, datetime] | None:
        """When the job of `before` ended, and when the job of `after` was fetched."""
        done, next_ = self.job(before), self.job(after)
        if done is None or next_ is None or done not in self.ended:
            return None
        return self.ended[done], max(at for at, job in self.fetched[after.run_id] if job == next_)
