"""One authority over run and step state: the gate, claims between processes, controls that mean one thing,
and recovery that says what it could not bring back. Real server and CLI processes, real Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sop_engine.document import load_sop
from sop_engine.states import ClaimLost, TransitionError
from sop_engine.store import RunHeld, Store
from tests.conftest import SOPS, Gate, ServerProcess, both_databases, post_sop, start_run, wait_for, wait_run
from tests.loopback import LoopbackServer, Reply, Request, json_reply


def cli(data: Path, *args: str, cwd: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "sop_engine", *args]


def cli_env(data: Path) -> dict[str, str]:
    env = {**os.environ, "SOP_DATA_DIR": str(data), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SOP_DATABASE_URL", None)
    return env


def completions(events: list[dict[str, Any]]) -> Counter[str]:
    done = [e for e in events if e["type"] == "step.updated" and e["data"]["status"] == "completed"]
    return Counter(e["data"]["key"] for e in done)


# the gate, in the store ----------------------------------------------------------------------

GATED = """
sop: 1
id: gated
steps:
  - {id: one, action: log, message: hi}
"""


@both_databases
def test_the_gate_refuses_what_the_table_forbids_and_changes_nothing(store: Store):
    document = store.save_document(load_sop(GATED))
    run = store.create_run(document, {}, "queued")
    row = {"key": "one", "step_id": "one", "action": "log", "status": "pending"}
    store.record(run.id, "run.created", {"status": "queued"}, new_steps=[row])
    with pytest.raises(TransitionError, match="a queued run cannot become completed"):
        store.record(run.id, "run.updated", {"status": "completed"}, run={"status": "completed"})
    with pytest.raises(TransitionError, match="a pending step cannot become completed"):
        store.record(run.id, "step.updated", {"key": "one"}, step=("one", {"status": "completed"}))
    after = store.run(run.id)
    assert (after.status, after.last_seq) == ("queued", 1)  # type: ignore[union-attr]
    assert [s.status for s in store.steps(run.id)] == ["pending"]
    # a chain in one transaction is checked link by link: pending -> running -> completed is fine
    store.record_many(
        run.id,
        [
            ("step.updated", {}, {"step": ("one", {"status": "running"})}),
            ("step.updated", {}, {"step": ("one", {"status": "completed"})}),
        ],
    )
    assert [s.status for s in store.steps(run.id)] == ["completed"]
    assert [e.seq for e in store.events(run.id)] == [1, 2, 3]


@both_databases
def test_two_claims_race_and_one_wins(store: Store):
    document = store.save_document(load_sop(GATED))
    runs = [store.create_run(document, {}, "queued") for _ in range(20)]
    won: dict[str, list[str]] = {"a": [], "b": []}

    def claim(worker: str) -> None:
        while (claim := store.claim_next_run(worker)) is not None:
            won[worker].append(claim.run.id)

    threads = [threading.Thread(target=claim, args=(w,)) for w in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(won["a"] + won["b"]) == sorted(r.id for r in runs)  # each run claimed exactly once
    for run in runs:
        [claimed] = [e for e in store.events(run.id) if e.data.get("worker")]
        assert claimed.data["status"] == "running"


@both_databases
def test_a_holder_that_lost_its_claim_writes_nothing_more(store: Store):
    document = store.save_document(load_sop(GATED))
    run = store.create_run(document, {}, "queued")
    store.claim_next_run("host:1:1")
    store.record(run.id, "run.updated", {"status": "cancelled"}, run={"status": "cancelled", "worker": None})
    with pytest.raises(ClaimLost, match="no longer held by host:1:1: it is cancelled"):
        store.record(run.id, "log", {"message": "late"}, holder="host:1:1")
    assert [e.type for e in store.events(run.id)] == ["run.updated", "run.updated"]


@both_databases
def test_claim_run_refuses_a_live_holder_unless_forced(store: Store):
    document = store.save_document(load_sop(GATED))
    run = store.create_run(document, {}, "queued")
    store.claim_next_run("elsewhere:1")  # another machine, heartbeat fresh: it may be alive
    with pytest.raises(RunHeld, match="held by elsewhere:1"):
        store.claim_run(run.id, "me:2")
    claim = store.claim_run(run.id, "me:2", force=True)
    assert claim.run.worker == "me:2"
    assert claim.event is not None and claim.event.data == {
        "status": "running", "worker": "me:2", "taken_over_from": "elsewhere:1", "forced": True,
    }  # fmt: skip
    with pytest.raises(ClaimLost):
        store.record(run.id, "log", {}, holder="elsewhere:1")


# two processes at one run ----------------------------------------------------------------------

HELD = """
sop: 1
id: SOP_ID
steps:
  - {id: first, action: log, message: start}
  - {id: wait, action: http, url: "GATE", timeout: 120s}
  - {id: last, action: log, message: done}
