"""OpenTelemetry spans of runs and steps: their shape (collected in the SDK's in-memory exporter), and the trace
context carried from the API request that creates a run to the worker process that executes it (exported over
OTLP/HTTP to a loopback receiver)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sop_engine import telemetry
from sop_engine.batch import Batches
from sop_engine.browser import BrowserHost
from sop_engine.control import RunControl
from sop_engine.datafile import Row
from sop_engine.document import load_sop, resolve_inputs
from sop_engine.events import Event, EventSink
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from sop_engine.store import Store
from tests.loopback import LoopbackServer, Reply, Request, json_reply

SHAPED = """
sop: 1
id: shaped
inputs: {url: {}}
steps:
  - id: add
    action: loop
    for_each: "{{ ['milk', 'eggs'] }}"
    as: item
    steps:
      - {id: type, action: set, values: {typed: "{{ item }}"}, inputs: [item]}
      - {id: note, action: log, message: "added {{ typed }}", inputs: [typed]}
  - id: check
    action: if
    condition: "{{ 1 < 2 }}"
    then:
      - {id: big, action: log, message: big}
    else:
      - {id: small, action: log, message: small}
  - {id: flaky, action: http, url: "{{ url }}", inputs: [url], expect_status: 200, retry: {attempts: 3, delay: 10ms}}
"""


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This process's spans, kept in memory (tracing is off again after the test)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    yield exporter
    telemetry.install(None)
    provider.shutdown()


@pytest.fixture
def flaky() -> Iterator[str]:
    """A loopback URL that answers 503 the first time, then 200."""
    calls = []

    def answer(request: Request) -> Reply:
        calls.append(request.path)
        return json_reply({"busy": True}, 503) if len(calls) == 1 else json_reply({"ok": True})

    with LoopbackServer(answer) as server:
        yield f"{server.url}/flaky"


class Paused:
    """An event sink: `paused` is set once the run is recorded paused."""

    def __init__(self) -> None:
        self.paused = asyncio.Event()

    async def emit(self, event: Event) -> None:
        if event.type == "run.updated" and event.data.get("status") == "paused":
            self.paused.set()


async def _run(
    store: Store, text: str, inputs: dict[str, Any], control: RunControl | None = None, *sinks: EventSink
) -> Any:
    loaded = load_sop(text)
    resolved = resolve_inputs(loaded.sop, inputs)
    runner = Runner(store, BrowserHost(), [*telemetry.sinks(store), *sinks])  # the SOPs here start no browser
    with telemetry.span("test"):  # what created the run: an API request, a command
        row = await runner.create_run(loaded, resolved)
    return await runner.execute(row.id, loaded, resolved, control)


def _by_key(finished: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.attributes["sop.step.key"]: s for s in finished if "sop.step.key" in s.attributes}


async def test_a_run_is_a_span_with_its_steps_under_their_loop_and_if(store, spans, flaky):
    outcome = await _run(store, SHAPED, {"url": flaky})
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    finished = list(spans.get_finished_spans())
    [test] = [s for s in finished if s.name == "test"]
    [run] = [s for s in finished if s.name == "run shaped"]
    steps = _by_key(finished)
    assert len(finished) == 2 + len(steps)
    assert {s.context.trace_id for s in finished} == {test.context.trace_id}  # one trace
    assert run.parent.span_id == test.context.span_id  # through runs.trace_context
    assert store.run(outcome.run_id).trace_context.split("-")[2] == f"{test.context.span_id:016x}"
    assert run.attributes["sop.run_id"] == outcome.run_id
    assert (run.attributes["sop.id"], run.attributes["sop.version"], run.attributes["sop.run.status"]) == (
        "shaped",
        1,
        "completed",
    )

    parents = {key: steps.get(key) for key in steps}
    holder = {
        key: next((k for k, s in steps.items() if s.context.span_id == span.parent.span_id), "run")
        for key, span in parents.items()
    }
    assert holder == {
        "add": "run",
        "add[0].type": "add",
        "add[0].note": "add",
        "add[1].type": "add",
        "add[1].note": "add",
        "check": "run",
        "big": "check",
        "flaky": "run",
    }
    assert steps["add"].parent.span_id == run.context.span_id
    assert steps["add[1].type"].name == "step add[].type"  # few names, however many iterations
    assert steps["add"].attributes["sop.step.action"] == "loop"
    assert steps["check"].attributes["sop.step.action"] == "if"
    assert all(s.attributes["sop.step.status"] == "completed" for s in steps.values())
    for key, span in steps.items():  # inside what holds it, in time
        outer = run if holder[key] == "run" else steps[holder[key]]
        assert outer.start_time <= span.start_time <= span.end_time <= outer.end_time, key

    retried = steps["flaky"]
    assert retried.attributes["sop.step.attempt"] == 2
    [retry] = retried.events  # the failed attempt
    assert retry.name == "retry" and retry.attributes["sop.step.attempt"] == 1
    assert retry.attributes["error.type"] == "http" and "503" in retry.attributes["sop.step.error"]
    assert retried.start_time <= retry.timestamp <= retried.end_time


FAILING = """
sop: 1
id: failing
inputs: {password: {secret: true}}
steps:
  - {id: ok, action: log, message: fine}
  - {id: bad, action: set, values: {x: "{{ password ~ (1 / 0) }}"}, inputs: [password]}
