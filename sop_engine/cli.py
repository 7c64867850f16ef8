"""The command line: `sop-engine validate`, `run`, `demo`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from .browser import BrowserHost, BrowserNotFound
from .events import Event
from .liveness import worker_name
from .states import RunStatus

if TYPE_CHECKING:
    from .document import DocumentError, LoadedSop
    from .runner import Runner, RunOutcome
    from .store import Store

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Run browser SOPs step by step."
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
BASE_URL_HELP = "Where URLs that start with / go, e.g. http://127.0.0.1:8765 for /demo/todo.html (`sop-engine demo`)."
FORCE_HELP = "With --resume: take runs over from a process that holds them and looks alive (hung)."
STRICT_HELP = "The server's network policy: only http(s) pages, no file: URLs, no link-local or metadata addresses."
_MARKS = {"completed": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]↷[/]", "blocked": "[magenta]⊘[/]"}


def _invalid(error: DocumentError, what: str) -> typer.Exit:
    err.print(f"[red]{what}[/]")
    for problem in error.problems:
        err.print(f"  - {problem}", markup=False)
    return typer.Exit(EXIT_INVALID)


def _load(file: Path) -> LoadedSop:
    from .document import DocumentError, load_sop_file

    try:
        return load_sop_file(file)
    except DocumentError as exc:
        raise _invalid(exc, f"{file} is not a valid SOP:") from None


def _given_inputs(pairs: list[str], inputs_json: Path | None, types: dict[str, str]) -> dict[str, Any]:
    from .document import parse_cli_value

    given: dict[str, Any] = {}
    if inputs_json is not None:
        try:
            loaded = json.loads(inputs_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            err.print(f"[red]--inputs-json {inputs_json}: {exc}[/]")
            raise typer.Exit(EXIT_INVALID) from None
        if not isinstance(loaded, dict):
            err.print(f"[red]--inputs-json {inputs_json}: must hold a JSON object[/]")
            raise typer.Exit(EXIT_INVALID)
        given.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            err.print(f"[red]--input {pair!r}: write NAME=VALUE[/]")
            raise typer.Exit(EXIT_INVALID)
        given[name.strip()] = parse_cli_value(value, types.get(name.strip()))
    return given


class ConsoleProgress:
    """Prints a line as each step ends, and every retry and log line."""

    async def emit(self, event: Event) -> None:
        data = event.data
        if event.type == "step.updated" and data.get("status") in _MARKS:
            status = data["status"]
            detail = ""
            if "duration_ms" in data:
                detail = f"[dim]{data['duration_ms']:.0f} ms[/]"
            if data.get("error"):
                detail = f"[red]{_escape(data['error'].get('message', ''))}[/]"
            if data.get("reason"):
                detail = f"[dim]{_escape(data['reason'])}[/]"
            out.print(f"  {_MARKS[status]} {_escape(data['key'])}  {detail}")
        elif event.type == "step.retried":
            out.print(
                f"  [yellow]↻[/] {_escape(data['key'])} attempt {data['attempt']} failed, retrying in "
                f"{data['wait_s']}s: {_escape(data['error'].get('message', ''))}"
            )
        elif event.type == "log":
            out.print(f"  [cyan]log[/] {_escape(data['key'])}: {_escape(data['message'])}")


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _summary(store: Store, outcome: RunOutcome) -> dict[str, Any]:
    rows = store.steps(outcome.run_id)
    far = rows[0].finished_at if rows else None  # only for sorting never-started steps last
    started = sorted(rows, key=lambda r: (r.started_at is None, r.started_at or far, r.id))
    steps = []
    for row in started:
        duration = row.duration_ms
        steps.append(
            {
                "key": row.key,
                "status": row.status,
                "attempts": row.attempts,
                "duration_ms": duration,
                "error": row.error.get("message") if row.error else None,
            }
        )
    return {
        "run_id": outcome.run_id,
        "status": outcome.status.value,
        "outputs": outcome.outputs,
        "error": outcome.error,
        "steps": steps,
        "restored": store.restorations(outcome.run_id),
    }


Loader = Callable[[], "tuple[LoadedSop, dict[str, Any]]"]


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
            out.print(f"[bold]{_escape(loaded.sop.name or loaded.sop.id)}[/]")
        store, runner_class = await asyncio.to_thread(_open_store)
        await launching
        runner = _runner(runner_class, store, browser, sinks, strict, base_url)
        if resume is None:
            created = await runner.create_run(loaded, inputs, claimed_by=worker_name(), created_by=local_user())
            run_id = created.id
        else:
            run_id = resume  # claimed by this process already (_resume_target)
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


def _runner(
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


def _resume_target(run_id: str, force: bool = False) -> tuple[LoadedSop, dict[str, Any]]:
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
            err.print(f"[red]{_escape(str(exc))}[/]")
            raise typer.Exit(EXIT_INVALID) from None
        run = claim.run
        if claim.event is not None and claim.event.data.get("forced"):
            err.print(f"[yellow]took run {run_id} over from {_escape(claim.event.data['taken_over_from'])}[/]")
        document = store.document_by_id(run.document_id)
        assert document is not None
        inputs = Vault().open(run.secrets) if run.secrets else dict(run.inputs)
        return load_sop(document.source), inputs
    finally:
        store.close()


def _from_file(file: Path, pairs: list[str], inputs_json: Path | None) -> Loader:
    def load() -> tuple[LoadedSop, dict[str, Any]]:
        from .document import DocumentError, resolve_inputs

        loaded = _load(file)
        types = {name: spec.type for name, spec in loaded.sop.inputs.items()}
        given = _given_inputs(pairs, inputs_json, types)
        try:
            return loaded, resolve_inputs(loaded.sop, given)
        except DocumentError as exc:
            raise _invalid(exc, "The inputs do not fit the SOP:") from None

    return load


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
    summary = _summary(store, outcome)
    store.close()
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
    else:
        colour = "green" if outcome.status == RunStatus.COMPLETED else "red"
        out.print(f"[{colour}]{outcome.status.value}[/] run {outcome.run_id}")
        if outcome.status == RunStatus.PAUSED:
            out.print("[yellow]a person must decide (in the server: retry or skip the step)[/]")
        if outcome.error:
            out.print(f"[red]{_escape(outcome.error)}[/]")
        for restored in summary["restored"]:
            after = restored["checkpoint_after"] or "the start"
            out.print(
                f"[yellow]warning: the browser was rebuilt from a checkpoint (taken after {_escape(after)}) before "
                f"{_escape(restored['before'])}; lost: {_escape('; '.join(restored['lost']))}. An SOP answers this "
                "with resume_from on the step that needs the lost page state (see the README).[/]"
            )
        if outcome.outputs:
            out.print_json(json.dumps(outcome.outputs, default=str))
    return EXIT_OK if outcome.status == RunStatus.COMPLETED else EXIT_FAILED


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="The SOP document (YAML or JSON).")]) -> None:
    """Check a document: prints `ok`, or every problem with its step and field (exit code 2)."""
    _load(file)
    out.print("ok")


@app.command()
def run(
    file: Annotated[Path | None, typer.Argument(help="The SOP document (YAML or JSON).")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=VALUE (JSON when it parses).")] = [],  # noqa: B006
    inputs_json: Annotated[Path | None, typer.Option("--inputs-json", help="A JSON object of inputs.")] = None,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of progress.")] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Go on with a stored run (by id).")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    strict: Annotated[bool, typer.Option("--strict", help=STRICT_HELP)] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help=BASE_URL_HELP)] = None,
) -> None:
    """Run an SOP headless, start to finish: exit code 0 completed, 1 failed or paused, 2 invalid (or
    refused: a resumed run that another live process holds)."""
    options = {"headed": headed, "as_json": as_json, "strict": strict, "base_url": _base_url(base_url)}
    if resume is not None:
        target = _resume_target(resume, force)  # checked, and claimed, before anything starts
        raise typer.Exit(run_document(lambda: target, resume=resume, **options))  # type: ignore[arg-type]
    if file is None:
        err.print("[red]give an SOP file, or --resume RUN_ID[/]")
        raise typer.Exit(EXIT_INVALID)
    raise typer.Exit(run_document(_from_file(file, input, inputs_json), **options))  # type: ignore[arg-type]


def _base_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or exit 2."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        err.print(f"[red]--base-url must be an http(s) URL with a host, like http://127.0.0.1:8765 (not {value!r})[/]")
        raise typer.Exit(EXIT_INVALID)
    return value.rstrip("/")


@app.command()
def demo(
    sites: Annotated[Path, typer.Option(help="Folder of fixture pages to serve.")] = Path("fixtures/sites"),
    sop: Annotated[Path, typer.Option(help="The SOP to run.")] = Path("fixtures/sops/todo-add.yaml"),
    port: Annotated[int, typer.Option(help="Loopback port for the pages.")] = 8765,
    serve: Annotated[bool, typer.Option("--serve", help="Only serve the pages, until Ctrl-C.")] = False,
) -> None:
    """Serve the fixture pages on 127.0.0.1 under /demo/, as the server has them, and run the demo SOP against
    them (its URLs, like /demo/todo.html, go there); with --serve, only serve them."""
    import threading

    from .static_site import serve_folder

    loaded = None if serve else _load(sop)  # an invalid document is refused before the pages are served
    pages = serve_folder(sites, port=port, prefix="/demo/")
    try:
        url = pages.__enter__().rstrip("/")
    except OSError as exc:
        err.print(f"[red]cannot serve the pages on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port[/]")
        raise typer.Exit(EXIT_INVALID) from None
    try:
        out.print(f"[dim]fixture pages at {url}/demo/[/]")
        if loaded is None:
            out.print(f"[dim]run SOPs against them with --base-url {url}; Ctrl-C stops[/]")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            raise typer.Exit(EXIT_OK)
        raise typer.Exit(run_document(lambda: (loaded, _resolved(loaded)), base_url=url))
    finally:
        pages.__exit__(None, None, None)


def _resolved(loaded: LoadedSop) -> dict[str, Any]:
    from .document import resolve_inputs

    return resolve_inputs(loaded.sop, {})


@app.command()
def prune(
    older_than: Annotated[str, typer.Option("--older-than", help="Age, e.g. 30d, 12h, 90m.")] = "30d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
) -> None:
    """Delete the artifacts (screenshots) and checkpoints of runs that ended longer ago than the age."""
    import re
    import shutil
    from datetime import timedelta

    from .events import utcnow
    from .runner import artifacts_root
    from .store import Store

    match = re.fullmatch(r"(\d+)([dhm])", older_than.strip())
    if not match:
        err.print("[red]--older-than takes a number and d, h or m: 30d, 12h, 90m[/]")
        raise typer.Exit(EXIT_INVALID)
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
    cutoff = utcnow() - timedelta(**{unit: int(match.group(1))})
    store = Store()
    run_ids = store.runs_ended_before(cutoff)
    folders = [artifacts_root() / rid for rid in run_ids if (artifacts_root() / rid).is_dir()]
    if not dry_run:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        store.drop_checkpoints(run_ids)
    store.close()
    verb = "would delete" if dry_run else "deleted"
    out.print(
        f"{verb} the artifacts of {len(folders)} run(s) and the checkpoints of {len(run_ids)} ended before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC"
    )


def _mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            err.print(f"[red]--map {pair!r}: write COLUMN=INPUT[/]")
            raise typer.Exit(EXIT_INVALID)
        mapping[column] = name
    return mapping


def _read_rows(loaded: LoadedSop, data: Path, mapping: dict[str, str], fixed: dict[str, Any]) -> list[Any]:
    from .datafile import parse_rows, row_inputs
    from .document import DocumentError

    try:
        cells = parse_rows(data.read_text(encoding="utf-8"), data.name)
    except OSError as exc:
        err.print(f"[red]--data {data}: {exc.strerror or exc}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    except DocumentError as exc:
        raise _invalid(exc, f"{data} is not a valid data file:") from None
    unknown = sorted(set(mapping.values()) - set(loaded.sop.inputs))
    if unknown:
        err.print(f"[red]--map names {', '.join(unknown)}, which the SOP does not declare as inputs[/]")
        raise typer.Exit(EXIT_INVALID)
    return [row_inputs(loaded.sop, n, row, mapping, fixed) for n, row in enumerate(cells, 1)]


async def _batch_progress(batches: Any, batch_id: str, total: int, done: asyncio.Event) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]rows[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=out,
        transient=False,
    ) as bar:
        task = bar.add_task("rows", total=total, counts="")
        while True:
            summary = await batches.current_summary(batch_id)
            c = summary["counts"]
            ended = c["completed"] + c["failed"] + c["cancelled"] + c["invalid"]
            eta = f", ETA {summary['eta_s']:.0f}s" if summary["eta_s"] else ""
            bar.update(
                task,
                completed=ended,
                counts=(
                    f"[green]{c['completed']} completed[/] [red]{c['failed']} failed[/] {c['running']} running "
                    f"{c['queued']} queued"
                    + (f" [yellow]{c['invalid']} invalid[/]" if c["invalid"] else "")
                    + f"  {summary['rate_per_s']:.2f} rows/s{eta}"
                ),
            )
            if done.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.3)


def _resume_batch(batches: Any, batch_id: str, force: bool) -> None:
    from .store import RunHeld

    try:
        batches.resume(batch_id, force=force)
    except RunHeld as exc:
        err.print(f"[red]{_escape(str(exc))}[/]")
        raise typer.Exit(EXIT_INVALID) from None


async def _run_batch(
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
        batches = Batches(_runner(Runner, store, browser, [], strict, base_url))
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
            loaded = _load(file)
            types = {name: spec.type for name, spec in loaded.sop.inputs.items()}
            fixed = _given_inputs(given, None, types)
            rows = _read_rows(loaded, data, mapping, fixed)
            batch = batches.create(
                loaded, rows, data.name, concurrency or default_concurrency(), created_by=local_user()
            )
            batch_id = batch.id
            if progress:
                out.print(f"batch {batch_id}: {len(rows)} rows of {data}")
        total = store.batch(batch_id).rows  # type: ignore[union-attr]
        done = asyncio.Event()
        shown = asyncio.create_task(_batch_progress(batches, batch_id, total, done)) if progress else None
        try:
            await batches.run(batch_id, concurrency)  # type: ignore[arg-type]
        finally:
            done.set()
            if shown:
                await shown
    return batches, batch_id  # type: ignore[return-value]


@app.command()
def batch(
    file: Annotated[Path | None, typer.Argument(help="The SOP document (YAML or JSON).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Rows: CSV, JSON array, JSON Lines.")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=VALUE for every row.")] = [],  # noqa: B006
    map_: Annotated[list[str], typer.Option("--map", help="COLUMN=INPUT when the names differ.")] = [],  # noqa: B006
    concurrency: Annotated[int | None, typer.Option(help="Rows run at once (default: from the cores).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Results: .jsonl or .csv.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and results as JSON.")] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Go on with a batch's rows not done yet.")] = None,
    retry_failed: Annotated[str | None, typer.Option("--retry-failed", help="Run a batch's failed rows again.")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help=BASE_URL_HELP)] = None,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help=STRICT_HELP)] = False,
) -> None:
    """Run an SOP over every row of a data file: exit code 0 when every row completed, 1 when some did not,
    2 when the document or the data file is invalid."""
    from .batch import results_csv, results_jsonl

    if not (resume or retry_failed) and (file is None or data is None):
        err.print("[red]give an SOP file and --data, or --resume / --retry-failed BATCH_ID[/]")
        raise typer.Exit(EXIT_INVALID)
    if concurrency is not None and concurrency < 1:
        err.print("[red]--concurrency must be at least 1[/]")
        raise typer.Exit(EXIT_INVALID)
    try:
        batches, batch_id = asyncio.run(
            _run_batch(
                file,
                data,
                input,
                _mapping(map_),
                concurrency,
                resume,
                retry_failed,
                not as_json,
                headed,
                strict,
                force,
                _base_url(base_url),
            )
        )
    except BrowserNotFound as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    lines = batches.results(batch_id)
    summary = batches.summary(batch_id)
    outputs = batches.document(batches.store.batch(batch_id).document_id).sop.outputs
    if out_file is not None:
        text = results_csv(lines, outputs) if out_file.suffix == ".csv" else results_jsonl(lines)
        out_file.write_text(text, encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps({"batch": summary, "results": lines}, default=str) + "\n")
    else:
        _print_batch_summary(summary, lines, out_file)
    raise typer.Exit(EXIT_OK if all(line["status"] == "completed" for line in lines) else EXIT_FAILED)


def _print_batch_summary(summary: dict[str, Any], lines: list[dict[str, Any]], out_file: Path | None) -> None:
    from rich.table import Table

    table = Table(title=f"batch {summary['id']}")
    for column in ("rows", "completed", "failed", "invalid", "cancelled", "rows/s"):
        table.add_column(column, justify="right")
    c = summary["counts"]
    table.add_row(
        str(summary["rows"]),
        str(c["completed"]),
        str(c["failed"]),
        str(c["invalid"]),
        str(c["cancelled"]),
        f"{summary['rate_per_s']:.2f}",
    )
    out.print(table)
    for line in lines:
        if line["status"] != "completed":
            out.print(f"  row {line['row']}: [red]{line['status']}[/] {_escape(line['error'] or '')}")
    rebuilt = [str(line["row"]) for line in lines if line.get("restored")]
    if rebuilt:
        out.print(
            f"[yellow]warning: rows {', '.join(rebuilt)} had their browser rebuilt from a checkpoint: what their "
            "pages held in memory was lost (see `restored` in each run; resume_from answers it)[/]"
        )
    if out_file is not None:
        out.print(f"results in {out_file}")
    out.print(
        f"[dim]resume: sop-engine batch --resume {summary['id']}   "
        f"retry the failed rows: sop-engine batch --retry-failed {summary['id']}[/]"
    )


def main() -> None:
    app()
