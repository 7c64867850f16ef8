"""One run of one document: its variables, browser context and step statuses, and its life from start to end."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import tempfile
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from .. import settings
from ..artifacts import Artifacts
from ..browser_options import run_browser
from ..browser_session import BrowserSession
from ..control import RunControl
from ..controls import skipped_by_person
from ..cost import CostMeter
from ..dialogs import DialogDesk
from ..document import LoadedSop
from ..durations import format_duration
from ..errors import ErrorKind, StepError
from ..events import Journal, StoreUnavailable, call_store, utcnow
from ..graph import Graph, sibling_lists
from ..liveness import HEARTBEAT
from ..logs import WHERE
from ..masking import Masker
from ..policy import PolicyError
from ..rollback import stopped_rollback
from ..states import ClaimLost, RunStatus, StepStatus, TransitionError
from ..store import Store, data_dir
from ..tables import CheckpointRow, RunRow, StepRunRow
from ..taint import secret_texts, tainted_names
from ..text import clean
from ..trace_files import TraceMode, dropped, keep_trace, kept
from .flow import Flow
from .frames import LiveFrames
from .leaf import Leaf
from .outcome import RollingBack, RunFailed, RunOutcome, RunPaused
from .people import People
from .restart import Restart
from .undo import Undo

if TYPE_CHECKING:
    import httpx
    from playwright.async_api import Page

    from .lifecycle import Runner

log = logging.getLogger("sop_engine.runner")


@dataclass
class StoredRun:
    """What the store holds of a run as an execution starts."""

    run: RunRow | None
    steps: list[StepRunRow]
    checkpoint: CheckpointRow | None

    @classmethod
    def read(cls, store: Store, run_id: str) -> StoredRun:
        return cls(store.run(run_id), store.steps(run_id), store.checkpoint(run_id))


class Execution(Flow, Leaf, People, Restart, Undo):
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
        # names whose values carry a secret (taint.tainted_names): shown as *** by name
        self.tainted = tainted_names(self.sop.steps, self.secret_names)
        # secrets as the page may show them, kept here only, to cover them in pictures
        self._clear: dict[str, None] = dict.fromkeys(t for n in self.secret_names for t in secret_texts(inputs.get(n)))
        self._filled: dict[str, set[str]] = {}  # tab -> [target, frame] (JSON) of fields filled with a secret
        options = settings.current()  # read once a run
        # pictures for whoever watches, beside the steps, at most every SOP_FRAME_SECONDS
        self.live = LiveFrames(runner.frames, run_id, options.frame_seconds)
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
        self.artifact_store = Artifacts.configured()  # where its screenshots and downloads go
        self._copies: Path | None = None  # local copies of its files that its pages may read (uploads)
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
        made = run_browser(self.sop, inputs, self.tainted)
        for value in made.secrets:
            self.hide(value)
        self._start_error = made.error
        dialogs = DialogDesk(made.dialogs, self.mask, self._log_line)
        self.cost = CostMeter(run.cost if run else None)  # what this execution costs, on top of the earlier ones
        self.browser = BrowserSession(runner.browser, vault, checkpoint, self.policy, made.options, dialogs, self.cost)
        # a Playwright trace: the command line's --trace, else the document's `trace`, else the server's SOP_TRACE
        self.trace_mode = TraceMode(runner.trace or self.sop.trace or options.trace)
        self.browser.tracing = self.trace_mode != TraceMode.OFF
        self._trace: dict[str, Any] | None = None  # what became of this execution's trace, for runs.trace
        # steps a person skipped: they stay skipped, even in a `resume_from` range that is replayed
        self.person_skipped = {r.key for r in rows if skipped_by_person(r.status, r.reason)}
        self._pause_lock = asyncio.Lock()  # one question to a person at a time, even with parallel steps
        self.journal = Journal(self.store, run_id, runner.sinks, holder=worker)
        self._committing: asyncio.Future[None] | None = None  # a step's result being committed (commit_behind)
        self._http: httpx.AsyncClient | None = None
        # for a rollback (runner/undo.py): the order the steps completed in, what each saw, where the rollback is
        done = [r for r in rows if r.status == StepStatus.COMPLETED and r.finished_at is not None]
        done.sort(key=lambda r: r.finished_at)  # type: ignore[arg-type,return-value]
        self.completed_count = itertools.count(1)
        self.completion: dict[str, int] = {r.key: next(self.completed_count) for r in done}
        self.recorded_inputs: dict[str, dict[str, Any]] = {r.key: r.inputs or {} for r in rows}
        self.rollback_state: dict[str, Any] | None = run.rollback if run else None
        self.rollback_end: dict[str, Any] | None = None  # how this execution's rollback went, for the run's end

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
        costs: dict[str, dict[str, Any]] | None = None,
        wait: bool = True,
    ) -> None:
        """Store a state change with its event, then tell the sinks. With `wait=False` (a step's start, new
        step rows) the change is written with the next one waited for, or WRITE_BEHIND seconds later, whichever
        comes first: a quick step's start and result share one commit, and both are committed before the
        next step starts. `costs`: steps' figures completed since they ended (CostMeter.late)."""
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
            "costs": costs,
        }
        if wait:  # what a commit started earlier raised comes first (the journal keeps the writes in order)
            await self.settled()
        await self.journal.write((type_, self.mask(data), change), wait)

    async def commit_behind(
        self, type_: str, data: dict[str, Any], step: tuple[str, dict[str, Any]], **change: Any
    ) -> None:
        """A step's result: its commit starts now, and runs beside what comes next until `settled()` (before the
        next step acts, and before any other write): the next step's templates, checks and start are made
        while the database writes, and it acts only once the result is durable."""
        await self.settled()  # one at a time, in order (parallel steps)
        self.status[step[0]] = StepStatus(step[1]["status"])
        masked = {"run": None, "step": (step[0], self.mask(step[1])), "new_steps": (), **change}
        self._committing = self.journal.commit_now((type_, self.mask(data), masked))

    async def settled(self) -> None:
        """Waits for the result being committed behind (commit_behind), raising what the commit raised."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing

    async def step_event(self, key: str, status: str, **values: Any) -> None:
        """A step's status change: stored on its row and told as a step.updated event."""
        await self.emit("step.updated", {"key": key, "status": status, **values}, step=(key, {"status": status}))

    async def page(self, tab: str, reopen: bool = False) -> Page:
        return await self.browser.page(tab, reopen)

    async def _log_line(self, key: str, message: str) -> None:
        await self.emit("log", {"key": key, "level": "info", "message": message})

    def tab_url(self, tab: str) -> str | None:
        return self.browser.url(tab)

    def http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = self.policy.http_client()
        return self._http

    async def artifact_copy(self, name: str) -> Path:
        """A local copy of the run's file `name`, for the browser (an upload): a page reads the file it was
        given when it likes (a later submit too), so the copy lasts until the browser closes."""
        if self._copies is None:
            self._copies = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sop-run-"))
        copy = self._copies / name
        await asyncio.to_thread(self.artifact_store.fetch, self.run_id, name, copy)
        return copy

    async def close(self, last_frame: bool = False, ended: RunStatus | None = None) -> None:
        """`last_frame`: the run ended; a watcher gets a picture of where it stopped before the browser closes.
        `ended`: the status the run ends this execution with, which decides whether its trace is kept."""
        await self.live.close(last=last_frame)
        await self.cost.close()  # the pages' last readings, before they close
        keep = self.browser.recording and kept(self.trace_mode, ended)
        raw = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sop-trace-")) / "raw.zip" if keep else None
        written = await self.browser.close(trace_to=raw)
        if raw is not None:
            self._trace = await self._keep_trace(raw, written)
            if self._trace.get("status") == "saved":  # the trace is one of the run's files: its bytes count
                self.cost.artifact(int(self._trace.get("bytes") or 0))
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._copies is not None:
            await asyncio.to_thread(shutil.rmtree, self._copies, True)
            self._copies = None

    async def _keep_trace(self, raw: Path, written: bool) -> dict[str, Any]:
        """The trace scrubbed and stored as the run's file (trace_files), or why it was not kept."""
        if not written:
            await asyncio.to_thread(shutil.rmtree, raw.parent, True)
            return dropped("the browser context was lost before its trace was written")
        try:
            return await asyncio.to_thread(keep_trace, self.artifact_store, self.run_id, raw, self.mask)
        except Exception as exc:  # a trace it cannot keep must not keep the run from ending
            # its type only: a message could quote the page
            log.warning("run %s: its trace was not kept: %s", self.run_id, type(exc).__name__)
            await asyncio.to_thread(shutil.rmtree, raw.parent, True)
            return dropped(f"the trace could not be scrubbed: {type(exc).__name__}")

    # the run ---------------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        where = WHERE.set((self.run_id, None))  # what is logged meanwhile says the run (JSON logs)
        beating = asyncio.create_task(self._heartbeat())
        try:
            return await self._run()
        finally:
            beating.cancel()
            WHERE.reset(where)

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
        ended: RunStatus | None = None  # how the run ends, once known: its trace is kept or not by it
        self.cost.start()
        try:
            await self._reset_interrupted()
            await self._set_run(
                RunStatus.RUNNING, started_at=utcnow(), waiting=None, worker=self.worker, heartbeat_at=utcnow()
            )
            if self._policy_error is not None:
                raise RunFailed(str(self._policy_error))
            if self._start_error is not None:
                raise RunFailed(self._start_error)
            top: ChainMap[str, Any] = ChainMap({}, self.inputs)
            produced = top.maps[0]  # a run that fails keeps what the steps that completed produced
            produced = await self._steps(top)
            ended = status
        except RunFailed as exc:
            ended = status = RunStatus.FAILED
            error = str(exc)
        except RunPaused as exc:
            await self.close(ended=RunStatus.PAUSED)
            await self._set_run(RunStatus.PAUSED, waiting=self.mask(exc.waiting.as_dict()), **self._traced())
            return RunOutcome(self.run_id, RunStatus.PAUSED, {}, exc.waiting.reason)
        except TimeoutError:
            ended = status = RunStatus.FAILED
            error = f"the run did not finish within {format_duration(self.sop.timeout or 0)}"
        except asyncio.CancelledError:
            await self.close()
            try:
                await self._interrupted()
            except TransitionError as exc:  # the run ended, or moved on elsewhere, as it was being stopped
                log.warning("run %s: %s", self.run_id, exc)
            raise
        except StoreUnavailable:  # nothing more can be recorded: the run stays as last committed
            raise
        except ClaimLost as exc:  # cancelled, or taken over, elsewhere: this execution records nothing more
            log.warning("run %s: %s", self.run_id, exc)
            await self.close()
            return await self._lost(str(exc))
        except Exception as exc:  # a bug must not leave the run `running` for ever
            await self.close(ended=RunStatus.FAILED)
            await self._finish(RunStatus.FAILED, {}, clean(f"internal error: {type(exc).__name__}: {exc}"))
            raise
        finally:
            await self.close(last_frame=True, ended=ended)
        scope = {**self.inputs, **produced}
        outputs = self._shown({name: scope.get(name) for name in self.sop.outputs})
        await self._finish(status, outputs, error)
        return RunOutcome(self.run_id, status, self.mask(outputs), self.mask(error))

    async def _steps(self, top: ChainMap[str, Any]) -> dict[str, Any]:
        """The document's steps, within the run's timeout; then, if one failed under on_error=rollback (or a
        person chose to roll back), the rollback, outside it (the compensations have their own timeouts)."""
        rolling = self.rollback_due()  # a rollback requested, or interrupted: it goes on, no step runs
        if rolling is None:
            async with asyncio.timeout(self.sop.timeout):
                try:
                    produced = await self.run_scope(self.sop.steps, top, "", None)
                    await self.settled()  # the last step's result, committed behind, is durable: the run ends
                    return produced
                except RollingBack as exc:
                    rolling = exc
        await self.roll_back(rolling)  # raises RunFailed, with the first error and how the rollback went

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

    async def _set_run(self, status: RunStatus, **values: Any) -> None:
        shown = ("error", "outputs", "waiting", "trace", "rollback")
        data = {"status": status.value, **{k: v for k, v in values.items() if k in shown}}
        if self.batch_id:
            data["batch_id"] = self.batch_id
        costs = None
        if status != RunStatus.RUNNING:  # the execution ends here: what it cost so far, the steps' last figures
            values["cost"], costs = self.cost.run_cost(), self.cost.late()
        await self.emit("run.updated", data, run={"status": status.value, **values}, costs=costs)

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
        values = self._traced()
        if self.rollback_end is not None:  # how its rollback went, with the run's end
            values["rollback"] = self.rollback_end
        elif status == RunStatus.CANCELLED and self.rollback_due() is not None:  # cancelled as it rolled back
            values["rollback"] = stopped_rollback(self.rollback_state)
        await self._set_run(
            status, outputs=outputs, error=error, finished_at=utcnow(), waiting=None, worker=None, **values
        )

    def _traced(self) -> dict[str, Any]:
        """runs.trace, when this execution kept its trace or says why it did not; else the column stays."""
        return {"trace": self._trace} if self._trace is not None else {}
