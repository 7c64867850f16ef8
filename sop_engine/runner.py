"""The one async orchestrator: asks the pure core what to do, awaits executors, persists, emits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from playwright.async_api import Locator, Page
from sqlalchemy.exc import SQLAlchemyError

from .attempts import (
    MASK_COLOR,
    StepContext,
    attempt_step,
    check_json,
    clean_error,
    map_outputs,
    off_the_loop,
    render_fields,
    secret_parts,
    secret_texts,
    tainted_names,
)
from .browser import BrowserHost
from .browser_session import BrowserSession
from .control import RunControl, Waiting
from .controls import skipped_by_person
from .document import LoadedSop
from .durations import format_duration
from .errors import ErrorKind, StepError
from .events import Event, EventSink, Journal, StoreUnavailable, call_store, utcnow
from .expressions import ExpressionError, evaluate_condition
from .graph import Graph, build_graph, sibling_lists, step_outputs
from .liveness import HEARTBEAT, worker_name
from .loops import (
    LoopError,
    check_iterations,
    element_items,
    for_each_items,
    instance_key,
    iteration_prefix,
    parse_key,
    repeat_items,
)
from .masking import MASK, Masker
from .policy import NetworkPolicy, PolicyError
from .progress import instances_per_iteration
from .retries import RetryPolicy
from .states import ClaimLost, RunStatus, StepStatus
from .steps import Condition, If, Loop, Probe, Step, uses_browser
from .store import Store, data_dir
from .tables import CheckpointRow, RunRow, StepRunRow
from .text import clean
from .vault import Vault

log = logging.getLogger("sop_engine.runner")


class RunFailed(Exception):
    """Ends the run: a step failed under on_error=fail."""


class RunPaused(Exception):
    """Ends a headless execution with the run paused: it needs a person's decision."""

    def __init__(self, waiting: Waiting) -> None:
        super().__init__(waiting.reason)
        self.waiting = waiting


INTERRUPTED = "interrupted during a non-idempotent step"
# what a checkpoint (each tab's URL, cookies, local storage) cannot bring back when a browser is rebuilt
LOST = (
    "what the pages held in memory (script state, e.g. items of a single-page app)",
    "form fields filled and not submitted",
    "session storage",
    "scroll positions and open dialogs",
)

__all__ = ["Execution", "FrameSink", "RunFailed", "RunOutcome", "RunPaused", "Runner", "StoreUnavailable", "call_store"]


@dataclass
class RunOutcome:
    run_id: str
    status: RunStatus
    outputs: dict[str, Any]
    error: str | None


class FrameSink(Protocol):
    """Receives a picture of the page after each browser step, but only while someone watches."""

    def watching(self, run_id: str) -> bool: ...

    async def frame(self, run_id: str, key: str, jpeg: bytes) -> None: ...


def artifacts_root() -> Path:
    return data_dir() / "artifacts"


def shown_inputs(loaded: LoadedSop, inputs: dict[str, Any]) -> dict[str, Any]:
    """Inputs as they may be shown or stored: secret ones as ***."""
    secrets = loaded.sop.secret_inputs
    masker = Masker([inputs.get(n) for n in secrets])
    return {n: MASK if n in secrets else masker(v) for n, v in inputs.items()}


class Runner:
    """Runs SOP documents; one Runner (and one browser) serves many runs."""

    def __init__(
        self,
        store: Store,
        browser: BrowserHost,
        sinks: Iterable[EventSink] = (),
        frames: FrameSink | None = None,
        policy: NetworkPolicy | None = None,
    ) -> None:
        """`policy`: where runs may go (each run's narrowed by its SOP's own egress rules); by default the
        command line's, which allows everything; the server passes its own (NetworkPolicy.for_server)."""
        self.policy = policy or NetworkPolicy.for_cli()
        self.store = store
        self.browser = browser
        self.sinks = list(sinks)
        self.frames = frames
        self._vault: Vault | None = None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = Vault()
        return self._vault

    async def create_run(
        self, loaded: LoadedSop, inputs: dict[str, Any], priority: int = 1, claimed_by: str | None = None, **extra: Any
    ) -> RunRow:
        """Stores a queued run. With secret inputs, the full inputs are kept encrypted so that a worker
        (perhaps after a restart) can run it; what is stored in the open has the secrets masked."""
        shown = shown_inputs(loaded, inputs)
        if loaded.sop.secret_inputs:
            extra["secrets"] = self.vault.seal(inputs)
        status = RunStatus.QUEUED
        if claimed_by:  # run here and now (the command line): no other worker may take it
            status = RunStatus.RUNNING
            extra.update(worker=claimed_by, heartbeat_at=utcnow())

        # one call (one transaction) per try: a retried call never repeats one that went through
        creator = extra.get("created_by")  # a new version of the document records who stored it, as the run does
        document = await call_store(self.store.save_document, loaded, creator, what="storing a document")
        run = await call_store(
            lambda: self.store.create_run(document, shown, status.value, priority, **extra), what="storing a run"
        )
        data = {"status": status.value, "sop_id": run.sop_id, "inputs": shown}
        event = await call_store(self.store.record, run.id, "run.created", data, what=f"a write of run {run.id}")
        for sink in self.sinks:
            await sink.emit(event)
        return run

    async def tell(self, event: Event | None) -> None:
        """Sends the sinks an event stored outside a run's journal (a claim)."""
        for sink in self.sinks if event is not None else ():
            await sink.emit(event)  # type: ignore[arg-type]

    def inputs_of(self, run: RunRow) -> dict[str, Any]:
        """The real inputs of a stored run."""
        return self.vault.open(run.secrets) if run.secrets else dict(run.inputs)

    async def execute(
        self,
        run_id: str,
        loaded: LoadedSop,
        inputs: dict[str, Any],
        control: RunControl | None = None,
        worker: str | None = None,
    ) -> RunOutcome:
        """Runs (or goes on with) a stored run. `worker` names who holds it: its heartbeat is kept fresh.
        Raises StoreUnavailable when the database refuses the run's writes for too long."""
        execution = await Execution.prepare(self, run_id, loaded, inputs, control, worker or worker_name())
        return await execution.run()


