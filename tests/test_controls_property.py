"""Random sequences of run and step controls against a real server. After each control, with the run at
rest: its status history and each step's follow the transition table; event numbers run 1..N without a
gap; no step completes twice without a rerun or retry between; a step a person skipped never runs after;
the `controls` the API lists are those of the documented table (written out here again, not imported);
and a control the table refuses answers 409 and changes nothing.

The runs rest where nothing moves by itself: paused, ended, queued behind a run that holds the server's
only worker, or running a step that waits on a loopback endpoint until the test lets it answer."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st

from sop_engine.states import _RUN_MOVES, _STEP_MOVES, RunStatus, StepStatus
from tests.conftest import ServerProcess, post_sop, start_run, wait_for
from tests.loopback import LoopbackServer, Reply, Request, json_reply

TERMINAL = {"completed", "failed", "cancelled"}
GATES = {"gate", "wait"}  # steps that wait on the loopback endpoint until the test lets them answer


# the documented table (sop_engine/controls.py, README), written out again -----------------------


def table_run_controls(status: str, waiting: dict[str, Any] | None) -> list[str]:
    decision = (waiting or {}).get("kind") in ("failed", "input", "approval")  # a form, or a failed step
    failed_step = (waiting or {}).get("kind") == "failed"
    allowed = {
        "pause": status == "running",
        "resume": status == "paused" and not decision,
        "step": status == "paused" and not decision,
        "cancel": status in ("queued", "running", "paused"),
        "rollback": (status == "paused" and failed_step) or status == "failed",  # none of these runs rolls back
    }
    return [c for c, ok in allowed.items() if ok]


def table_step_controls(step: str, key: str, run: str, waiting: dict[str, Any] | None) -> list[str]:
    going = run in ("queued", "running", "paused")
    # "ended": a run that can go on again. A cancelled run has ended too, but the state table lets
    # nothing move out of `cancelled`, so its steps can be neither retried nor rerun.
    ended = run in ("completed", "failed")
    waits_on_it = (waiting or {}).get("kind") == "failed" and (waiting or {}).get("key") == key
    deciding = (waiting or {}).get("kind") in ("failed", "input", "approval")
    form = (waiting or {}).get("kind") in ("input", "approval") and (waiting or {}).get("key") == key
    allowed = {
        "skip": (step in ("pending", "blocked") and going) or (step == "failed" and (ended or waits_on_it)),
        "retry": step == "failed" and (ended or waits_on_it),
        "rerun": step == "completed" and (ended or (run == "paused" and not deciding)),
        "breakpoint": step == "pending" and going,
        "submit": form,
    }
    return [c for c, ok in allowed.items() if ok]


# a loopback endpoint: `gate` answers when the test lets it, `flaky` fails a given number of times -----


class Loopback:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, list[threading.Event]] = {}
        self.failures: dict[str, int] = {}
        self.server = LoopbackServer(self._answer)
        self.url = self.server.url

    def _answer(self, request: Request) -> Reply:
        _, token, kind = request.path.split("/")
        status = 200
        if kind == "gate":
            answer = threading.Event()
            with self.lock:
                self.held.setdefault(token, []).append(answer)
            answer.wait(120)
        else:
            with self.lock:
                left = self.failures.get(token, 0)
                self.failures[token] = max(left - 1, 0)
            status = 500 if left else 200
        return json_reply({"ok": status == 200}, status)  # unread when the step was cancelled meanwhile

    def waiting(self, token: str) -> int:
        with self.lock:
            return len(self.held.get(token, []))

    def release(self, token: str, every: bool = False) -> None:
        with self.lock:
            held = self.held.get(token, [])
            answered, self.held[token] = (held, []) if every else (held[:1], held[1:])
        for answer in answered:
            answer.set()


_tokens = itertools.count()  # a run's own paths on the endpoint


# fixture SOPs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixtureSop:
    gate: bool  # a step that waits on the loopback endpoint
    flaky: str | None  # a step that fails `fails` times, under this on_error
    fails: int
    loop: bool  # a repeat loop of two iterations, each waiting on the endpoint
    breakpoints: tuple[str, ...]
    queued_first: bool  # started while another run holds the only worker

    def ids(self) -> list[str]:
        return [
            "first",
            *(["gate"] if self.gate else []),
            "make",
            *(["flaky", "after"] if self.flaky else []),
            *(["twice"] if self.loop else []),
            "use",
            "nap",
        ]

    def text(self, base: str) -> str:
        """`base`: the loopback endpoint's URL for this run (…/gate and …/flaky under it)."""
        steps = ["  - {id: first, action: log, message: start}"]
        if self.gate:
            steps.append(f'  - {{id: gate, action: http, url: "{base}/gate", timeout: 60s}}')
        steps.append("  - {id: make, action: set, values: {x: 1}}")
        if self.flaky:
            steps.append(
                f'  - {{id: flaky, action: http, url: "{base}/flaky", expect_status: 200, on_error: {self.flaky}}}'
            )
            steps.append("  - {id: after, action: log, message: after, depends_on: [flaky]}")
        if self.loop:
            steps += [
                "  - id: twice",
                "    action: loop",
                "    repeat: 2",
                "    steps:",
                '      - {id: tick, action: log, message: "tick {{ index }}", inputs: [index]}',
                f'      - {{id: wait, action: http, url: "{base}/gate", timeout: 60s}}',
            ]
        steps.append('  - {id: use, action: set, inputs: [x], values: {y: "{{ x }}"}}')
        steps.append("  - {id: nap, action: sleep, duration: 10ms}")
        return "sop: 1\nid: SOP_ID\noutputs: [y]\nsteps:\n" + "\n".join(steps) + "\n"


