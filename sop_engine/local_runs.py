"""Runs and batches the command line executes in this process: its own Chromium and store, the runs claimed
by this process, with the command line's network policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import telemetry
from .arguments import FileLoader, Loader
from .browser import BrowserHost, BrowserNotFound
from .console import (
    EXIT_FAILED,
    EXIT_OK,
    ConsoleProgress,
    err,
    escape,
    out,
    print_outcome,
    refuse,
    run_summary,
    show_batch_progress,
)
from .liveness import worker_name
from .logs import event_sinks
from .states import RunStatus

if TYPE_CHECKING:
    from .datafile import Row
    from .document import LoadedSop
    from .runner import Runner, RunOutcome
    from .store import Store


async def _execute(
    load: Loader,
    browser: BrowserHost,
    progress: bool,
    resume: str | None = None,
    strict: bool = False,
    base_url: str | None = None,
    trace: str | None = None,
) -> tuple[Store, RunOutcome, LoadedSop]:
    """Chromium starts first when the document looks like it needs a browser (prescan); the document is read
    and checked, and the database opened, while it does (in threads): a run starts sooner. A document that
    needs no browser starts none; one that the first look missed starts it once read. An invalid document
    ends it all with exit code 2."""
    sinks = [*event_sinks(), *([ConsoleProgress()] if progress else [])]
    launching: asyncio.Future[Any] | None = None
    if isinstance(load, FileLoader) and load.looks_like_browser():
        launching = asyncio.ensure_future(browser.start())
    try:
        loaded, inputs = await asyncio.to_thread(load)
        if launching is None and loaded.sop.needs_browser:
            launching = asyncio.ensure_future(browser.start())
        if progress:
            out.print(f"[bold]{escape(loaded.sop.name or loaded.sop.id)}[/]")
        store, runner_class = await asyncio.to_thread(_open_store)
        if launching is not None:
            await launching
        runner = cli_runner(runner_class, store, browser, sinks, strict, base_url, trace)
        if resume is None:
            with telemetry.span("sop-engine run"):  # the run's spans continue this command's trace
                created = await runner.create_run(loaded, inputs, claimed_by=worker_name(), created_by=local_user())
            run_id = created.id
        else:
            run_id = resume  # claimed by this process already (resume_target)
        outcome = await runner.execute(run_id, loaded, inputs, worker=worker_name())
    finally:
        if launching is not None and not launching.done():
            with contextlib.suppress(BaseException):
                await launching
        await browser.close()
    return store, outcome, loaded


def local_user() -> str:
    """Who made a run or a batch from the command line: the account it ran under."""
    import getpass

    try:
        return f"local:{getpass.getuser()}"
    except (OSError, KeyError):
        return "local"


def cli_runner(
    runner_class: type[Runner],
    store: Store,
    browser: BrowserHost,
    sinks: list[Any],
    strict: bool,
    base_url: str | None = None,
    trace: str | None = None,
) -> Runner:
    """A Runner with the command line's network policy: everything is allowed, as on the person's own machine;
    with --strict, what the server allows. `base_url`: where relative URLs (`/demo/todo.html`) go; `trace`: the
    --trace given (off, on, on-failure), which wins over the documents'."""
    from .policy import NetworkPolicy

    sinks = [*sinks, *telemetry.sinks(store)]
    policy = NetworkPolicy.for_cli(strict, base_url=base_url)
    return runner_class(store, browser, sinks, policy=policy, trace=trace)


def _open_store() -> tuple[Store, type[Runner]]:
    from .runner import Runner
    from .store import Store

    return Store(), Runner


