"""The Runner: stores runs and executes them, one Execution each; one Runner (and one browser) serves many runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import telemetry
from ..breakers import Breakers
from ..browser import BrowserHost
from ..control import RunControl
from ..document import LoadedSop
from ..events import Event, EventSink, call_store, utcnow
from ..liveness import worker_name
from ..policy import NetworkPolicy
from ..states import RunStatus
from ..store import Store
from ..tables import RunRow
from ..vault import Vault
from .execution import Execution
from .outcome import FrameSink, RunOutcome, shown_inputs


class Runner:
    """Runs SOP documents; one Runner (and one browser) serves many runs."""

    def __init__(
        self,
        store: Store,
        browser: BrowserHost,
        sinks: Iterable[EventSink] = (),
        frames: FrameSink | None = None,
        policy: NetworkPolicy | None = None,
        trace: str | None = None,
    ) -> None:
        """`policy`: where runs may go (each run's narrowed by its SOP's own egress rules); by default the
        command line's, which allows everything; the server passes its own (NetworkPolicy.for_server).
        `trace`: off, on or on-failure for every run, whatever its document says (the command line's --trace)."""
        self.policy = policy or NetworkPolicy.for_cli()
        self.trace = trace
        self.store = store
        self.breakers = Breakers(store)  # this process's view of the target hosts' circuit breakers
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
        if (context := telemetry.traceparent()) is not None:  # its spans continue the trace that created it
            extra.setdefault("trace_context", context)
        if loaded.sop.secret_inputs:
            extra["secrets"] = self.vault.seal(inputs)
        status = RunStatus.QUEUED
        if claimed_by:  # run here and now (the command line): no other worker may take it
            status = RunStatus.RUNNING
            extra.update(worker=claimed_by, heartbeat_at=utcnow())

        # one call (one transaction) per try: a retried call never repeats one that went through
        creator = extra.get("created_by")  # a new version of the document records who stored it, as the run does
        document = await call_store(self.store.save_document, loaded, creator, what="storing a document")
        run, event = await call_store(
            lambda: self.store.create_run_announced(document, shown, status.value, priority, **extra),
            what="storing a run",
        )
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