@dataclass
class StoredRun:
    """What the store holds of a run as an execution starts."""

    run: RunRow | None
    steps: list[StepRunRow]
    checkpoint: CheckpointRow | None

    @classmethod
    def read(cls, store: Store, run_id: str) -> StoredRun:
        return cls(store.run(run_id), store.steps(run_id), store.checkpoint(run_id))


class Execution:
    """One run of one document: its variables, browser context and step statuses. It picks up where an
    earlier execution of the same run stopped: completed steps give back their stored outputs."""

    def __init__(
        self,
        runner: Runner,
        run_id: str,
        loaded: LoadedSop,
        inputs: dict[str, Any],
        control: RunControl | None,
        worker: str | None,
        stored: StoredRun,
    ) -> None:
        """Use `await Execution.prepare(...)`: it reads the stored run off the event loop."""
        self.runner = runner
        self.worker = worker
        self.store = runner.store
        self.run_id = run_id
        self.sop = loaded.sop
        self.inputs = inputs
        self.control = control
        self.secret_names = self.sop.secret_inputs
        self.mask = Masker([inputs.get(n) for n in self.secret_names])
        # names whose values carry a secret (attempts.tainted_names): shown as *** by name
        self.tainted = tainted_names(self.sop.steps, self.secret_names)
        # secrets as the page may show them, kept here only, to cover them in pictures
        self._clear: dict[str, None] = dict.fromkeys(t for n in self.secret_names for t in secret_texts(inputs.get(n)))
        self._filled: dict[str, set[str]] = {}  # tab -> selectors of fields filled with a secret
        rows, run = stored.steps, stored.run
        self.status: dict[str, StepStatus] = {r.key: StepStatus(r.status) for r in rows}
        vault = runner.vault
        self.stored_outputs: dict[str, dict[str, Any]] = {
            r.key: vault.open(r.sealed_outputs) if r.sealed_outputs else r.outputs or {} for r in rows
        }
        self.attempts: dict[str, int] = {r.key: r.attempts for r in rows}
        self.run_status = RunStatus(run.status) if run else RunStatus.QUEUED
        self.batch_id = run.batch_id if run else None
        self.limit = asyncio.Semaphore(self.sop.max_parallel)
        self.artifacts_dir = artifacts_root() / run_id
        self.base_dir = loaded.base_dir or (Path.cwd() if runner.policy.local_files else data_dir() / "uploads")
        self._policy_error: PolicyError | None = None
        try:
            self.policy = runner.policy.narrowed(self.sop)
        except PolicyError as exc:  # the SOP's own rules do not read: the run fails when it starts
            self.policy, self._policy_error = runner.policy, exc
        self._graphs: dict[int, Graph] = {}
        self._siblings = sibling_lists(self.sop.steps)
        self._hold: set[str] = set()  # interrupted non-idempotent steps: a person decides
        self._passed_breakpoints: set[str] = set()
        saved = stored.checkpoint
        checkpoint = {"key": saved.key, "tabs": saved.tabs, "storage": saved.storage} if saved else None
        self.browser = BrowserSession(runner.browser, vault, checkpoint, self.policy)
        # steps a person skipped: they stay skipped, even in a `resume_from` range that is replayed
        self.person_skipped = {r.key for r in rows if skipped_by_person(r.status, r.reason)}
        self._pause_lock = asyncio.Lock()  # one question to a person at a time, even with parallel steps
        self.journal = Journal(self.store, run_id, runner.sinks, holder=worker)
        self._http: httpx.AsyncClient | None = None

    @classmethod
    async def prepare(
        cls,
        runner: Runner,
        run_id: str,
        loaded: LoadedSop,
        inputs: dict[str, Any],
        control: RunControl | None = None,
        worker: str | None = None,
    ) -> Execution:
        if worker is not None:  # only the worker holding a run executes it
            claim = await call_store(runner.store.claim_run, run_id, worker, what=f"claiming run {run_id}")
            await runner.tell(claim.event)
        stored = await call_store(StoredRun.read, runner.store, run_id, what=f"reading run {run_id}")
        return cls(runner, run_id, loaded, inputs, control, worker, stored)

    # I/O shared by the steps -----------------------------------------------------------------

    async def emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        run: dict[str, Any] | None = None,
        step: tuple[str, dict[str, Any]] | None = None,
        new_steps: list[dict[str, Any]] | None = None,
        checkpoint: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> None:
        """Store a state change with its event, then tell the sinks. With `wait=False` (a step's start, new
        step rows) the change is written with the next one waited for, or WRITE_BEHIND seconds later, whichever
        comes first: a quick step's start and result share one commit, and both are committed before the
        next step starts."""
        # the store's gate applies the table (and this worker's claim) to every change; kept here: what it holds
        if step is not None and "status" in step[1]:
            self.status[step[0]] = StepStatus(step[1]["status"])
        if run is not None and run.get("status") == self.run_status:
            run = {k: v for k, v in run.items() if k != "status"}  # no move: the run is that already
        elif run is not None and "status" in run:
            self.run_status = RunStatus(run["status"])
        for row in new_steps or ():
            self.status[row["key"]] = StepStatus.PENDING
        # no secret in clear; what came from a page was made valid text where it came in (attempts, _fail)
        change = {
            "run": self.mask(run) if run else None,
            "step": (step[0], self.mask(step[1])) if step else None,
            "new_steps": new_steps or (),
            "checkpoint": checkpoint,
        }
        await self.journal.write((type_, self.mask(data), change), wait)

    async def step_event(self, key: str, status: str, **values: Any) -> None:
        """A step's status change: stored on its row and told as a step.updated event."""
        await self.emit("step.updated", {"key": key, "status": status, **values}, step=(key, {"status": status}))

    async def page(self, tab: str) -> Page:
        return await self.browser.page(tab)

    def tab_url(self, tab: str) -> str | None:
        return self.browser.url(tab)

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = self.policy.http_client()
        return self._http

    async def close(self) -> None:
        await self.browser.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # the run ---------------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        beating = asyncio.create_task(self._heartbeat())
        try:
            return await self._run()
        finally:
            beating.cancel()

    async def _heartbeat(self) -> None:
        """Tells the database this worker still holds the run, so nobody takes it over while it is alive."""
        while self.worker:
            await asyncio.sleep(HEARTBEAT)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.worker, [self.run_id])
            except SQLAlchemyError as exc:  # the next beat tries again; the run's own writes say when to give up
                log.warning("heartbeat of run %s refused: %s", self.run_id, str(exc).splitlines()[0])

    async def _run(self) -> RunOutcome:
        produced: dict[str, Any] = {}
        status, error = RunStatus.COMPLETED, None
        try:
            await self._reset_interrupted()
            await self._set_run(
                RunStatus.RUNNING, started_at=utcnow(), waiting=None, worker=self.worker, heartbeat_at=utcnow()
            )
            if self._policy_error is not None:
                raise RunFailed(str(self._policy_error))
            async with asyncio.timeout(self.sop.timeout):
                produced = await self.run_scope(self.sop.steps, ChainMap({}, self.inputs), "", None)
        except RunFailed as exc:
            status, error = RunStatus.FAILED, str(exc)
        except RunPaused as exc:
            await self.close()
            await self._set_run(RunStatus.PAUSED, waiting=self.mask(exc.waiting.as_dict()))
            return RunOutcome(self.run_id, RunStatus.PAUSED, {}, exc.waiting.reason)
        except TimeoutError:
            status, error = RunStatus.FAILED, f"the run did not finish within {format_duration(self.sop.timeout or 0)}"
        except asyncio.CancelledError:
            await self.close()
            await self._interrupted()
            raise
        except StoreUnavailable:  # nothing more can be recorded: the run stays as last committed
            raise
        except ClaimLost as exc:  # cancelled, or taken over, elsewhere: this execution records nothing more
            log.warning("run %s: %s", self.run_id, exc)
            await self.close()
            return await self._lost(str(exc))
        except Exception as exc:  # a bug must not leave the run `running` for ever
            await self.close()
            await self._finish(RunStatus.FAILED, {}, clean(f"internal error: {type(exc).__name__}: {exc}"))
            raise
        finally:
            await self.close()
        scope = {**self.inputs, **produced}
        outputs = self._shown({name: scope.get(name) for name in self.sop.outputs})
        await self._finish(status, outputs, error)
        return RunOutcome(self.run_id, status, self.mask(outputs), self.mask(error))

    async def _lost(self, why: str) -> RunOutcome:
        run = await call_store(self.store.run, self.run_id, what=f"reading run {self.run_id}")
        status = RunStatus(run.status) if run else RunStatus.CANCELLED
        return RunOutcome(self.run_id, status, {}, f"this process stopped executing the run: {why}")

    async def _interrupted(self) -> None:
        """The execution was cancelled: by a person (the run is cancelled), by a control taking the run back
        (it records what happens next), or by the process stopping (the run goes back to the queue; a paused
        run stays paused)."""
        control = self.control
        if control is not None and control.handing_back:
            return
        if control is not None and control.stopping:
            if self.run_status != RunStatus.PAUSED:
                await self._set_run(
                    RunStatus.QUEUED, error="the server stopped; the run goes on when it restarts", worker=None
                )
            return
        await self._finish(RunStatus.CANCELLED, {}, "cancelled")

    def _step_of(self, key: str) -> Step:
        step_id = parse_key(key)[-1][0]
        return next(s for s in self._siblings[step_id] if s.id == step_id)

    async def _reset_interrupted(self) -> None:
        """Steps an earlier execution left running (it crashed, or the process was killed) run again, at
        least once: back to pending. A non-idempotent one waits for a person instead. And where the run
        goes on at a step naming `resume_from` (it was in flight, or is next), the steps from that one run
        again too: the page state they made (a filled form, a wizard's memory) is not in a checkpoint."""
        for key, status in list(self.status.items()):
            if status == StepStatus.BLOCKED:
                await self.step_event(key, "pending", reason=None)
            if status != StepStatus.RUNNING:
                continue
            step = self._step_of(key)
            if not step.idempotent and not step.children():
                error = StepError(ErrorKind.INTERRUPTED, f"{INTERRUPTED}: retry it or skip it").as_dict()
                await self.emit(
                    "step.updated",
                    {"key": key, "status": "failed", "error": error},
                    step=(key, {"status": "failed", "error": error, "finished_at": utcnow()}),
                )
                self._hold.add(key)
                continue
            await self.step_event(key, "pending", reason="interrupted: runs again")
        for key, status in list(self.status.items()):
            step = self._step_of(key)
            if status == StepStatus.PENDING and step.resume_from and key not in self._hold:
                await self._rewind(key, step)

    async def _rewind(self, key: str, step: Step) -> None:
        prefix = key[: len(key) - len(step.id)]
        ids = [s.id for s in self._siblings[step.id]]
        start, end = ids.index(step.resume_from), ids.index(step.id)  # type: ignore[arg-type]
        for sid in ids[min(start, end) : end]:
            sibling = prefix + sid
            if sibling in self.person_skipped:
                continue
            if self.status.get(sibling) in (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED):
                await self.step_event(
                    sibling, "pending", reason=f"runs again: {step.id} resumes from {step.resume_from}"
                )

    async def _set_run(self, status: RunStatus, **values: Any) -> None:
        shown = ("error", "outputs", "waiting")
        data = {"status": status.value, **{k: v for k, v in values.items() if k in shown}}
        if self.batch_id:
            data["batch_id"] = self.batch_id
        await self.emit("run.updated", data, run={"status": status.value, **values})

    async def _finish(self, status: RunStatus, outputs: dict[str, Any], error: str | None) -> None:
        """The run ended: steps still running (a run timeout, a cancel, a sibling that failed the run) are
        recorded as interrupted, so no row is left `running`."""
        for key, step_status in list(self.status.items()):
            if step_status == StepStatus.RUNNING and status == RunStatus.CANCELLED:
                reason = "the run was cancelled"
                await self.emit(
                    "step.updated",
                    {"key": key, "status": "cancelled", "reason": reason},
                    step=(key, {"status": "cancelled", "reason": reason, "finished_at": utcnow()}),
                )
            elif step_status == StepStatus.RUNNING:
                lost = StepError(ErrorKind.INTERRUPTED, f"interrupted: the run {'was ' + status.value}").as_dict()
                await self.emit(
                    "step.updated",
                    {"key": key, "status": "failed", "error": lost},
                    step=(key, {"status": "failed", "error": lost, "finished_at": utcnow()}),
                )
        await self._set_run(status, outputs=outputs, error=error, finished_at=utcnow(), waiting=None, worker=None)

    def graph(self, steps: list[Step]) -> Graph:
        graph = self._graphs.get(id(steps))
        if graph is None:
            graph = self._graphs[id(steps)] = build_graph(steps)
        return graph

    async def run_scope(
        self, steps: list[Step], env: ChainMap[str, Any], prefix: str, parent: str | None
    ) -> dict[str, Any]:
        """Run a list of sibling steps in dependency order; returns the outputs they produced."""
        graph = self.graph(steps)
        status = await self._scope_status(steps, env, prefix, parent)
        running: dict[asyncio.Task[StepStatus], str] = {}
        sequential = self.sop.max_parallel == 1
        try:
            while True:
                for sid in graph.blocked(status):
                    status[sid] = await self._block(graph, sid, prefix, status)
                ready = graph.ready(status, first=sequential)
                if not ready and not running:
                    return {n: env.maps[0].get(n) for s in steps for n in step_outputs(s)}
                if sequential:
                    status[ready[0]] = StepStatus.RUNNING
                    status[ready[0]] = await self.run_step(graph.nodes[ready[0]].step, env, prefix)
                    continue
                for sid in ready:
                    status[sid] = StepStatus.RUNNING
                    running[asyncio.ensure_future(self.run_step(graph.nodes[sid].step, env, prefix))] = sid
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    status[running.pop(task)] = task.result()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _scope_status(
        self, steps: list[Step], env: ChainMap[str, Any], prefix: str, parent: str | None
    ) -> dict[str, StepStatus]:
        """Adds rows for steps seen for the first time; steps an earlier execution finished give back
        their outputs."""
        status: dict[str, StepStatus] = {}
        new_rows = []
        for step in steps:
            key = instance_key(prefix, step.id)
            known = self.status.get(key)
            if known is None:
                new_rows.append(
                    {
                        "key": key,
                        "step_id": step.id,
                        "parent_key": parent,
                        "action": step.action,
                        "status": StepStatus.PENDING.value,
                    }
                )
                known = StepStatus.PENDING
            elif known == StepStatus.COMPLETED:
                stored = self.stored_outputs.get(key, {})
                env.maps[0].update({n: stored.get(n) for n in step_outputs(step)})
                for name in self.tainted.intersection(step_outputs(step)):
                    self.hide(stored.get(name))
            elif known == StepStatus.SKIPPED:
                env.maps[0].update(dict.fromkeys(step_outputs(step)))
            elif key in self._hold:
                known = StepStatus.PENDING  # the gate asks a person before it runs again
            status[step.id] = known
        if new_rows:
            keys = [r["key"] for r in new_rows]
            await self.emit("steps.added", {"parent": parent, "keys": keys}, new_steps=new_rows, wait=False)
        return status

    async def _block(self, graph: Graph, sid: str, prefix: str, status: Mapping[str, StepStatus]) -> StepStatus:
        failed = sorted(d for d in graph.nodes[sid].needs if status[d] in (StepStatus.FAILED, StepStatus.BLOCKED))
        reason = f"needs {', '.join(prefix + d for d in failed)}, which did not complete"
        now = utcnow()
        key = instance_key(prefix, sid)
        await self.emit(
            "step.updated",
            {"key": key, "status": "blocked", "reason": reason},
            step=(key, {"status": "blocked", "reason": reason, "started_at": now, "finished_at": now}),
        )
        return StepStatus.BLOCKED

    # a person's say --------------------------------------------------------------------------

    async def pause(self, waiting: Waiting) -> dict[str, Any]:
        """Pauses the run until a person answers; returns the answer."""
        assert self.control is not None
        async with self._pause_lock:
            self.control.expect(waiting)  # an answer given while the pause is being recorded is kept
            await self._set_run(RunStatus.PAUSED, waiting=self.mask(waiting.as_dict()))
            answer = await self.control.wait()
            await self._set_run(RunStatus.RUNNING, waiting=None)
        if answer["action"] == "step":
            self.control.stepping = True
        return answer

    async def ask(self, waiting: Waiting) -> dict[str, Any]:
        if self.control is None:
            raise StepError(ErrorKind.ACTION, f"{waiting.reason}: this step needs a person; run it in the server")
        answer = await self.pause(waiting)
        for name, spec in ((waiting.form or {}).get("fields") or {}).items():
            if spec.get("secret"):
                self.mask.add(answer.get("values", {}).get(name))
                self.hide(answer.get("values", {}).get(name))
        return answer

    async def _gate(self, step: Step, key: str) -> bool:
        """Before a step: waits while the run is paused or at a breakpoint; False when the step is to be skipped."""
        if key in self._hold:
            return await self._decide_interrupted(step, key)
        control = self.control
        if control is None:
            return True
        while True:
            if key in control.skips:
                control.skips.discard(key)
                return False
            if control.pause_requested:
                waiting = Waiting(f"paused before {key}", key, "pause")
            elif (step.pause_before or control.has_breakpoint(key, step.id)) and key not in self._passed_breakpoints:
                waiting = Waiting(f"breakpoint before {key}", key, "breakpoint")
            else:
                return True
            control.pause_requested = False
            await self.pause(waiting)
            if waiting.kind == "breakpoint":
                self._passed_breakpoints.add(key)

    async def _decide_interrupted(self, step: Step, key: str) -> bool:
        """A non-idempotent step was in flight when the run was interrupted: it may or may not have
        happened (a payment, a submitted form), so a person says whether to run it again."""
        self._hold.discard(key)
        waiting = Waiting(f"{INTERRUPTED} ({key}): retry it or skip it", key, "failed")
        if self.control is None:
            raise RunPaused(waiting)
        answer = await self.pause(waiting)
        if answer["action"] == "skip":
            return False
        await self.step_event(key, "pending", reason="retried by a person after an interruption")
        return True

    def _stepped(self) -> None:
        """After a leaf step, in step mode: pause before the next one."""
        if self.control is not None and self.control.stepping:
            self.control.stepping = False
            self.control.pause_requested = True

    # one step --------------------------------------------------------------------------------

    def _variables(self, step: Step, env: Mapping[str, Any]) -> dict[str, Any]:
        return {name: env.get(name) for name in step.inputs}

    def _shown(self, values: dict[str, Any]) -> dict[str, Any]:
        """Variables as they may be shown: a tainted one as ***, whatever its value."""
        return {n: MASK if n in self.tainted else v for n, v in values.items()}

    def _shown_inputs(self, variables: dict[str, Any]) -> dict[str, Any]:
        return self._shown(variables)

    # secrets: derived ones, and where they show on a page ------------------------------------

    def hide(self, value: Any) -> None:
        """A value computed from a secret: masked from now on in every text, and covered in pictures."""
        for text in secret_texts(value):
            self.mask.add(text)
            self._clear[text] = None

    def _learn_secrets(self, step: Step, template: Any, fields: Any) -> None:
        """Before the step acts: the rendered templates that read a tainted name become secrets, and a
        field filled with one is remembered, to be covered in pictures of its tab."""
        for value in secret_parts(template, fields, self.tainted):
            self.hide(value)
        if step.action in ("fill", "type", "select") and isinstance(fields, dict):
            values = [fields.get("value"), fields.get("label")]
            if self.mask(values) != values:
                self._filled.setdefault(step.tab, set()).add(fields["selector"])

    def secret_locators(self, tab: str, page: Page) -> list[Locator]:
        """The fields of the tab filled with a secret, and the elements whose text shows one."""
        filled = [page.locator(selector) for selector in sorted(self._filled.get(tab, ()))]
        return filled + [page.get_by_text(text) for text in self._clear]

    async def run_step(self, step: Step, env: ChainMap[str, Any], prefix: str) -> StepStatus:
        key = instance_key(prefix, step.id)
        try:
            status = await self._run_step(step, env, key, prefix)
        except (RunFailed, RunPaused):
            if self.browser.restorations:
                await self._restored(key)
            raise
        if self.browser.restorations:
            await self._restored(key)
        return status

    async def _restored(self, key: str) -> None:
        """The browser was rebuilt from a checkpoint during this step: said in the run's events, with what a
        checkpoint cannot bring back."""
        found, self.browser.restorations = self.browser.restorations, []
        for after, at in found:
            data = {"before": key, "checkpoint_after": after, "at": at.isoformat(), "lost": list(LOST)}
            await self.emit("run.restored", data)

    async def _run_step(self, step: Step, env: ChainMap[str, Any], key: str, prefix: str) -> StepStatus:
        if not await self._gate(step, key):
            await self._skip(step, env, key, "skipped by a person")
            return StepStatus.SKIPPED
        variables = self._variables(step, env)
        try:
            if step.when is not None and not await self.condition(step.when, variables, step):
                await self._skip(step, env, key, f"'when' was false: {self._describe(step.when)}")
                return StepStatus.SKIPPED
        except StepError as exc:
            return await self._fail(step, key, exc, [])
        if isinstance(step, Loop):
            return await self.run_loop(step, env, key, variables)
        if isinstance(step, If):
            return await self.run_if(step, env, prefix, variables)
        return await self.run_leaf(step, env, key, variables)

    def _describe(self, condition: Condition) -> str:
        if isinstance(condition, Probe):
            return f"exists {condition.exists!r}" if condition.exists is not None else f"missing {condition.missing!r}"
        return str(condition)

    async def _skip(self, step: Step, env: ChainMap[str, Any], key: str, reason: str) -> None:
        env.maps[0].update(dict.fromkeys(step_outputs(step)))  # a skipped step's outputs read as none
        if skipped_by_person(StepStatus.SKIPPED, reason):
            self.person_skipped.add(key)
        now = utcnow()
        await self.emit(
            "step.updated",
            {"key": key, "status": "skipped", "reason": reason},
            step=(key, {"status": "skipped", "reason": reason, "started_at": now, "finished_at": now}),
        )
        self._stepped()

    async def _start(
        self, key: str, variables: dict[str, Any], attempt: int | None = None, durable: bool = False
    ) -> None:
        """`durable`: committed before the step acts (a non-idempotent step must be known to have started)."""
        attempt = attempt or self.attempts.setdefault(key, 1)
        shown = self._shown_inputs(variables)
        values = {
            "status": "running",
            "attempts": attempt,
            "started_at": utcnow(),
            "finished_at": None,
            "inputs": shown,
            "error": None,
            "reason": None,
        }
        await self.emit(
            "step.updated",
            {"key": key, "status": "running", "attempt": attempt, "inputs": shown},
            step=(key, values),
            wait=durable,
        )

    async def _complete(
        self,
        key: str,
        outputs: dict[str, Any],
        started: float,
        artifacts: list[str],
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        duration_ms = round((asyncio.get_running_loop().time() - started) * 1000, 1)
        real, outputs = outputs, self._shown(outputs)
        values: dict[str, Any] = {"status": "completed", "finished_at": utcnow(), "outputs": outputs}
        if self.mask(outputs) != real:  # a secret shows in them: keep the real ones sealed, for a resume
            values["sealed_outputs"] = self.runner.vault.seal(real)
        if artifacts:
            values["artifacts"] = artifacts
        await self.emit(
            "step.updated",
            {"key": key, "status": "completed", "outputs": outputs, "duration_ms": duration_ms, "artifacts": artifacts},
            step=(key, values),
            checkpoint=checkpoint,
        )

    async def _fail(self, step: Step, key: str, exc: StepError, artifacts: list[str]) -> StepStatus:
        """Records the failure, then applies on_error: fail ends the run, continue goes on, pause asks a person
        (who retries or skips the step: RETRY comes back as PENDING)."""
        exc = clean_error(exc)
        error = exc.as_dict()
        await self.emit(
            "step.updated",
            {"key": key, "status": "failed", "error": error, "artifacts": artifacts},
            step=(key, {"status": "failed", "finished_at": utcnow(), "error": error, "artifacts": artifacts}),
        )
        policy = step.on_error or self.sop.defaults.on_error
        if policy == "continue":
            self._stepped()
            return StepStatus.FAILED
        message = f"step {key} failed: {exc.describe()}"
        if policy == "pause" and self.control is not None:
            answer = await self.pause(Waiting(self.mask(message), key, "failed"))
            if answer["action"] == "skip":
                self.person_skipped.add(key)
                await self.step_event(key, "skipped", reason="skipped by a person after it failed")
                return StepStatus.SKIPPED
            await self.step_event(key, "pending", reason="retried by a person")
            return StepStatus.PENDING
        if policy == "pause":
            message += " (on_error: pause waits for a person in the server; a headless run fails instead)"
        raise RunFailed(self.mask(message))

    async def run_leaf(self, step: Step, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        while True:
            status = await self._leaf_once(step, env, key, variables)
            if status != StepStatus.PENDING:  # PENDING: a person asked for it to run again
                return status

    async def _leaf_once(self, step: Step, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        self.attempts[key] = self.attempts.get(key, 0) + 1
        await self._start(key, variables, self.attempts[key], durable=not step.idempotent)
        started = asyncio.get_running_loop().time()
        timeout = step.timeout or self.sop.defaults.timeout
        ctx = StepContext(self, key, step.tab, timeout, variables, self.base_dir, self.policy)
        policy = RetryPolicy.from_spec(step.retry or self.sop.defaults.retry)

        async def on_retry(number: int, exc: StepError | None, wait_s: float) -> None:
            error = clean_error(exc).as_dict() if exc else None
            self.attempts[key] += 1
            await self.emit(
                "step.retried",
                {"key": key, "attempt": self.attempts[key] - 1, "error": error, "wait_s": round(wait_s, 3)},
                step=(key, {"attempts": self.attempts[key]}),
            )

        try:
            template = step.templated()
            fields = await off_the_loop(template, lambda: render_fields(template, variables))
            self._learn_secrets(step, template, fields)
            result = await attempt_step(step, fields, ctx, policy, self.limit, on_retry)
            outputs = await off_the_loop(step.outputs, lambda: map_outputs(step, result, variables))
            for name in self.tainted.intersection(outputs):
                self.hide(outputs[name])
        except StepError as exc:
            if uses_browser(step):
                await self._failure_screenshot(ctx)
            return await self._fail(step, key, exc, ctx.artifacts)
        env.maps[0].update(outputs)
        await self._complete(key, outputs, started, ctx.artifacts, await self.browser.checkpoint(step, key))
        if uses_browser(step):
            await self._send_frame(step, key)
        self._stepped()
        return StepStatus.COMPLETED

    async def _failure_screenshot(self, ctx: StepContext) -> None:
        page = self.browser.current(ctx.tab)
        if page is None:
            return
        path = ctx.artifact("failure.png")
        try:
            mask = await ctx.secret_locators(page)
            await page.screenshot(path=path, timeout=5000, mask=mask, mask_color=MASK_COLOR)
        except Exception:  # a screenshot is a courtesy; the step's own error is what matters
            ctx.artifacts.pop()

    async def _send_frame(self, step: Step, key: str) -> None:
        frames = self.runner.frames
        page = self.browser.current(step.tab)
        if frames is None or page is None or not frames.watching(self.run_id):
            return
        with contextlib.suppress(Exception):  # a frame for the live view is never worth failing a step for
            mask = self.secret_locators(step.tab, page)
            jpeg = await page.screenshot(type="jpeg", quality=60, timeout=2000, mask=mask, mask_color=MASK_COLOR)
            await frames.frame(self.run_id, key, jpeg)

    # conditions and steps holding steps -------------------------------------------------------

    async def condition(self, condition: Condition, variables: dict[str, Any], step: Step) -> bool:
        if isinstance(condition, Probe):
            selector = render_fields(condition.selector, variables)
            page = await self.page(step.tab)
            try:
                count = await page.locator(selector).count()
            except Exception as exc:  # a selector Playwright cannot read, or the page went away
                raise StepError(
                    ErrorKind.ACTION, f"probe {selector!r}: {str(exc).splitlines()[0]}", selector=selector
                ) from None
            return count > 0 if condition.exists is not None else count == 0
        try:
            return await off_the_loop(condition, lambda: evaluate_condition(condition, variables), condition=True)
        except ExpressionError as exc:
            raise StepError(ErrorKind.TEMPLATE, str(exc)) from None

    async def _nested(self, step: Step, key: str, body: Any) -> Any:
        """Runs a body; when it ends the run, the step holding it is marked failed too."""
        try:
            return await body
        except RunFailed as exc:
            error = StepError(ErrorKind.ACTION, str(exc)).as_dict()
            await self.emit(
                "step.updated",
                {"key": key, "status": "failed", "error": error},
                step=(key, {"status": "failed", "finished_at": utcnow(), "error": error}),
            )
            raise

    async def run_if(self, step: If, env: ChainMap[str, Any], prefix: str, variables: dict[str, Any]) -> StepStatus:
        key = instance_key(prefix, step.id)
        await self._start(key, variables)
        started = asyncio.get_running_loop().time()
        try:
            branch = "then" if await self.condition(step.condition, variables, step) else "else"
        except StepError as exc:
            return await self._fail(step, key, exc, [])
        children = step.then if branch == "then" else step.else_
        if children:
            await self._nested(step, key, self.run_scope(children, env.new_child(), prefix, key))
        await self._complete(key, {"branch": branch}, started, [])
        return StepStatus.COMPLETED

    async def _loop_items(self, loop: Loop, variables: dict[str, Any]) -> list[Any] | None:
        try:
            if loop.for_each is not None:
                rendered = await off_the_loop(loop.for_each, lambda: render_fields(loop.for_each, variables))
                items = for_each_items(rendered)
                if loop.as_ in self.tainted:
                    self.hide(items)
                return check_json(f"the for_each of loop {loop.id}", items)
            if loop.repeat is not None:
                return repeat_items(await off_the_loop(loop.repeat, lambda: render_fields(loop.repeat, variables)))
        except LoopError as exc:
            raise StepError(ErrorKind.TEMPLATE, str(exc)) from None
        if loop.for_each_element is not None:
            selector = render_fields(loop.for_each_element, variables)
            return element_items(selector, await self._count_elements(loop, selector))
        return None

    async def _count_elements(self, loop: Loop, selector: str) -> int:
        page = await self.page(loop.tab)
        locator = page.locator(selector)
        count = await locator.count()
        if count == 0:  # a list drawn by script may not be there yet: give it the step's timeout
            timeout = loop.timeout or self.sop.defaults.timeout
            try:
                await locator.first.wait_for(state="attached", timeout=timeout * 1000)
            except Exception:
                return 0
            count = await locator.count()
        return count

    async def run_loop(self, loop: Loop, env: ChainMap[str, Any], key: str, variables: dict[str, Any]) -> StepStatus:
        await self._start(key, variables)
        started = asyncio.get_running_loop().time()
        collected: dict[str, list[Any]] = {name: [] for name in loop.collect}
        last: dict[str, Any] = dict.fromkeys(set().union(*(step_outputs(s) for s in loop.steps)))
        index = 0
        try:
            items = await self._loop_items(loop, variables)
            if items is not None:
                check_iterations(key, len(items), loop.max_iterations)
                sized = {"key": key, "iterations": len(items), "per_iteration": instances_per_iteration(loop.steps)}
                await self.emit("loop.sized", sized, wait=False)
            while items is None or index < len(items):
                item = items[index] if items is not None else index
                scope = {**variables, **last, loop.as_: item, "index": index}
                if loop.while_ is not None and not await self.condition(loop.while_, scope, loop):
                    break
                if index >= loop.max_iterations:
                    raise LoopError(
                        f"loop {key} ran {loop.max_iterations} iterations and its condition still "
                        "asks for more (raise max_iterations if that is expected)"
                    )
                body_env = env.new_child({loop.as_: item, "index": index}).new_child()
                body = self.run_scope(loop.steps, body_env, iteration_prefix(key, index), key)
                last = await self._nested(loop, key, body)
                for name, var in loop.collect.items():
                    collected[name].append(last.get(var))
                index += 1
                scope = {**variables, **last, loop.as_: item, "index": index - 1}
                if loop.until is not None and await self.condition(loop.until, scope, loop):
                    break
        except LoopError as exc:
            return await self._fail(loop, key, StepError(ErrorKind.ACTION, str(exc)), [])
        except StepError as exc:
            return await self._fail(loop, key, exc, [])
        env.maps[0].update(collected)
        await self._complete(key, {**collected, "iterations": index}, started, [])
        return StepStatus.COMPLETED
