"""Runs and batches the command line executes in this process: its own Chromium and store, the runs claimed
by this process, with the command line's network policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .arguments import Loader, given_inputs, load_file, read_rows
from .browser import BrowserHost, BrowserNotFound
from .console import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    ConsoleProgress,
    err,
    escape,
    out,
    print_outcome,
    run_summary,
    show_batch_progress,
)
from .liveness import worker_name
from .states import RunStatus

if TYPE_CHECKING:
    from .document import LoadedSop
    from .runner import Runner, RunOutcome
    from .store import Store


async def _execute(
    load: Loader,
    headed: bool,
    progress: bool,
    resume: str | None = None,
    strict: bool = False,
    base_url: str | None = None,
) -> tuple[Store, RunOutcome, LoadedSop]:
    """Chromium starts first; the document is read and checked, and the database opened, while it does
    (in threads): a run starts sooner. An invalid document ends it all with exit code 2."""
    sinks = [ConsoleProgress()] if progress else []
    browser = BrowserHost(headed=headed)
    launching = asyncio.create_task(browser.start())
    try:
        loaded, inputs = await asyncio.to_thread(load)
        if progress:
            out.print(f"[bold]{escape(loaded.sop.name or loaded.sop.id)}[/]")
        store, runner_class = await asyncio.to_thread(_open_store)
        await launching
        runner = cli_runner(runner_class, store, browser, sinks, strict, base_url)
        if resume is None:
            created = await runner.create_run(loaded, inputs, claimed_by=worker_name(), created_by=local_user())
            run_id = created.id
        else:
            run_id = resume  # claimed by this process already (resume_target)
        outcome = await runner.execute(run_id, loaded, inputs, worker=worker_name())
    finally:
        if not launching.done():
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
) -> Runner:
    """A Runner with the command line's network policy: everything is allowed, as on the person's own machine;
    with --strict, what the server allows. `base_url`: where relative URLs (`/demo/todo.html`) go."""
    from .policy import NetworkPolicy

    return runner_class(store, browser, sinks, policy=NetworkPolicy.for_cli(strict, base_url=base_url))


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
            err.print(f"[red]no run {run_id} in {store.url}[/]")
            raise typer.Exit(EXIT_INVALID)
        try:
            claim = store.claim_run(run_id, worker_name(), force=force)
        except TransitionError as exc:
            err.print(f"[red]{escape(str(exc))}[/]")
            raise typer.Exit(EXIT_INVALID) from None
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
    headed: bool = False,
    as_json: bool = False,
    resume: str | None = None,
    strict: bool = False,
    base_url: str | None = None,
) -> int:
    try:
        store, outcome, _ = asyncio.run(
            _execute(load, headed, progress=not as_json, resume=resume, strict=strict, base_url=base_url)
        )
    except BrowserNotFound as exc:
        err.print(f"[red]{exc}[/]")
        return EXIT_FAILED
    summary = run_summary(store, outcome)
    store.close()
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    else:
        print_outcome(outcome, summary)
    return EXIT_OK if outcome.status == RunStatus.COMPLETED else EXIT_FAILED


def _resume_batch(batches: Any, batch_id: str, force: bool) -> None:
    from .store import RunHeld

    try:
        batches.resume(batch_id, force=force)
    except RunHeld as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(EXIT_INVALID) from None


async def run_batch(
    file: Path | None,
    data: Path | None,
    given: list[str],
    mapping: dict[str, str],
    concurrency: int | None,
    resume: str | None,
    retry_failed: str | None,
    progress: bool,
    headed: bool,
    strict: bool = False,
    force: bool = False,
    base_url: str | None = None,
) -> tuple[Any, str]:
    from .batch import Batches, default_concurrency
    from .runner import Runner
    from .store import Store

    store = Store()
    async with BrowserHost(headed=headed) as browser:
        batches = Batches(cli_runner(Runner, store, browser, [], strict, base_url))
        if resume or retry_failed:
            batch_id = resume or retry_failed
            if store.batch(batch_id) is None:  # type: ignore[arg-type]
                err.print(f"[red]no batch {batch_id} in {store.url}[/]")
                raise typer.Exit(EXIT_INVALID)
            if resume:
                _resume_batch(batches, batch_id, force)  # type: ignore[arg-type]
            else:
                rows = batches.retry_failed(batch_id)  # type: ignore[arg-type]
                if progress:
                    out.print(f"retrying rows {', '.join(map(str, rows)) or '(none failed)'}")
        else:
            assert file is not None and data is not None
            loaded = load_file(file)
            types = {name: spec.type for name, spec in loaded.sop.inputs.items()}
            fixed = given_inputs(given, None, types)
            rows = read_rows(loaded, data, mapping, fixed)
            batch = batches.create(
                loaded, rows, data.name, concurrency or default_concurrency(), created_by=local_user()
            )
            batch_id = batch.id
            if progress:
                out.print(f"batch {batch_id}: {len(rows)} rows of {data}")
        total = store.batch(batch_id).rows  # type: ignore[union-attr]
        done = asyncio.Event()
        shown = asyncio.create_task(show_batch_progress(batches, batch_id, total, done)) if progress else None
        try:
            await batches.run(batch_id, concurrency)  # type: ignore[arg-type]
        finally:
            done.set()
            if shown:
                await shown
    return batches, batch_id  # type: ignore[return-value]
