"""The server path: todo-N runs created through the JSON API of one `serve --concurrency 1` process whose
browser is running already (a warm-up run launched it), each watched by a Socket.IO client (so the server sends
its events, its progress and frames of the page, taken beside the steps at most every second), and timed by the
server's own run record (started_at → finished_at: no process start-up, no HTTP round trip). Its floor is plain
Playwright's todo flow from its browser's launch done to its end (bench/plain_todo.py prints it). Server runs and
plain runs are interleaved round by round, in a rotating order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import socketio

from . import flows
from .measure import Failed
from .per_step import Pair, browser_steps, figure_rows, overhead
from .report import Report

ENDED = frozenset({"completed", "failed", "cancelled"})
GOAL_MS = 0.8


@dataclass
class Watched:
    """One watched run: its seconds by the server's record, and what its watcher received."""

    seconds: float
    frames: int
    events: int


@dataclass
class Flow:
    """The server's runs and the plain script's of one size (seconds after launch)."""

    n: int
    server: list[Watched] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)

    @property
    def pair(self) -> Pair:
        return Pair(self.n, statistics.median(w.seconds for w in self.server), statistics.median(self.plain))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(
    data: Path, token: str, more_env: dict[str, str] | None = None, started: list[subprocess.Popen[bytes]] | None = None
) -> Iterator[str]:
    """`python -m web serve --concurrency 1` on a free loopback port, its own data folder and an admin token,
    with `more_env` set; yields its base URL once `/healthz` answers (`started`: gets the process, for a
    profiler to attach to)."""
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "SOP_DATA_DIR": str(data), "SOP_API_TOKEN": token, "SOP_DRAIN_SECONDS": "0"}
    env.update(more_env or {})
    for alone in ("SOP_DATABASE_URL", "SOP_REDIS_URL", "SOP_API_TOKENS"):  # SQLite, no peers, one token
        env.pop(alone, None)
    command = [sys.executable, "-m", "web", "serve", "--port", str(port), "--concurrency", "1"]
    url = f"http://127.0.0.1:{port}"
    log = data / "server.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(command, cwd=flows.BENCH.parent, env=env, stdout=output, stderr=subprocess.STDOUT)
    if started is not None:
        started.append(process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise Failed(f"the server exited: {log.read_text()[-1000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise Failed(f"the server did not answer /healthz within 60 s: {log.read_text()[-1000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def watched_run(api: httpx.AsyncClient, url: str, token: str, inputs: dict[str, object]) -> Watched:
    """Connects a watcher, which follows every run (so events and progress go out from the run's first event)
    and joins the run's room as soon as the run has an id (frames go to the room's watchers); creates the run;
    waits for its end; reads its record."""
    client = socketio.AsyncClient(reconnection=False)
    seen: dict[str, list[str]] = {}  # run id -> the names of the events received for it
    ended: dict[str, asyncio.Event] = {}

    def keep(name: str) -> Callable[[dict], Awaitable[None]]:
        async def handler(data: dict) -> None:
            run_id = str(data.get("run_id"))
            seen.setdefault(run_id, []).append(name)
            if name == "run.updated" and data.get("data", {}).get("status") in ENDED:
                ended.setdefault(run_id, asyncio.Event()).set()

        return handler

    for name in ("run.updated", "step.updated", "log", "progress", "frame"):
        client.on(name, keep(name))
    await client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    try:
        if not (await client.call("subscribe", {"all": True}, timeout=10)).get("ok"):
            raise Failed("the watcher could not follow every run")
        created = await api.post("/api/runs", json={"sop_id": "bench-todo", "inputs": inputs})
        if created.status_code != 201:
            raise Failed(f"POST /api/runs answered {created.status_code}: {created.text[:300]}")
        run_id = created.json()["id"]
        if not (await client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=10)).get("ok"):
            raise Failed(f"the watcher could not join run {run_id}")
        async with asyncio.timeout(600):
            await ended.setdefault(run_id, asyncio.Event()).wait()
    finally:
        await client.disconnect()
    run = (await api.get(f"/api/runs/{run_id}")).json()
    if run["status"] != "completed":
        raise Failed(f"the server's run ended {run['status']}: {run.get('error')}")
    started, finished = (datetime.fromisoformat(run[at]) for at in ("started_at", "finished_at"))
    names = seen.get(run_id, [])
    return Watched((finished - started).total_seconds(), names.count("frame"), len(names) - names.count("frame"))


def plain_after_launch(url: str, n: int) -> float:
    variant = flows.plain_todo(url, n)
    done = subprocess.run(variant.command, capture_output=True, text=True, timeout=900, cwd=flows.BENCH.parent)
    if done.returncode != 0:
        raise Failed(f"{variant.name} exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["after_launch_s"])


async def _measure(work: Path, url: str, sizes: tuple[int, int], runs: int, warmup: int) -> list[Flow]:
    token = secrets.token_urlsafe(24)
    measured = [Flow(n) for n in sizes]
    with serving(work / "server-data", token) as server:
        async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"}) as api:
            stored = await api.post("/api/sops", content=(flows.BENCH / "todo.yaml").read_bytes())
            if stored.status_code not in (200, 201):
                raise Failed(f"POST /api/sops answered {stored.status_code}: {stored.text[:300]}")
            # the warm-up: the server launches its browser at its first browser step
            await watched_run(api, server, token, {"url": url, "items": flows.todo_items(sizes[0])})
            tasks = [(flow, kind) for flow in measured for kind in ("server", "plain")]
            for round_ in range(warmup + runs):
                shift = round_ % len(tasks)
                for flow, kind in tasks[shift:] + tasks[:shift]:
                    if kind == "server":
                        inputs = {"url": url, "items": flows.todo_items(flow.n)}
                        watched = await watched_run(api, server, token, inputs)
                        if round_ >= warmup:
                            flow.server.append(watched)
                    else:
                        seconds = await asyncio.to_thread(plain_after_launch, url, flow.n)
                        if round_ >= warmup:
                            flow.plain.append(seconds)
    return measured


def measure(work: Path, url: str, sizes: tuple[int, int], runs: int, warmup: int) -> list[Flow]:
    return asyncio.run(_measure(work, url, sizes, runs, warmup))


def _seconds(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def target_name(small: int, large: int) -> str:
    return f"server path: wall overhead per browser step, watched (slope todo-{small} → todo-{large})"


def section(report: Report, measured: list[Flow]) -> None:
    small, large = measured
    found = overhead(small.pair, large.pair)
    lines = [
        f"### server path: todo-{small.n} and todo-{large.n}, watched",
        "",
        "The todo flow as runs created through the JSON API of one `serve --concurrency 1` process (SQLite), its "
        "browser launched by a warm-up run before; each run watched by a Socket.IO client that follows every run "
        "and joins the run's room as soon as the run has an id, so the server sends the run's events, its progress "
        "and frames of the page (JPEG screenshots after browser steps, taken beside the steps, at most every "
        "second). A run's time is the server's own record, started_at → finished_at. The floor: the plain "
        "Playwright script's time from its browser's launch done to the flow's end. Server and plain runs "
        "interleaved round by round, in a rotating order.",
        "",
        "| flow | browser steps | server run | plain Playwright after launch | extra | frames / other events "
        "received |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for flow in measured:
        frames = statistics.median(w.frames for w in flow.server)
        events = statistics.median(w.events for w in flow.server)
        lines.append(
            f"| todo-{flow.n} | {browser_steps(flow.n)} | {_seconds([w.seconds for w in flow.server])} | "
            f"{_seconds(flow.plain)} | {flow.pair.extra * 1000:.0f} ms | {frames:.0f} / {events:.0f} |"
        )
    lines += ["", "| figure | value |", "| --- | --- |", *figure_rows(found, "server path: ")]
    report.sections.append("\n".join(lines) + "\n")
    report.target(
        target_name(small.n, large.n),
        f"≤ {GOAL_MS} ms median",
        f"{found.slope_ms:.3f} ms",
        found.slope_ms <= GOAL_MS,
    )


def server_figure(report: Report, work: Path, url: str, sizes: tuple[int, int], runs: int, warmup: int) -> None:
    try:
        measured = measure(work, url, sizes, runs, warmup)
    except (Failed, OSError, httpx.HTTPError, socketio.exceptions.SocketIOError) as exc:
        report.note(f"### server path\n\nNot measured: {str(exc).splitlines()[0] if str(exc) else repr(exc)}")
        report.target(target_name(*sizes), f"≤ {GOAL_MS} ms median", "not measured", None)
        return
    section(report, measured)
