"""`GET /metrics` of real server and worker processes, read with prometheus-client's own parser: the counters
move by what the runs did, the gauges say what is going on now, and the queue's come from the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ROOT,
    SECRET_KEY,
    TOKEN,
    VIC,
    Gate,
    ServerProcess,
    WorkerProcess,
    free_port,
    post_sop,
    start_run,
    wait_for,
    wait_run,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

COMPLETES = """
sop: 1
id: SOP_ID
steps:
  - {id: open, action: navigate, url: /demo/todo.html}
  - {id: type, action: fill, selector: input.new-todo, value: milk}
  - {id: note, action: log, message: done}
"""
RETRIES_THEN_FAILS = """
sop: 1
id: SOP_ID
steps:
  - {id: open, action: navigate, url: /demo/todo.html}
  - {id: press, action: click, selector: "#no-such-button", timeout: 300ms, retry: {attempts: 2, delay: 10ms}}
"""
HELD = """
sop: 1
id: SOP_ID
inputs: {url: {}}
steps:
  - {id: open, action: navigate, url: /demo/todo.html}
  - {id: held, action: http, url: "{{ url }}", inputs: [url], timeout: 60s}
"""
QUICK = """
sop: 1
id: SOP_ID
steps:
  - {id: a, action: log, message: hi}