"""


def test_the_command_line_refuses_a_run_a_live_server_executes(tmp_path: Path, gate: Gate):
    server = ServerProcess(tmp_path / "data").start()
    try:
        with server.client() as api:
            run_id = start_run(api, post_sop(api, HELD.replace("GATE", gate.url)))
            assert gate.called.wait(60)
            resumed = subprocess.run(
                cli(tmp_path / "data", "run", "--resume", run_id),
                env=cli_env(tmp_path / "data"),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert resumed.returncode == 2
            holder = api.get(f"/api/runs/{run_id}").json()
            assert f"held by {holder_of(server, run_id)}" in " ".join(resumed.stderr.split())
            gate.open.set()
            run = wait_run(api, run_id, "completed", timeout=60)
            events = api.get(f"/api/runs/{run_id}/events").json()["events"]
        assert completions(events) == {"first": 1, "wait": 1, "last": 1}  # executed once
        assert gate.calls == 1
        assert holder["status"] == "running" and run["status"] == "completed"
    finally:
        server.stop()


def holder_of(server: ServerProcess, run_id: str) -> str:
    store = Store(f"sqlite:///{server.data / 'sop.db'}")
    try:
        return store.run(run_id).worker  # type: ignore[union-attr,return-value]
    finally:
        store.close()


def test_force_takes_over_a_hung_holder_which_then_writes_nothing(tmp_path: Path, gate: Gate):
    data = tmp_path / "data"
    (tmp_path / "held.yaml").write_text(HELD.replace("SOP_ID", "held").replace("GATE", gate.url))
    first = subprocess.Popen(
        cli(data, "run", "held.yaml"), cwd=tmp_path, env=cli_env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert gate.called.wait(60)
        store = Store(f"sqlite:///{data / 'sop.db'}")
        run_id = store.runs()[0][0].id
        refused = subprocess.run(
            cli(data, "run", "--resume", run_id), env=cli_env(data), capture_output=True, text=True, timeout=120
        )
        assert refused.returncode == 2 and "--force" in refused.stderr
        forced = subprocess.run(
            cli(data, "run", "--resume", run_id, "--force", "--json"),
            env=cli_env(data),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert forced.returncode == 0, forced.stderr
        assert json.loads(forced.stdout)["status"] == "completed"
        assert "took run" in forced.stderr
        gate.open.set()  # the hung holder wakes up: its writes are refused, and it stops
        out, err = first.communicate(timeout=60)
        assert "no longer held" in " ".join((out + err).decode().split())
        events = store.events(run_id)
        [takeover] = [e for e in events if e.data.get("forced")]
        assert takeover.data["taken_over_from"].split(":")[1] == str(first.pid)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert Counter(e.data["key"] for e in events if e.data.get("status") == "completed" and "key" in e.data) == {
            "first": 1, "wait": 1, "last": 1,
        }  # fmt: skip
        store.close()
    finally:
        first.kill()
        first.wait(10)


# recovery that says what it could not bring back ---------------------------------------------

TODO = """
sop: 1
id: todo-slow
inputs:
  site: {type: string}
outputs: [left]
steps:
  - {id: open, action: navigate, url: "{{ site }}todo.html", inputs: [site]}
  - {id: add-1, action: fill, selector: ".new-todo", value: "milk"}
  - {id: enter-1, action: press, selector: ".new-todo", key: Enter}
  - {id: wait, action: http, url: "GATE", timeout: 120s}
  - {id: add-2, action: fill, selector: ".new-todo", value: "bread"RESUME}
  - {id: enter-2, action: press, selector: ".new-todo", key: Enter}
  - id: count
    action: extract
    selector: ".todo-count strong"
    outputs: {left: "{{ result.text | int }}"}