def resume_target(run_id: str, force: bool = False) -> tuple[LoadedSop, dict[str, Any]]:
    """A stored run to go on with, claimed by this process (taken over from a holder that is gone, or with
    `force` from one that is alive but hung): its document version and its inputs (secrets decrypted)."""
    from .document import load_sop
    from .states import TransitionError
    from .store import Store
    from .vault import Vault

    store = Store()
    try:
        if store.run(run_id) is None:
            raise refuse(f"no run {run_id} in {store.url}")
        try:
            claim = store.claim_run(run_id, worker_name(), force=force)
        except TransitionError as exc:
            raise refuse(str(exc)) from None
        run = claim.run
        if claim.event is not None and claim.event.data.get("forced"):
            err.print(f"[yellow]took run {run_id} over from {escape(claim.event.data['taken_over_from'])}[/]")
        document = store.document_by_id(run.document_id)
        assert document is not None
        inputs = Vault().open(run.secrets) if run.secrets else dict(run.inputs)
        return load_sop(document.source), inputs
    finally:
        store.close()


def run_document(
    load: Loader,
    *,
    browser: BrowserHost | None = None,
    as_json: bool = False,
    resume: str | None = None,
    strict: bool = False,
    base_url: str | None = None,
    trace: str | None = None,
) -> int:
    tracing = telemetry.start("cli")  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        store, outcome, _ = asyncio.run(
            _execute(load, browser or BrowserHost(), not as_json, resume, strict, base_url, trace)
        )
        summary = run_summary(store, outcome)
        store.close()
        if as_json:
            sys.stdout.write(json.dumps(summary, default=str) + "\n")
        else:
            print_outcome(outcome, summary)
    except BrowserNotFound as exc:
        raise refuse(str(exc), code=EXIT_FAILED) from None
    finally:  # after the outcome is shown: the spans' export may wait for a slow collector
        telemetry.stop(tracing)
    return EXIT_OK if outcome.status == RunStatus.COMPLETED else EXIT_FAILED


def _resume_batch(batches: Any, batch_id: str, force: bool) -> None:
    from .store import RunHeld

    try:
        batches.resume(batch_id, force=force)
    except RunHeld as exc:
        raise refuse(str(exc)) from None


@dataclass(frozen=True)
class NewBatch:
    """A batch to create: its document and its rows, read and checked before a browser starts."""

    loaded: LoadedSop
    rows: list[Row]
    data: Path


async def run_batch(
    new: NewBatch | None,
    batch_id: str | None,
    browser: BrowserHost,
    *,
    retry_failed: bool = False,
    concurrency: int | None = None,
    progress: bool = True,
    strict: bool = False,
    force: bool = False,
    base_url: str | None = None,
    trace: str | None = None,
) -> tuple[Any, str]:
    """Creates the `new` batch, or goes on with `batch_id` (resumed, or its failed rows retried), and runs its
    rows in this process."""
    from .batch import Batches, default_concurrency
    from .runner import Runner
    from .store import Store

    store = Store()
    tracing = telemetry.start("cli")
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, telemetry.stop, tracing)
        await stack.enter_async_context(browser)
        batches = Batches(cli_runner(Runner, store, browser, event_sinks(), strict, base_url, trace))
        if new is None:
            assert batch_id is not None
            if store.batch(batch_id) is None:
                raise refuse(f"no batch {batch_id} in {store.url}")
            if not retry_failed:
                _resume_batch(batches, batch_id, force)
            else:
                rows = batches.retry_failed(batch_id)
                if progress:
                    out.print(f"retrying rows {', '.join(map(str, rows)) or '(none failed)'}")
        else:
            size = concurrency or default_concurrency()
            with telemetry.span("sop-engine batch"):  # its runs' spans continue this command's trace
                batch_id = batches.create(new.loaded, new.rows, new.data.name, size, created_by=local_user()).id
            if progress:
                out.print(f"batch {batch_id}: {len(new.rows)} rows of {new.data}")
        total = store.batch(batch_id).rows  # type: ignore[union-attr]
        done = asyncio.Event()
        shown = asyncio.create_task(show_batch_progress(batches, batch_id, total, done)) if progress else None
        try:
            await batches.run(batch_id, concurrency)
        finally:
            done.set()
            if shown:
                await shown
    return batches, batch_id