"""


def scrape(url: str, token: str | None = TOKEN) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.get(url, headers=headers, timeout=15)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_the_counters_move_by_what_the_runs_did(tmp_path):
    server = ServerProcess(tmp_path / "data", concurrency=2).start()
    try:
        metrics = server.url + "/metrics"
        with server.client() as api:
            good, bad = post_sop(api, COMPLETES), post_sop(api, RETRIES_THEN_FAILS)
            before = scrape(metrics)
            wait_run(api, start_run(api, good), "completed")
            wait_run(api, start_run(api, bad), "failed")
            after = scrape(metrics)
        assert moved(before, after, "sop_runs_total", sop_id=good, status="completed") == 1
        assert moved(before, after, "sop_runs_total", sop_id=bad, status="failed") == 1
        assert moved(before, after, "sop_runs_total", sop_id=good, status="failed") == 0
        assert moved(before, after, "sop_step_retries_total", action="click") == 1
        steps = "sop_step_duration_seconds_count"
        assert moved(before, after, steps, action="navigate", status="completed") == 2
        assert moved(before, after, steps, action="fill", status="completed") == 1
        assert moved(before, after, steps, action="click", status="failed") == 1
        assert moved(before, after, "sop_step_duration_seconds_sum", action="click", status="failed") >= 0.3  # 2 tries
        assert moved(before, after, "sop_event_write_seconds_count") >= 6
        assert moved(before, after, "sop_queue_wait_seconds_count") == 2
        assert value(after, "sop_worker_slots") == 2
        assert value(after, "process_resident_memory_bytes") > 0
    finally:
        server.stop()


def test_the_gauges_say_what_goes_on_now(tmp_path, gate: Gate):
    server = ServerProcess(tmp_path / "data", concurrency=2).start()
    try:
        metrics = server.url + "/metrics"
        with server.client() as api:
            run_id = start_run(api, post_sop(api, HELD), {"url": gate.url})
            assert gate.called.wait(60)
            during = scrape(metrics)
            gate.open.set()
            wait_run(api, run_id, "completed")

        def settled() -> Samples | None:
            found = scrape(metrics)
            return found if value(found, "sop_browser_contexts") == 0 else None

        after = wait_for(settled)
        assert value(during, "sop_runs_in_flight") == 1 and value(during, "sop_worker_slots_used") == 1
        assert value(during, "sop_browser_contexts") == 1
        assert value(after, "sop_runs_in_flight") == 0 and value(after, "sop_worker_slots_used") == 0
        assert value(after, "sop_step_duration_seconds_count", action="http", status="completed") == 1
    finally:
        server.stop()


def test_metrics_need_a_token_and_a_viewer_may_read_them(tmp_path):
    server = ServerProcess(tmp_path / "data", concurrency=0).start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            reply = httpx.get(server.url + "/metrics", headers=headers)
            assert reply.status_code == 401 and "sop_" not in reply.text
        assert "sop_queue_depth" in {name for name, _ in scrape(server.url + "/metrics", VIC)}
    finally:
        server.stop()


def test_the_queue_gauges_come_from_the_database(tmp_path):
    server = ServerProcess(tmp_path / "data", concurrency=0).start()  # runs stay queued
    try:
        metrics = server.url + "/metrics"
        assert value(scrape(metrics), "sop_queue_depth", priority="1") == 0
        with server.client() as api:
            sop_id = post_sop(api, QUICK)
            for priority in ("high", "normal", "normal", "low", "low", "low"):
                start_run(api, sop_id, priority=priority)
        found = scrape(metrics)
        depth = [value(found, "sop_queue_depth", priority=p) for p in ("0", "1", "2")]
        assert depth == [1, 2, 3]
        assert value(found, "sop_queue_oldest_seconds", priority="2") > 0
        assert value(scrape(metrics), "sop_queue_oldest_seconds", priority="2") > value(
            found, "sop_queue_oldest_seconds", priority="2"
        )
    finally:
        server.stop()


def test_metrics_on_their_own_port_need_no_token(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path / "data", concurrency=1, env={"SOP_METRICS_PORT": str(port)}).start()
    try:
        with server.client() as api:
            sop_id = post_sop(api, QUICK)
            wait_run(api, start_run(api, sop_id), "completed")
            assert api.get("/metrics").status_code == 404  # not beside the API any more
        found = scrape(f"http://127.0.0.1:{port}/metrics", token=None)
        assert value(found, "sop_runs_total", sop_id=sop_id, status="completed") == 1
        assert value(found, "sop_worker_slots") == 1
    finally:
        server.stop()


def test_metrics_can_be_switched_off(tmp_path):
    server = ServerProcess(tmp_path / "data", concurrency=1, env={"SOP_METRICS": "off"}).start()
    try:
        with server.client() as api:
            wait_run(api, start_run(api, post_sop(api, QUICK)), "completed")
            assert api.get("/metrics").status_code == 404
    finally:
        server.stop()


class MeteredWorker(WorkerProcess):
    """A `worker --metrics-port` process."""

    def __init__(self, data: Path, database_url: str, port: int) -> None:
        super().__init__(data, database_url, concurrency=2)
        self.port = port

    def start(self) -> MeteredWorker:
        import os

        self.data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SOP_DATA_DIR": str(self.data), "SOP_DATABASE_URL": self.database_url}
        env.update({"SOP_SECRET_KEY": SECRET_KEY, "SOP_DRAIN_SECONDS": "0"})
        command = [sys.executable, "-m", "web", "worker", "--concurrency", str(self.concurrency)]
        command += ["--metrics-port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._started(), timeout=60)
        return self


def test_a_worker_serves_its_own_metrics(tmp_path, gate: Gate, site: str):
    server = ServerProcess(tmp_path / "server", concurrency=0).start()  # only serves: the worker executes
    worker = MeteredWorker(tmp_path / "worker", f"sqlite:///{server.data / 'sop.db'}", free_port()).start()
    try:
        metrics = f"http://127.0.0.1:{worker.port}/metrics"
        before = scrape(metrics, token=None)
        with server.client() as api:
            held = HELD.replace("/demo/", site)  # the worker has no demo pages of its own
            sop_id = post_sop(api, held)
            run_id = start_run(api, sop_id, {"url": gate.url})
            assert gate.called.wait(60)
            during = scrape(metrics, token=None)
            gate.open.set()
            wait_run(api, run_id, "completed")
            after = wait_for(lambda: _counted(metrics, sop_id))
            at_server = scrape(server.url + "/metrics")
        assert value(during, "sop_runs_in_flight") == 1 and value(during, "sop_browser_contexts") == 1
        assert value(during, "sop_worker_slots") == 2 and value(during, "sop_queue_depth", priority="1") == 0
        assert moved(before, after, "sop_queue_wait_seconds_count") == 1
        assert moved(before, after, "sop_step_duration_seconds_count", action="http", status="completed") == 1
        # each event is counted where it happened: the server stored the run but did not run it
        assert value(at_server, "sop_runs_total", sop_id=sop_id, status="completed") == 0
    finally:
        worker.stop()
        server.stop()


def _counted(url: str, sop_id: str, token: str | None = None) -> Samples | None:
    found = scrape(url, token)
    return found if value(found, "sop_runs_total", sop_id=sop_id, status="completed") == 1 else None


def test_a_run_whose_worker_died_counts_as_a_recovery(tmp_path, gate: Gate):
    first = ServerProcess(tmp_path / "data", concurrency=1).start()
    try:
        with first.client() as api:
            sop_id = post_sop(api, HELD)
            run_id = start_run(api, sop_id, {"url": gate.url})
            assert gate.called.wait(60)
    finally:
        first.stop(kill=True)  # the run stays `running`, held by a dead process
    second = ServerProcess(tmp_path / "data", concurrency=1).start()  # takes it back from the queue, at start
    try:
        with second.client() as api:
            wait_run(api, run_id, "completed")
        found = wait_for(lambda: _counted(second.url + "/metrics", sop_id, TOKEN))
        assert value(found, "sop_recoveries_total", kind="worker") == 1
        assert value(found, "sop_recoveries_total", kind="browser") == 0
        assert value(found, "sop_queue_wait_seconds_count") == 0  # it had started before: no queue wait
    finally:
        second.stop()


async def test_odd_events_are_counted_as_far_as_they_go_and_never_raise():
    from prometheus_client import generate_latest

    from sop_engine.events import Event
    from sop_engine.metrics import Recording, RunMetrics

    recording = Recording()  # a registry of its own, not the process's
    sink = RunMetrics(recording)  # no store: a run of unknown SOP is counted as such
    odd = [
        ("step.updated", {"key": "x", "status": "completed", "duration_ms": 20}),  # its start was never seen
        ("step.retried", {"key": "y", "attempt": 1}),
        ("step.updated", {"key": ["not", "a", "key"], "status": "running"}),
        ("step.updated", {"status": "failed"}),
        ("run.updated", {"status": "failed"}),
        ("run.updated", {"status": "queued", "reason": "recovered: its worker w:1 stopped"}),
        ("run.updated", {"status": "running", "worker": "w:2", "taken_over_from": "w:1", "forced": False}),
        ("run.restored", {"before": "b"}),
        ("something.new", {"status": 3}),
    ]
    for seq, (kind, data) in enumerate(odd, 1):
        await sink.emit(Event("r", seq, kind, data))
    text = generate_latest(recording.registry).decode()
    found = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert value(found, "sop_step_duration_seconds_count", action="unknown", status="completed") == 1
    assert value(found, "sop_step_retries_total", action="unknown") == 1
    assert value(found, "sop_runs_total", sop_id="unknown", status="failed") == 1
    for kind in ("worker", "takeover", "browser"):
        assert value(found, "sop_recoveries_total", kind=kind) == 1


def test_a_taken_metrics_port_is_refused_before_anything_starts(tmp_path):
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "SOP_METRICS_PORT": str(port)}
        for command in (["serve", "--port", str(free_port())], ["worker", "--metrics-port", str(port)]):
            done = subprocess.run(
                [sys.executable, "-m", "web", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            assert f"cannot serve the metrics on 127.0.0.1:{port}" in done.stderr
