"""`python -m bench.scale [--runs N]`: the scale figure. N queued runs of a light SOP, drained by 1, 2 and 4
worker processes (`--concurrency 1` each) on PostgreSQL: throughput and claim latency per worker count.

For each worker count: a fresh database, one `serve --concurrency 0` process, every run queued (and its job
waiting) before any worker starts, then the workers started at once (bench/drains.py). Figures come from the run
events in the database. `--out PATH` puts the section and its targets into that report in place of the ones there."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from .claims import PARTS, Drain, percentile
from .drains import ROOT, SLEEP_MS, STEPS, measure
from .report import Report, splice

WORKERS = (1, 2, 4)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _commit() -> str:
    found = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def _scheduling() -> str:
    """How this process (and so every process it starts, PostgreSQL included) is scheduled."""
    policy = os.sched_getscheduler(0)
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        name = "SCHED_FIFO" if policy == os.SCHED_FIFO else "SCHED_RR"
        return f"scheduled {name} {os.sched_getparam(0).sched_priority} (ahead of the machine's other work)"
    return f"scheduled as usual (nice {os.nice(0)})"


def _chrt() -> str:
    """The `chrt` this process was started under, as a command's prefix ("" when scheduled as usual)."""
    if os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
        flag = "-f" if os.sched_getscheduler(0) == os.SCHED_FIFO else "-r"
        return f"chrt {flag} {os.sched_getparam(0).sched_priority} "
    return ""


def _cpu() -> str:
    names = [
        line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line
    ]
    return f"{names[0] if names else 'unknown CPU'}, {os.cpu_count()} cores"


def figures(report: Report, drains: list[Drain], command: str) -> None:
    """The section (with its own command, machine, date and commit: it may be put into a report alone) and
    its targets."""
    one = next((d for d in drains if d.workers == 1), None)
    runs = drains[0].runs if drains else 0
    lines = [
        f"### scale: {runs} queued runs drained by {', '.join(str(d.workers) for d in drains)} worker processes",
        "",
        f"A run is {STEPS} sleep steps of {SLEEP_MS} ms and a set step (about {STEPS * SLEEP_MS / 1000:.1f} s, "
        "almost no CPU: the cores do not cap it). For each worker count: a fresh PostgreSQL database, one "
        "`serve --concurrency 0` process, every run queued and its Procrastinate job waiting before any worker "
        "starts, then N `worker --concurrency 1` processes started at once. Drain time: from the first claim to "
        "the last run's completion (run events' timestamps, one clock); throughput: runs ÷ drain time. "
        "**Claim latency**: for each worker, the gap between the `run.updated` completed event of a run it "
        "executed and its next claim (`run.updated` running, its name), i.e. how long a free worker slot waits "
        "for its next run while runs are queued (finishing the job, fetching the next, claiming it through the "
        "gate); a worker's first claim is left out (start spread). Percentiles by nearest rank.",
        "",
        f"- command: `{command}`; commit {_commit()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_cpu()}; "
        f"{_scheduling()}",
        "",
        "| workers | drain time | throughput | vs 1 worker | claim latency p50 | p99 | max | every run once |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in drains:
        ratio = f"{d.throughput / one.throughput:.2f} ×" if one and one.throughput else "–"
        sound = "yes" if d.sound else f"**no**: {d.completed} completed, {d.claimed_twice} claimed twice, "
        sound += "" if d.sound else f"{d.steps_twice} steps twice"
        lines.append(
            f"| {d.workers} | {d.seconds:.1f} s | {d.throughput:.3f} runs/s | {ratio} | {_ms(d.latency(50))} | "
            f"{_ms(d.latency(99))} | {_ms(max(d.latencies_ms, default=None))} | {sound} |"
        )
    lines += [
        "",
        "How each drain went: the runs each worker executed; the start spread (first claim of the first worker "
        "to that of the last); the jobs deferred (one a run unless a run was delivered twice); the CPU the threads "
        "of the workers, the server and PostgreSQL used, and the time they were ready to run but waited for a "
        "core (contention on a shared machine), each summed over the threads, a second of drain; the machine's "
        "1-minute load average (these processes included).",
        "",
        "| workers | runs per worker | start spread | jobs deferred | CPU used | CPU wait | load average |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in drains:
        lines.append(
            f"| {d.workers} | {'/'.join(map(str, d.runs_per_worker))} | {d.start_spread:.2f} s | {d.jobs} | "
            f"{d.cpu_used * 1000:.0f} ms/s | {d.cpu_wait * 1000:.0f} ms/s | {d.load:.1f} |"
        )
    if any(d.parts for d in drains):
        lines += [
            "",
            "Where a claim latency goes (p50 / p99 of each part; a trigger the bench adds keeps when each job was "
            "fetched and ended): **job finished**, from the completed event to the end of the run's job (the "
            "runner's wrap-up, the pool's, Procrastinate's `finish_job`); **next job fetched**, to the fetch of the "
            "next run's job (Procrastinate's worker loop, `fetch_job`); **run claimed**, to the claim event (the "
            "pool's `take`, `claim_run` through the gate).",
            "",
            "| workers | " + " | ".join(PARTS) + " |",
            "| --- |" + " --- |" * len(PARTS),
        ]
        for d in drains:
            cells = [f"{_ms(percentile(d.parts[p], 50))} / {_ms(percentile(d.parts[p], 99))}" for p in PARTS]
            lines.append(f"| {d.workers} | " + " | ".join(cells) + " |")
    contended = [str(d.workers) for d in drains if d.cpu_wait > d.cpu_used]
    if contended:
        lines += [
            "",
            f"At {', '.join(contended)} worker(s) the processes waited for a core longer than they ran (CPU wait "
            "above CPU used): the machine was busy with other work, and these figures measure its contention as "
            "much as the engine. `chrt -f 1 python -m bench.scale` schedules them (PostgreSQL included) ahead of it.",
        ]
    report.sections.append("\n".join(lines) + "\n")
    targets(report, drains, one)


def targets(report: Report, drains: list[Drain], one: Drain | None) -> None:
    four = next((d for d in drains if d.workers == 4), None)
    if one and four and one.throughput:
        ratio = four.throughput / one.throughput
        report.target("scale: 4 workers' throughput next to 1 worker's", "≥ 3.5 ×", f"{ratio:.2f} ×", ratio >= 3.5)
    else:
        report.target("scale: 4 workers' throughput next to 1 worker's", "≥ 3.5 ×", "not measured", None)
    measured = [(d.latency(99), d.workers) for d in drains if d.latencies_ms]
    if measured:
        worst, at = max(measured)
        said = f"{worst:.1f} ms (worst, at {at} worker{'s' if at > 1 else ''})"
        report.target("scale: claim latency p99", "≤ 50 ms", said, worst <= 50)  # type: ignore[operator]
    else:
        report.target("scale: claim latency p99", "≤ 50 ms", "not measured", None)
    bad = [d for d in drains if not d.sound]
    report.target(
        "scale: every run completed, each claimed and each step started once",
        "all",
        "all" if not bad else f"not at {', '.join(str(d.workers) for d in bad)} worker(s)",
        not bad if drains else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="runs queued for each worker count (1000)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated (1,2,4)")
    parser.add_argument("--out", type=Path, help="a report (docs/benchmarks.md) to put the section into")
    args = parser.parse_args()
    command = _chrt() + "python -m bench.scale " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = Report()
    figures(report, measure(args.runs, tuple(int(n) for n in args.workers.split(","))), command.strip())
    print(report.sections[0])
    for row in report.target_rows():
        print(row)
    if args.out:
        args.out.write_text(splice(args.out.read_text(), report))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
