"""One drain of the queue, for the scale figure: a fresh database, a server, every run queued (with its job
waiting), then N worker processes started at once; what the run events show, and the conditions around it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from tests.services import Postgres, free_port

from .claims import Drain, JobChange, RunEvent, analyse
from .measure import cpu_times, descendants

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
SECRET_KEY = "3q2GFxwzwGQ0Qm3xZ8rJ0Yb3eW5b7eV2m7zJ0b9Q7Xk="  # a Fernet key the processes share
STEPS, SLEEP_MS = 10, 100
SOP = (
    "sop: 1\nid: scale\nname: Ten short sleeps and a set\nsteps:\n"
    + "".join(f"  - {{id: s{i}, action: sleep, duration: {SLEEP_MS}ms}}\n" for i in range(STEPS))
    + "  - {id: done, action: set, values: {done: true}}\n"
)
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

            def ready() -> bool:
                return all(log.exists() and "run(s) at once" in log.read_text() for log in logs)

            _wait("the workers", ready, processes.procs, 120)
            return _drained(conn, processes, runs, workers)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{processes.logs()}") from None
    finally:
        processes.stop()


def _drained(conn: psycopg.Connection, processes: Processes, runs: int, workers: int) -> Drain:
    """Once every run ended: what the events show, with the CPU the processes used and waited for meanwhile."""
    (ran, waited), since, loads = processes.cpu_times(), time.monotonic(), []
    ended = f"SELECT count(*) FROM runs WHERE status IN {TERMINAL}"

    def all_ended() -> bool:
        loads.append(os.getloadavg()[0])
        return _count(conn, ended) >= runs

    budget = runs * (STEPS * SLEEP_MS / 1000 + 0.5) / workers * 2 + 120
    _wait(f"{runs} runs to end", all_ended, processes.procs, budget, every=0.5)
    (ran_end, waited_end), took = processes.cpu_times(), time.monotonic() - since
    result = analyse(_events(conn), runs, workers, _jobs(conn))
    result.jobs = _count(conn, "SELECT last_value FROM procrastinate_jobs_id_seq")
    result.cpu_used, result.cpu_wait = (ran_end - ran) / took, (waited_end - waited) / took
    result.load = sum(loads) / len(loads)
    return result


def _queue(base: str, runs: int) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api:
        api.post("/api/sops", content=SOP, headers={"Content-Type": "application/yaml"}).raise_for_status()
        for _ in range(runs):
            api.post("/api/runs", json={"sop_id": "scale"}).raise_for_status()


def measure(runs: int, counts: tuple[int, ...]) -> list[Drain]:
    """A drain of `runs` runs by each count of workers, on one PostgreSQL cluster."""
    cluster = Postgres().start()
    try:
        with tempfile.TemporaryDirectory(prefix="sop-scale-") as folder:
            return [drain(cluster, Path(folder), runs, n) for n in counts]
    finally:
        cluster.stop()