@st.composite
def fixture_sops(draw: st.DrawFn) -> FixtureSop:
    gate, loop = draw(st.booleans()), draw(st.booleans())
    flaky = draw(st.sampled_from([None, "pause", "continue", "fail"]))
    fails = draw(st.integers(0, 2)) if flaky else 0
    ids = FixtureSop(gate, flaky, fails, loop, (), False).ids()
    points = draw(st.lists(st.sampled_from(ids), max_size=2, unique=True))
    return FixtureSop(gate, flaky, fails, loop, tuple(points), draw(st.integers(0, 3)) == 0)


RUN_ACTIONS = ("pause", "resume", "step", "cancel")
WEIGHTS = {  # how often each is drawn: a cancel ends the story, so it comes rarely
    "release": 6,  # what the run waits on lets go: the endpoint answers, or the run holding the worker ends
    "resume": 4,
    "skip": 3,
    "retry": 3,
    "rerun": 3,
    "step": 2,
    "breakpoint": 2,
    "pause": 2,
    "hold": 1,  # a run paused at a breakpoint takes the only worker
    "cancel": 1,
}


class Action(NamedTuple):
    name: str
    row: int = 0  # which step row: its index, modulo the rows there are...
    fitting: bool = False  # ...among the rows the table allows the control on (when there are some)
    on: bool = True  # a breakpoint set, or cleared


actions = st.builds(
    Action,
    st.sampled_from([name for name, weight in WEIGHTS.items() for _ in range(weight)]),
    st.integers(0, 15),
    st.booleans(),
    st.booleans(),
)


# the histories -----------------------------------------------------------------------------------