"""


async def test_a_failed_step_and_run_are_errors_whose_messages_keep_secrets(store, spans):
    outcome = await _run(store, FAILING, {"password": "s3cret-pw"})
    assert outcome.status == RunStatus.FAILED
    finished = list(spans.get_finished_spans())
    [run] = [s for s in finished if s.name == "run failing"]
    bad = _by_key(finished)["bad"]
    assert bad.status.status_code == StatusCode.ERROR and bad.attributes["error.type"] == "template"
    assert run.status.status_code == StatusCode.ERROR and run.attributes["sop.run.status"] == "failed"
    assert "step bad failed" in run.status.description
    shown = repr([(s.name, dict(s.attributes), s.status.description, s.events) for s in finished])
    assert "s3cret-pw" not in shown


PAUSING = """
sop: 1
id: pausing
steps:
  - id: rounds
    action: loop
    repeat: 2
    steps:
      - {id: tick, action: log, message: tick}
"""


async def test_a_run_paused_and_resumed_is_two_pieces_in_one_trace(store, spans):
    control, watch = RunControl(breakpoints={"rounds[1].tick"}), Paused()
    going = asyncio.ensure_future(_run(store, PAUSING, {}, control, watch))
    await watch.paused.wait()  # at its breakpoint
    assert [s.name for s in spans.get_finished_spans() if s.name.startswith("run ")] == ["run pausing"]
    control.answer("resume")
    outcome = await going
    assert outcome.status == RunStatus.COMPLETED
    finished = list(spans.get_finished_spans())
    first, second = [s for s in finished if s.name == "run pausing"]
    assert (first.attributes["sop.run.status"], second.attributes["sop.run.status"]) == ("paused", "completed")
    assert first.parent.span_id == second.parent.span_id  # both under what created the run
    loops = [s for s in finished if s.attributes.get("sop.step.key") == "rounds"]
    assert [(s.parent.span_id, s.attributes["sop.step.status"]) for s in loops] == [
        (first.context.span_id, "paused"),
        (second.context.span_id, "completed"),
    ]
    [tick] = [s for s in finished if s.attributes.get("sop.step.key") == "rounds[1].tick"]
    assert tick.parent.span_id == loops[1].context.span_id  # the loop goes on in the second piece


async def test_the_runs_of_a_batch_continue_the_trace_that_created_it(store, spans):
    runner = Runner(store, BrowserHost(), telemetry.sinks(store))
    batches = Batches(runner)
    with telemetry.span("test") as created:
        batch = batches.create(load_sop(PAUSING), [Row(1, {}), Row(2, {})], "rows.csv", 2)
    await batches.run(batch.id)
    runs = [s for s in spans.get_finished_spans() if s.name == "run pausing"]
    assert len(runs) == 2 and {r.attributes["sop.batch_id"] for r in runs} == {batch.id}
    assert {r.parent.span_id for r in runs} == {created.get_span_context().span_id}


def test_tracing_off_makes_no_sink_and_keeps_no_context(store):
    assert not telemetry.tracing()
    assert telemetry.sinks(store) == [] and telemetry.traceparent() is None
    with telemetry.span("nothing") as current:
        assert current is None
    assert telemetry.start("cli") is None  # OTEL_EXPORTER_OTLP_ENDPOINT is not set


# across processes: a server that only serves, a worker that executes, both exporting over OTLP/HTTP ----------


class Collector:
    """An OTLP/HTTP receiver on loopback: the spans of every export it is sent, with their process's role."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    def _answer(self, request: Request) -> Reply:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        assert request.path == "/v1/traces", request.path
        sent = ExportTraceServiceRequest.FromString(request.body)
        for group in sent.resource_spans:
            resource = {a.key: a.value.string_value for a in group.resource.attributes}
            self.spans += [(resource.get("sop.role", "?"), s) for g in group.scope_spans for s in g.spans]
        reply = ExportTraceServiceResponse().SerializeToString()
        return Reply(200, reply, {"Content-Type": "application/x-protobuf"})

    def of(self, role: str, name: str) -> list[Any]:
        return [s for r, s in self.spans if r == role and s.name == name]