"""


def _killed_then_resumed(tmp_path: Path, site: str, gate: Gate, resume_from: str, *json_: str) -> tuple[Any, str]:
    data = tmp_path / "data"
    text = TODO.replace("GATE", gate.url).replace("RESUME", resume_from)
    (tmp_path / "todo.yaml").write_text(text)
    first = subprocess.Popen(
        cli(data, "run", "todo.yaml", "-i", f"site={site}"),
        cwd=tmp_path,
        env=cli_env(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert gate.called.wait(60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    store = Store(f"sqlite:///{data / 'sop.db'}")
    run_id = store.runs()[0][0].id
    store.close()
    resumed = subprocess.run(
        cli(data, "run", "--resume", run_id, *json_), env=cli_env(data), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    return (json.loads(resumed.stdout) if json_ else resumed.stdout), run_id


def test_a_resume_that_rebuilt_the_browser_says_so(tmp_path: Path, site: str, gate: Gate):
    report, run_id = _killed_then_resumed(tmp_path, site, gate, "", "--json")
    assert report["status"] == "completed" and report["outputs"] == {"left": 1}  # the first item was in memory
    [restored] = report["restored"]
    # the first step that needed the page after the resume found it rebuilt
    # the last checkpoint: taken when the page's URL last changed (the later steps changed only its memory)
    assert restored["before"] == "add-2" and restored["checkpoint_after"] == "open"
    assert any("memory" in lost for lost in restored["lost"])


def test_resume_from_replays_what_a_checkpoint_cannot_keep(tmp_path: Path, site: str, gate: Gate):
    shown, _ = _killed_then_resumed(tmp_path, site, gate, ", resume_from: add-1")
    said = " ".join(shown.split())
    assert said.startswith("completed run") or "completed run" in said
    assert '"left": 2' in said
    assert "warning: the browser was rebuilt from a checkpoint (taken after open) before add-1" in said


# controls that mean one thing ------------------------------------------------------------------


def test_skip_on_a_failed_step_marks_it_skipped_and_never_runs_it(server: ServerProcess, api: Any):
    text = (SOPS / "signup-batch.yaml").read_text()
    sop_id = post_sop(api, text.replace("id: signup-batch", "id: SOP_ID"))
    form = f"{server.url}/demo/form.html"
    run_id = start_run(api, sop_id, {"name": "Zed", "plan": "enterprise", "form_url": form})
    failed = wait_run(api, run_id, "failed", timeout=60)
    plan = next(s for s in failed["steps"] if s["key"] == "plan")
    assert plan["status"] == "failed" and set(plan["controls"]) == {"skip", "retry"}
    assert api.post(f"/api/runs/{run_id}/steps/plan/skip").status_code == 200
    run = wait_run(api, run_id, "completed", timeout=90)  # if it ends otherwise: its error and steps
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["plan"]["status"] == "skipped" and steps["plan"]["attempts"] == plan["attempts"]
    assert steps["plan"]["reason"].startswith("skipped by ")
    assert steps["name"]["status"] == "completed"  # refilled: send resumes from name
    assert run["outputs"]["submitted_name"] == "Zed"
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    started = [e for e in events if e["type"] == "step.updated" and e["data"].get("key") == "plan"]
    assert [e["data"]["status"] for e in started].count("running") == 1  # ran once, before the skip


def test_cancel_ends_steps_in_flight_as_cancelled_with_no_controls_left(api: Any, gate: Gate):
    run_id = start_run(api, post_sop(api, HELD.replace("GATE", gate.url)))
    assert gate.called.wait(60)
    running = api.get(f"/api/runs/{run_id}").json()
    assert running["controls"] == ["pause", "cancel"]
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    run = wait_run(api, run_id, "cancelled", timeout=30)
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["wait"]["status"] == "cancelled" and steps["wait"]["error"] is None
    assert steps["last"]["status"] == "pending"
    assert run["controls"] == [] and all(s["controls"] == [] for s in run["steps"])
    assert api.post(f"/api/runs/{run_id}/steps/wait/retry").status_code == 409


def test_controls_are_listed_only_for_who_may_use_them(server: ServerProcess, api: Any, gate: Gate):
    from tests.conftest import BOB, VIC

    run_id = start_run(api, post_sop(api, HELD.replace("GATE", gate.url)), breakpoints=["last"])
    assert gate.called.wait(60)
    with server.client(VIC) as viewer, server.client(BOB) as other:
        assert viewer.get(f"/api/runs/{run_id}").json()["controls"] == []
        assert other.get(f"/api/runs/{run_id}").json()["controls"] == []  # not his run
    gate.open.set()
    paused = wait_run(api, run_id, "paused")
    assert paused["controls"] == ["resume", "step", "cancel"]
    steps = {s["key"]: s["controls"] for s in paused["steps"]}
    assert steps == {"first": ["rerun"], "wait": ["rerun"], "last": ["skip", "breakpoint"]}
    assert api.post(f"/api/runs/{run_id}/pause").status_code == 409
    api.post(f"/api/runs/{run_id}/resume")
    done = wait_run(api, run_id, "completed")
    assert done["controls"] == [] and {s["key"]: s["controls"] for s in done["steps"]} == {
        "first": ["rerun"], "wait": ["rerun"], "last": ["rerun"],
    }  # fmt: skip


class Counting:
    """A loopback endpoint that answers how many times each `n` was asked for."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.server = LoopbackServer(self._answer)
        self.url = f"{self.server.url}/n"

    def _answer(self, request: Request) -> Reply:
        n = request.path.rsplit("=", 1)[-1]
        self.hits[n] += 1
        return json_reply({"value": int(n) * 10 + self.hits[n]})