class History:
    """Replays a run's events: the statuses they tell, checked move by move against the state table.
    A status told twice in a row is no move, and only one case is allowed: a claim (`running`, with the
    worker) followed by the runner's own start (`running`). A control that requeues the run (a retry or a
    skip of a failed step of a run that ended, any rerun) makes its changes in the transaction of its
    `control` event, without run.updated or step.updated events of their own: they are read from the
    control (a rerun lists the steps it reset; a retry resets the step, what is blocked, its containers).
    So is a skip of a blocked step, or of a pending one of a queued run: no execution would record it."""

    def __init__(self, parents: dict[str, str | None]) -> None:
        self.parents = parents
        self.run: str | None = None
        self.steps: dict[str, str] = {}
        self.completed: set[str] = set()  # completed since they were last reset
        self.skipped: set[str] = set()  # a person skipped them: they must not run
        self.claimed = False  # the last run.updated was a claim: the runner's start may repeat `running`

    def replay(self, events: list[dict[str, Any]]) -> None:
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "event numbers have a gap"
        for event in events:
            try:
                self.apply(event["type"], event["data"])
            except AssertionError as exc:
                raise AssertionError(f"event {event['seq']} {event['type']} {event['data']}: {exc}") from None

    def apply(self, type_: str, data: dict[str, Any]) -> None:
        if type_ == "run.created":
            assert self.run is None, "a second run.created"
            self.run = data["status"]
        elif type_ == "run.updated":
            assert self.run is not None, "an event before run.created"
            claim = "worker" in data
            if data["status"] == self.run:
                assert self.claimed and not claim and self.run == "running", f"{self.run} repeated without a claim"
            else:
                self.move_run(data["status"])
            self.claimed = claim
        elif type_ == "steps.added":
            for key in data["keys"]:
                assert key not in self.steps, f"step {key} added twice"
                self.steps[key] = "pending"
        elif type_ == "step.updated":
            self.move_step(data["key"], data["status"])
        elif type_ == "control":
            self.control(data["control"], data.get("target"), data.get("reset"))

    def control(self, action: str, key: str | None, reset: list[str] | None) -> None:
        ended = self.run in ("completed", "failed")
        if action == "rerun":
            self.move_run("queued")
            self.reset(reset or [])
        elif action == "retry" and ended and key:
            blocked = [k for k, s in self.steps.items() if s == "blocked"]
            self.move_run("queued")
            self.reset([key, *blocked, *self.containers(key)])
        elif action == "skip" and key:
            self.skipped.add(key)
            if ended and self.steps.get(key) == "failed":
                self.move_run("queued")
                self.move_step(key, "skipped")
            elif self.steps.get(key) == "blocked" or self.run == "queued":  # recorded now: no runner would reach it
                self.move_step(key, "skipped")

    def containers(self, key: str) -> list[str]:
        found, parent = [], self.parents.get(key)
        while parent:
            found.append(parent)
            parent = self.parents.get(parent)
        return found

    def reset(self, keys: list[str]) -> None:
        for key in keys:
            if self.steps[key] not in ("pending", "cancelled"):
                self.move_step(key, "pending")
            self.completed.discard(key)
            self.skipped.discard(key)

    def move_run(self, new: str) -> None:
        assert self.run is not None
        assert RunStatus(new) in _RUN_MOVES[RunStatus(self.run)], f"a {self.run} run became {new}"
        self.run = new

    def move_step(self, key: str, new: str) -> None:
        old = self.steps[key]
        assert StepStatus(new) in _STEP_MOVES[StepStatus(old)], f"step {key}: {old} became {new}"
        self.steps[key] = new
        if new == "pending":  # the engine ran it again (interrupted, or retried while the run waited)
            self.completed.discard(key)
            self.skipped.discard(key)
        elif new == "completed":
            assert key not in self.completed, f"step {key} completed twice without a rerun or retry between"
            self.completed.add(key)
        elif new == "running":
            assert key not in self.skipped, f"step {key} runs after a person skipped it"


# driving a run -----------------------------------------------------------------------------------


