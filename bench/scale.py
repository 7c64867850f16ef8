"""`python -m bench.scale [--runs N]`: the scale figure. N queued runs of a light SOP, drained by 1, 2 and 4
worker processes (`--concurrency 1` each) on PostgreSQL: throughput and claim latency per worker count.

For each worker count: a fresh database, one `serve --concurrency 0` process, every run queued (and its job
waiting) before any worker starts, then the workers started at once. Figures come from the run events in the
database. `--out PATH` puts the section and its targets into that report in place of the ones there."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from tests.services import Postgres, free_port

from .claims import PARTS, Drain, JobChange, RunEvent, analyse, percentile
from .measure import cpu_times, descendants
from .report import Report, splice

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
SECRET_KEY = "3q2GFxwzwGQ0Qm3xZ8rJ0Yb3eW5b7eV2m7zJ0b9Q7Xk="  # a Fernet key the processes share
STEPS, SLEEP_MS = 10, 100
SOP = (
    "sop: 1\nid: scale\nname: Ten short sleeps and a set\nsteps:\n"
    + "".join(f"  - {{id: s{i}, action: sleep, duration: {SLEEP_MS}ms}}\n" for i in range(STEPS))
    + "  - {id: done, action: set, values: {done: true}}\n"
)
WORKERS = (1, 2, 4)
TERMINAL = ("completed", "failed", "cancelled")


def _env(data: Path, database_url: str) -> dict[str, str]:
    env = {**os.environ, "SOP_DATA_DIR": str(data), "SOP_DATABASE_URL": database_url, "SOP_SECRET_KEY": SECRET_KEY}
    env.update(SOP_API_TOKEN=TOKEN, SOP_DRAIN_SECONDS="0", PYTHONPATH=str(ROOT))
    return env


def _wait(
    what: str, ready: Callable[[], bool], procs: list[subprocess.Popen[bytes]], timeout: float, every: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: still not done after {timeout:.0f} s")
        time.sleep(every)


# finished jobs are deleted (and their events with them): a trigger keeps when each job was fetched and ended
KEEP_JOB_CHANGES = """
CREATE TABLE bench_job_changes (job_id bigint, run_id text, change text, at timestamptz);
CREATE FUNCTION bench_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO bench_job_changes VALUES (OLD.id, OLD.queueing_lock, 'deleted', clock_timestamp());
        RETURN OLD;
    END IF;
    INSERT INTO bench_job_changes VALUES (NEW.id, NEW.queueing_lock, NEW.status::text, clock_timestamp());
    RETURN NEW;
END $$;
CREATE TRIGGER bench_job_changed AFTER INSERT OR UPDATE OF status OR DELETE ON procrastinate_jobs
    FOR EACH ROW EXECUTE FUNCTION bench_job_changed();
"""


def _jobs(conn: psycopg.Connection) -> list[JobChange]:
    rows = conn.execute("SELECT job_id, run_id, change, at FROM bench_job_changes")
    return [JobChange(*row) for row in rows]


def _count(conn: psycopg.Connection, query: str) -> int:
    return conn.execute(query).fetchone()[0]  # type: ignore[index]


def _events(conn: psycopg.Connection) -> list[RunEvent]:
    rows = conn.execute(
        "SELECT run_id, type, data, at FROM run_events WHERE type IN ('run.updated', 'step.updated') ORDER BY id"
    )
    return [RunEvent(r[0], r[1], r[2].get("status"), r[2].get("worker"), r[2].get("key"), r[3]) for r in rows]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Processes:
    """The server and workers of one drain, and the PostgreSQL cluster under them: what they wait for a core."""

    def __init__(self, cluster: Postgres, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: list[str], log: str) -> None:
        with open(self.folder / log, "ab") as out:
            command = [sys.executable, "-m", "web", *args]
            self.procs.append(subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=out))

    def cpu_times(self) -> tuple[float, float]:
        return cpu_times(descendants(self.postmaster, *(p.pid for p in self.procs)))

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in sorted(self.folder.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def drain(cluster: Postgres, work: Path, runs: int, workers: int) -> Drain:
    """Queues `runs` runs, then lets `workers` worker processes drain the queue; what the events show."""
    url = cluster.new_database("scale")
    folder = work / f"workers-{workers}"
    folder.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = Processes(cluster, folder, _env(folder / "data", url))
    try:
        processes.spawn(["serve", "--port", str(port), "--concurrency", "0"], "server.log")
        _wait("the server", lambda: _healthy(base), processes.procs, 60)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            _queue(base, runs)
            waiting = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            _wait("a job for every run", lambda: _count(conn, waiting) >= runs, processes.procs, 60)
            conn.execute(KEEP_JOB_CHANGES)
            logs = [folder / f"worker-{i}.log" for i in range(workers)]
            for log in logs:
                processes.spawn(["worker", "--concurrency", "1"], log.name)
            ready = lambda: all(log.exists() and "run(s) at once" in log.read_text() for log in logs)  # noqa: E731
            _wait("the workers", ready, processes.procs, 120)
            (ran, waited), since, loads = processes.cpu_times(), time.monotonic(), []
            ended = f"SELECT count(*) FROM runs WHERE status IN {TERMINAL}"
            budget = runs * (STEPS * SLEEP_MS / 1000 + 0.5) / workers * 2 + 120

            def all_ended() -> bool:
                loads.append(os.getloadavg()[0])
                return _count(conn, ended) >= runs

            _wait(f"{runs} runs to end", all_ended, processes.procs, budget, every=0.5)
            (ran_end, waited_end), took = processes.cpu_times(), time.monotonic() - since
            result = analyse(_events(conn), runs, workers, _jobs(conn))
            result.jobs = _count(conn, "SELECT last_value FROM procrastinate_jobs_id_seq")
            result.cpu_used, result.cpu_wait = (ran_end - ran) / took, (waited_end - waited) / took
            result.load = sum(loads) / len(loads)
            return result
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{processes.logs()}") from None
    finally:
        processes.stop()


def _queue(base: str, runs: int) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api:
        api.post("/api/sops", content=SOP, headers={"Content-Type": "application/yaml"}).raise_for_status()
        for _ in range(runs):
            api.post("/api/runs", json={"sop_id": "scale"}).raise_for_status()


def measure(runs: int, counts: tuple[int, ...] = WORKERS) -> list[Drain]:
    cluster = Postgres().start()
    try:
        with tempfile.TemporaryDirectory(prefix="sop-scale-") as folder:
            return [drain(cluster, Path(folder), runs, n) for n in counts]
    finally:
        cluster.stop()


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
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every process at this niceness (-10: ahead of a shared machine's other work; root)",
    )
    args = parser.parse_args()
    if args.nice:
        os.nice(args.nice)  # inherited by the processes started from here, PostgreSQL included
    command = "python -m bench.scale " + " ".join(shlex.quote(a) for a in sys.argv[1:])
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