def test_rerun_of_one_loop_iteration_runs_that_iteration_and_what_reads_the_collect(api: Any):
    counting = Counting()
    try:
        sop_id = post_sop(
            api,
            f"""
sop: 1
id: SOP_ID
outputs: [values, total]
steps:
  - id: each
    action: loop
    repeat: 3
    collect: {{values: v}}
    steps:
      - {{id: ask, action: http, url: "{counting.url}?n={{{{ index }}}}", inputs: [index],
          outputs: {{v: "{{{{ result.json.value }}}}"}}}}
  - {{id: sum, action: set, inputs: [values], values: {{total: "{{{{ values | sum }}}}"}}}}
  - {{id: other, action: log, message: unrelated}}
""",
        )
        run_id = start_run(api, sop_id)
        first = wait_run(api, run_id, "completed")
        assert first["outputs"] == {"values": [1, 11, 21], "total": 33}
        assert first["progress"] == {"completed": 6, "total": 6, "percent": 100.0}
        assert api.post(f"/api/runs/{run_id}/steps/each[1].ask/rerun").status_code == 200
        run = wait_for(
            lambda: (
                (r := api.get(f"/api/runs/{run_id}").json())["status"] == "completed"
                and r["outputs"]["total"] != 33
                and r
            )
        )
        assert run["outputs"] == {"values": [1, 12, 21], "total": 34}  # the collect made again, and read again
        assert counting.hits == {"0": 1, "1": 2, "2": 1}  # that iteration only
        events = api.get(f"/api/runs/{run_id}/events").json()["events"]
        assert completions(events) == {
            "each[0].ask": 1, "each[1].ask": 2, "each[2].ask": 1, "each": 2, "sum": 2, "other": 1,
        }  # fmt: skip
    finally:
        counting.server.close()


def test_progress_counts_a_loops_iterations_before_they_expand(api: Any, gate: Gate):
    sop_id = post_sop(
        api,
        f"""
sop: 1
id: SOP_ID
steps:
  - id: each
    action: loop
    repeat: 40
    steps:
      - {{id: a, action: log, message: "{{{{ index }}}}", inputs: [index]}}
      - {{id: hold, action: http, url: "{gate.url}", when: "{{{{ index == 5 }}}}", inputs: [index], timeout: 120s}}
""",
    )
    run_id = start_run(api, sop_id)
    assert gate.called.wait(60)
    progress = wait_for(lambda: (p := api.get(f"/api/runs/{run_id}").json()["progress"])["total"] == 81 and p)
    assert 11 <= progress["completed"] <= 12  # 5 iterations of 2 steps, and step a of the 6th: about 14 %
    gate.open.set()
    done = wait_run(api, run_id, "completed")
    assert done["progress"] == {"completed": 81, "total": 81, "percent": 100.0}
