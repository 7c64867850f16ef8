"""SOP_LOG_FORMAT=json: one JSON object a line on stderr, each run event among them with its run id and step
key, no secret in any of them; text, for people, by default."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sop_engine.document import load_sop
from sop_engine.logs import JsonLines
from sop_engine.runner import Runner
from tests.conftest import ROOT, ServerProcess, post_sop, start_run, wait_run
from tests.loopback import LoopbackServer, json_reply

SECRET = "hunter2-s3cret"
SOP = """
sop: 1
id: json-logs
inputs:
  password: {type: string, secret: true}
outputs: [greeting]
steps:
  - {id: greet, action: set, values: {greeting: hello}}
  - {id: say, action: log, message: "pw {{ password }}", inputs: [password]}
  - {id: bad, action: set, values: {x: "{{ 1 / 0 }}"}, on_error: continue}
"""
QUICK = """
sop: 1
id: SOP_ID
steps:
  - {id: a, action: log, message: hi}
  - {id: b, action: sleep, duration: 10ms}
"""


def run_cli(tmp_path: Path, log_format: str | None) -> subprocess.CompletedProcess[str]:
    document = tmp_path / "sop.yaml"
    document.write_text(SOP)
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data")}
    env.pop("SOP_LOG_FORMAT", None)
    if log_format is not None:
        env["SOP_LOG_FORMAT"] = log_format
    command = [sys.executable, "-m", "sop_engine", "run", str(document), "--json", "-i", f"password={SECRET}"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_a_run_logs_each_event_as_a_json_line(tmp_path):
    done = run_cli(tmp_path, "json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line parses
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    events = [line for line in lines if line["logger"] == "sop_engine.events"]
    assert {line["run_id"] for line in events} == {run_id}
    assert [line["seq"] for line in events] == list(range(1, len(events) + 1))  # one line per event, in order
    steps = [(line["step_key"], line.get("status")) for line in events if line["event"] == "step.updated"]
    for key in ("greet", "say", "bad"):
        assert (key, "running") in steps
    assert ("greet", "completed") in steps and ("say", "completed") in steps and ("bad", "failed") in steps
    failed = next(line for line in events if line.get("step_key") == "bad" and line.get("status") == "failed")
    assert "division by zero" in failed["error"] and failed["level"] == "info"
    started = next(line for line in events if line.get("step_key") == "greet" and line.get("status") == "running")
    assert started["action"] == "set" and "inputs" not in started
    assert [line["message"] for line in events if line["event"] == "log"] == ["***"]
    assert events[-1]["event"] == "run.updated" and events[-1]["status"] == "completed"
    assert SECRET not in done.stderr and SECRET not in done.stdout


def test_text_is_the_default(tmp_path):
    done = run_cli(tmp_path, None)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    assert not [line for line in done.stderr.splitlines() if line.startswith("{")]  # no event lines
    assert SECRET not in done.stderr + done.stdout


def test_an_unknown_log_format_is_refused_with_its_name(tmp_path):
    done = run_cli(tmp_path, "xml")
    assert done.returncode != 0
    assert "SOP_LOG_FORMAT='xml' is not one of: text, json" in done.stderr


def test_the_server_logs_json_lines_too(tmp_path):
    server = ServerProcess(tmp_path / "data", concurrency=1, env={"SOP_LOG_FORMAT": "json"}).start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, QUICK))
            wait_run(api, run_id, "completed")
    finally:
        server.stop()
    logged = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    mine: list[dict[str, Any]] = [line for line in logged if line.get("run_id") == run_id]
    assert ("a", "completed") in {(line.get("step_key"), line.get("status")) for line in mine}
    assert mine[-1]["message"] == "run completed"


async def test_a_line_logged_during_a_step_says_its_run_and_step(store, browser_host):
    """Not only the event lines: whatever is logged while a step runs (here httpx's line for the `http` step's
    request) carries the run id and the step key; a line logged outside a run carries neither."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonLines())
    httpx_log = logging.getLogger("httpx")
    level = httpx_log.level
    httpx_log.addHandler(handler)
    httpx_log.setLevel(logging.INFO)
    try:
        with LoopbackServer(lambda request: json_reply({"ok": True})) as site:
            loaded = load_sop(
                f"""
sop: 1
id: logged
steps:
  - {{id: first, action: set, values: {{n: 1}}}}
  - {{id: call, action: http, url: "{site.url}/ping"}}
"""
            )
            runner = Runner(store, browser_host, [])
            row = await runner.create_run(loaded, {})
            outcome = await runner.execute(row.id, loaded, {})
            assert outcome.status.value == "completed", outcome.error
            httpx_log.info("a line of nobody's run")
    finally:
        httpx_log.removeHandler(handler)
        httpx_log.setLevel(level)
    parsed = [json.loads(line) for line in lines.getvalue().splitlines()]
    request = next(p for p in parsed if "/ping" in p["message"])
    assert (request["run_id"], request["step_key"]) == (row.id, "call"), request
    outside = next(p for p in parsed if p["message"] == "a line of nobody's run")
    assert "run_id" not in outside and "step_key" not in outside, outside