class Drive:
    """One run of a fixture on the shared server, moved from rest to rest by the actions drawn."""

    def __init__(self, api: Any, loopback: Loopback, blocker: str) -> None:
        self.api, self.loopback, self.blocker = api, loopback, blocker
        self.run_id = self.token = ""
        self.holder: str | None = None  # a run paused at a breakpoint, holding the only worker

    def run(self) -> dict[str, Any]:
        return self.api.get(f"/api/runs/{self.run_id}").json()

    def events(self) -> list[dict[str, Any]]:
        return self.api.get(f"/api/runs/{self.run_id}/events").json()["events"]

    def at_rest(self, run: dict[str, Any]) -> bool:
        if run["status"] in TERMINAL:
            self.loopback.release(self.token, every=True)  # a request of a cancelled step still waits
            return True
        if run["status"] == "queued":
            return self.holder is not None
        if run["status"] == "running":
            gated = any(s["status"] == "running" and s["step_id"] in GATES for s in run["steps"])
            return gated and self.loopback.waiting(self.token) > 0
        return True

    def settle(self, since: int, until: str = "rest", key: str | None = None) -> dict[str, Any]:
        """Waits for the effect of an action (`resume`: the run moved on to running after `since`;
        `released`: the step waiting on the endpoint ended), then for the run to be at rest."""

        def moved(e: dict[str, Any]) -> bool:
            if until == "resume":
                return e["type"] == "run.updated" and e["data"]["status"] == "running"
            return e["type"] == "step.updated" and e["data"]["key"] == key and e["data"]["status"] != "running"

        def settled() -> dict[str, Any] | None:
            if until != "rest" and not any(moved(e) for e in self.events() if e["seq"] > since):
                return None
            run = self.run()
            # the run and its steps are read apart: at rest, a second look sees the same
            return run if self.at_rest(run) and self.run() == run else None

        return wait_for(settled, timeout=45, interval=0.02)

    def start(self, sop: FixtureSop) -> dict[str, Any]:
        self.token = f"run{next(_tokens)}"  # its own endpoint paths
        if sop.queued_first and self.holder is None:
            self.hold()
        text = sop.text(f"{self.loopback.url}/{self.token}")
        self.loopback.failures[self.token] = sop.fails
        self.run_id = start_run(self.api, post_sop(self.api, text, "prop"), breakpoints=list(sop.breakpoints))
        return self.settle(0, "rest" if self.holder else "resume")

    def hold(self) -> None:
        self.holder = start_run(self.api, self.blocker, breakpoints=["hold"])
        wait_for(lambda: self.api.get(f"/api/runs/{self.holder}").json()["status"] == "paused", timeout=30)

    def act(self, action: Action, run: dict[str, Any]) -> dict[str, Any]:
        """One action on a run at rest; returns the run at rest after it."""
        name, since, status = action.name, run["seq"], run["status"]
        if name == "release":
            return self.release(run)
        if name == "hold":
            if self.holder is None and status in TERMINAL:
                self.hold()
            return run
        row = None
        if name in RUN_ACTIONS:
            allowed, path = table_run_controls(status, run["waiting"]), name
        else:
            rows = run["steps"]
            fits = [s for s in rows if name in table_step_controls(s["status"], s["key"], status, run["waiting"])]
            rows = fits if action.fitting and fits else rows
            if not rows:
                return run
            row = rows[action.row % len(rows)]
            allowed = table_step_controls(row["status"], row["key"], status, run["waiting"])
            path = f"steps/{row['key']}/{name}"
        body = {"on": action.on} if name == "breakpoint" else None
        reply = self.api.post(f"/api/runs/{self.run_id}/{path}", json=body)
        note(f"{path} on a {status} run ({row['status'] if row else '-'}): {reply.status_code}")
        if name not in allowed:
            assert reply.status_code == 409, f"{path}: the table refuses it, the server answered {reply.status_code}"
            assert self.run() == run, f"{path} was refused but changed the run"
            return run
        assert reply.status_code == 200, f"{path}: the table allows it, the server answered {reply.text}"
        return self.settle(since, self.effect(name, run, row))

    def release(self, run: dict[str, Any]) -> dict[str, Any]:
        """The step waiting on the endpoint answers; or the run holding the only worker is cancelled."""
        since = run["seq"]
        if self.holder is not None:
            assert self.api.post(f"/api/runs/{self.holder}/cancel").status_code == 200
            self.holder = None
            return self.settle(since, "resume" if run["status"] == "queued" else "rest")
        gated = [s["key"] for s in run["steps"] if s["status"] == "running" and s["step_id"] in GATES]
        if run["status"] != "running" or not gated:
            return run
        self.loopback.release(self.token)
        return self.settle(since, "released", gated[0])

    def effect(self, name: str, run: dict[str, Any], row: dict[str, Any] | None) -> str:
        """What an allowed control makes happen: the run goes on (`resume`), or nothing moves (`rest`)."""
        requeued = name == "rerun" or (name in ("retry", "skip") and run["status"] in ("completed", "failed"))
        if requeued:
            return "rest" if self.holder else "resume"
        if name in ("resume", "step", "retry") or (name == "skip" and row and row["status"] == "failed"):
            return "resume"
        waiting = run["waiting"] or {}
        waited = row is not None and waiting.get("key") == row["key"] and waiting.get("kind") in ("pause", "breakpoint")
        return "resume" if name == "skip" and waited else "rest"  # a skip of the step the run waits before

    def check(self, run: dict[str, Any]) -> None:
        events = self.events()
        assert events[-1]["seq"] == run["seq"], "the run's seq is not its last event's"
        history = History({s["key"]: s["parent"] for s in run["steps"]})
        history.replay(events)
        assert history.run == run["status"], f"the events tell {history.run}, the run is {run['status']}"
        assert history.steps == {s["key"]: s["status"] for s in run["steps"]}, "the events tell other step statuses"
        assert run["controls"] == table_run_controls(run["status"], run["waiting"]), "run controls"
        for step in run["steps"]:
            table = table_step_controls(step["status"], step["key"], run["status"], run["waiting"])
            assert step["controls"] == table, f"controls of {step['key']} ({step['status']})"

    def finish(self) -> dict[str, Any] | None:
        """Ends what the example left going, so that the next one finds the worker free: the run first (at
        rest, or queued behind the holder: a cancel never races with the run's own end), then the holder."""
        run = None
        if self.run_id:
            run = self.run()
            if run["status"] not in TERMINAL:
                self.api.post(f"/api/runs/{self.run_id}/cancel")
                run = wait_for(lambda: (r := self.run())["status"] in TERMINAL and r, timeout=30)
            self.loopback.release(self.token, every=True)
        if self.holder is not None:
            self.api.post(f"/api/runs/{self.holder}/cancel")
            self.holder = None
        return run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker: a run paused at a breakpoint holds it, and the next one waits in the queue."""
    process = ServerProcess(tmp_path_factory.mktemp("controls") / "data", concurrency=1).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    endpoint = Loopback()
    with endpoint.server:
        yield endpoint


PAUSED_AT_MAKE = FixtureSop(False, None, 0, False, ("make",), False)  # rows: first (completed), make, use, nap


# a breakpoint on a step that is not pending (here `first`, completed) is refused by the table
@example(PAUSED_AT_MAKE, [Action("breakpoint", row=0)])
# a person skips `use` (pending) while the run is paused, then reruns `first`: `use` must not run after
@example(PAUSED_AT_MAKE, [Action("skip", row=2), Action("rerun", row=0), Action("resume")])
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every machine
    phases=[Phase.explicit, Phase.generate],  # shrinking an example of a real server would take minutes
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sop=fixture_sops(), actions=st.lists(actions, min_size=6, max_size=16))
def test_controls_follow_the_table(server, loopback, sop, actions):
    note(f"sop: {sop!r}")
    note(f"actions: {actions!r}")
    with server.client() as api:
        blocker = post_sop(api, "sop: 1\nid: SOP_ID\nsteps:\n  - {id: hold, action: log, message: hold}\n", "hold")
        drive = Drive(api, loopback, blocker)
        try:
            run = drive.start(sop)
            drive.check(run)
            for action in actions:
                if run["status"] == "cancelled" and action.name != "cancel":  # nothing moves it on: a new run
                    run = drive.start(sop)
                else:
                    run = drive.act(action, run)
                drive.check(run)
        finally:
            ended = drive.finish()
        assert ended is not None
        drive.check(ended)
