"""What watching a server costs: todo-N runs through the JSON API of three `serve --concurrency 1` processes, each
with its browser launched by a warm-up run, interleaved round by round in a rotating order, each run timed by the
server's own record (started_at → finished_at):
- *off*: Prometheus metrics off (SOP_METRICS=off), no span exporter, no Playwright trace;
- *metrics and spans*: metrics recorded (and scraped once a round), spans exported over OTLP/HTTP to a loopback
  receiver that counts what it gets;
- *trace*: a Playwright trace recorded for every run (SOP_TRACE=on), metrics and spans off.
The cost of each is its median over the off server's, and the median of the per-round ratios."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import socketio

from . import flows
from .measure import Failed
from .per_step import browser_steps
from .report import Report
from .server_path import serving, watched_run

GOAL = 1.03  # metrics and spans on, next to off
SERVERS = ("off", "metrics and spans", "trace")


@dataclass
class Received:
    requests: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP endpoint on loopback that takes every export (an empty ExportTraceServiceResponse is an empty
    protobuf message) and counts requests and bytes."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            size = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(size)
            with received.lock:
                received.requests += 1
                received.bytes += size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Measured:
    n: int
    seconds: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in SERVERS})
    scrapes: int = 0
    metric_lines: int = 0
    spans_requests: int = 0
    spans_bytes: int = 0

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, name: str) -> float:
        return self.median(name) / self.median("off")

    def paired(self, name: str) -> float:
        return statistics.median(a / b for a, b in zip(self.seconds[name], self.seconds["off"], strict=True))


async def _measure(work: Path, url: str, n: int, rounds: int, warmup: int) -> Measured:
    token = secrets.token_urlsafe(24)
    measured = Measured(n)
    off = {"SOP_METRICS": "off", "SOP_TRACE": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    with contextlib.ExitStack() as stack:
        endpoint, received = stack.enter_context(otlp_receiver())
        envs = {
            "off": off,
            "metrics and spans": {**off, "SOP_METRICS": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
            "trace": {**off, "SOP_TRACE": "on"},
        }
        urls = {
            name: stack.enter_context(serving(work / f"telemetry-{i}", token, envs[name]))
            for i, name in enumerate(SERVERS)
        }
        auth = {"Authorization": f"Bearer {token}"}
        clients = {name: httpx.AsyncClient(base_url=base, headers=auth, timeout=60) for name, base in urls.items()}
        try:
            inputs = {"url": url, "items": flows.todo_items(n)}
            for name, api in clients.items():
                stored = await api.post("/api/sops", content=(flows.BENCH / "todo.yaml").read_bytes())
                if stored.status_code not in (200, 201):
                    raise Failed(f"POST /api/sops answered {stored.status_code}: {stored.text[:300]}")
                await watched_run(api, urls[name], token, inputs)  # the warm-up: its browser launches
            for round_ in range(warmup + rounds):
                shift = round_ % len(SERVERS)
                for name in SERVERS[shift:] + SERVERS[:shift]:
                    watched = await watched_run(clients[name], urls[name], token, inputs)
                    if round_ >= warmup:
                        measured.seconds[name].append(watched.seconds)
                scraped = await clients["metrics and spans"].get("/metrics")
                if scraped.status_code != 200:
                    raise Failed(f"GET /metrics answered {scraped.status_code}: {scraped.text[:200]}")
                measured.scrapes += 1
                measured.metric_lines = sum(1 for line in scraped.text.splitlines() if not line.startswith("#"))
        finally:
            for api in clients.values():
                await api.aclose()
        measured.spans_requests, measured.spans_bytes = received.requests, received.bytes
    if not measured.spans_requests:
        raise Failed("the server with spans on exported none to the OTLP receiver")
    return measured


def section(report: Report, measured: Measured, rounds: int) -> None:
    lines = [
        f"### telemetry: todo-{measured.n} through the server, with metrics, spans or a trace",
        "",
        f"todo-{measured.n} ({browser_steps(measured.n)} browser steps) as runs created through the JSON API of "
        "three `serve --concurrency 1` processes (SQLite), each run watched by a Socket.IO client, timed by the "
        f"server's own record (started_at → finished_at), {rounds} round{'s' if rounds > 1 else ''} after a warm-up, "
        "interleaved in a "
        "rotating order (bench/telemetry.py). *off*: SOP_METRICS=off, no span exporter, no trace. *metrics and "
        "spans*: metrics recorded and `/metrics` scraped once a round; spans exported over OTLP/HTTP "
        "(BatchSpanProcessor) to a loopback receiver. *trace*: SOP_TRACE=on, a Playwright trace (screenshots, "
        "DOM snapshots, network) recorded, scrubbed and saved for every run.",
        "",
        "| server | median (min–max) | next to off (medians) | median of paired ratios |",
        "| --- | --- | --- | --- |",
    ]
    for name in SERVERS:
        values = measured.seconds[name]
        lines.append(
            f"| {name} | {statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f}) | "
            f"{measured.ratio(name):.3f} × | {measured.paired(name):.3f} × |"
        )
    lines += [
        "",
        f"The OTLP receiver got {measured.spans_requests} export requests ({measured.spans_bytes / 1024:.0f} KiB); "
        f"the last scrape of `/metrics` had {measured.metric_lines} samples.",
    ]
    report.sections.append("\n".join(lines) + "\n")
    ratio = max(measured.ratio("metrics and spans"), measured.paired("metrics and spans"))
    report.target(
        f"metrics and spans recorded, todo-{measured.n} through the server, next to them off",
        f"≤ {GOAL:.2f} ×",
        f"{measured.ratio('metrics and spans'):.3f} × (paired {measured.paired('metrics and spans'):.3f} ×)",
        ratio <= GOAL,
    )


def telemetry_figure(report: Report, work: Path, url: str, n: int, rounds: int, warmup: int) -> None:
    what = f"metrics and spans recorded, todo-{n} through the server, next to them off"
    try:
        measured = asyncio.run(_measure(work, url, n, rounds, warmup))
    except (Failed, OSError, httpx.HTTPError, socketio.exceptions.SocketIOError) as exc:
        report.note(f"### telemetry\n\nNot measured: {str(exc).splitlines()[0] if str(exc) else repr(exc)}")
        report.target(what, f"≤ {GOAL:.2f} ×", "not measured", None)
        return
    section(report, measured, rounds)