def _attrs(span: Any) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


STEPS = """
sop: 1
id: SOP_ID
steps:
  - {id: first, action: set, values: {x: 1}}
  - id: again
    action: loop
    repeat: 2
    steps:
      - {id: tick, action: log, message: tick}
"""


def test_the_request_that_creates_a_run_is_the_parent_of_its_run_in_a_worker_process(tmp_path):
    import sqlite3

    from tests.conftest import ServerProcess, WorkerProcess, post_sop, wait_run

    collector = Collector()
    otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    url = f"sqlite:///{tmp_path / 'sop.db'}"
    server = ServerProcess(tmp_path / "server", concurrency=0, env=otlp, database_url=url).start()
    worker = WorkerProcess(tmp_path / "worker", url, concurrency=1, env=otlp).start()
    trace_id, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        with server.client() as api:
            sop_id = post_sop(api, STEPS)
            body = {"sop_id": sop_id}
            traced = api.post("/api/runs", json=body, headers={"traceparent": f"00-{trace_id}-{caller}-01"})
            garbled = api.post("/api/runs", json=body, headers={"traceparent": "00-zz-not-a-trace-context"})
            assert (traced.status_code, garbled.status_code) == (201, 201), garbled.text
            runs = [traced.json()["id"], garbled.json()["id"]]
            for run_id in runs:
                wait_run(api, run_id, "completed")
        assert worker.stop() == 0  # each process exports what it still holds as it stops
        server.stop()
    finally:
        worker.stop(kill=True)
        server.stop(kill=True)
        collector.server.close()

    with sqlite3.connect(tmp_path / "sop.db") as db:
        stored = dict(db.execute("SELECT id, trace_context FROM runs").fetchall())
    requests = collector.of("server", "POST /api/runs")
    assert len(requests) == 2
    [request] = [s for s in requests if s.trace_id.hex() == trace_id]
    assert request.parent_span_id.hex() == caller  # the caller's trace goes on
    assert stored[runs[0]] == f"00-{trace_id}-{request.span_id.hex()}-01"
    [run] = [s for s in collector.of("worker", f"run {sop_id}") if _attrs(s)["sop.run_id"] == runs[0]]
    assert (run.trace_id.hex(), run.parent_span_id.hex()) == (trace_id, request.span_id.hex())
    steps = [s for role, s in collector.spans if role == "worker" and s.trace_id.hex() == trace_id and s is not run]
    assert sorted(_attrs(s)["sop.step.key"] for s in steps) == ["again", "again[0].tick", "again[1].tick", "first"]
    loop = next(s for s in steps if s.name == "step again")
    assert {s.name: s.parent_span_id for s in steps} == {
        "step first": run.span_id,
        "step again": run.span_id,
        "step again[].tick": loop.span_id,
    }

    [fresh] = [s for s in requests if s is not request]  # a malformed traceparent is ignored: a new trace
    assert fresh.parent_span_id == b"" and fresh.trace_id.hex() != trace_id
    assert stored[runs[1]].split("-")[1:3] == [fresh.trace_id.hex(), fresh.span_id.hex()]


def test_a_command_s_run_is_traced_under_the_command(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    collector = Collector()
    (tmp_path / "steps.yaml").write_text(STEPS.replace("SOP_ID", "steps"))
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    env.pop("SOP_DATABASE_URL", None)
    try:
        command = [sys.executable, "-m", "sop_engine", "run", str(tmp_path / "steps.yaml"), "--json"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        collector.server.close()
    assert done.returncode == 0, done.stderr
    [command_span] = collector.of("cli", "sop-engine run")
    [run] = collector.of("cli", "run steps")
    assert run.parent_span_id == command_span.span_id and run.trace_id == command_span.trace_id
    assert len([s for _, s in collector.spans if s.parent_span_id == run.span_id]) == 2  # first, again
