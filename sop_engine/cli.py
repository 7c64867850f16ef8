"""The command line: `sop-engine validate`, `run`, `demo`, `prune`, `batch`. Commands only: what they are given is
read in arguments.py, what they show is in console.py, the runs they execute are in local_runs.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import logs
from .arguments import checked_base_url, column_mapping, from_file, given_inputs, load_file, read_rows, refused
from .browser import BrowserHost, BrowserNotFound
from .console import EXIT_FAILED, EXIT_INVALID, EXIT_OK, err, errors_as_json, out, print_batch_summary, refuse
from .local_runs import NewBatch, resume_target, run_batch, run_document
from .trace_files import TraceMode

if TYPE_CHECKING:
    from .document import LoadedSop

# web/cli.py adds `serve` and `token` to this app, and prints with these consoles
__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "app", "err", "main", "out"]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Run browser SOPs step by step."
)


@app.callback()
def _logging() -> None:
    # every command (serve and worker too): with SOP_LOG_FORMAT=json, the log is one JSON object a line
    logs.configure()


BASE_URL_HELP = "Where URLs that start with / go, e.g. http://127.0.0.1:8765 for /demo/todo.html (`sop-engine demo`)."
FORCE_HELP = "With --resume: take runs over from a process that holds them and looks alive (hung)."
STRICT_HELP = "The server's network policy: only http(s) pages, no file: URLs, no link-local or metadata addresses."
JSON_ERRORS = "; a refusal is one JSON object {error, problems} (exit code 2)."
RUN_JSON_HELP = "Print one JSON object instead of progress" + JSON_ERRORS
BATCH_JSON_HELP = "Print the summary and results as JSON" + JSON_ERRORS
STRICT_COLUMNS_HELP = "Refuse a data file with columns that match no input (else a warning); --strict does too."
BROWSER_ARG_HELP = "A Chromium command-line flag, e.g. --browser-arg=--user-agent=Probe/1 (repeatable)."
BrowserArgs = Annotated[list[str], typer.Option("--browser-arg", help=BROWSER_ARG_HELP)]
TRACE_HELP = "Record a Playwright trace of each run (the run's file trace.zip): wins over the document's `trace`."
Trace = Annotated[TraceMode | None, typer.Option("--trace", help=TRACE_HELP, show_default=False)]


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The SOP document (YAML or JSON).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {ok, sop_id}" + JSON_ERRORS)] = False,
) -> None:
    """Check a document: prints `ok`, or every problem with its step and field (exit code 2)."""
    errors_as_json(as_json)
    loaded = load_file(file)
    if as_json:
        sys.stdout.write(json.dumps({"ok": True, "sop_id": loaded.sop.id}) + "\n")
    else:
        out.print("ok")


@app.command()
def run(
    file: Annotated[Path | None, typer.Argument(help="The SOP document (YAML or JSON).")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=VALUE (JSON when it parses).")] = [],  # noqa: B006
    inputs_json: Annotated[Path | None, typer.Option("--inputs-json", help="A JSON object of inputs.")] = None,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=RUN_JSON_HELP)] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Go on with a stored run (by id).")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    strict: Annotated[bool, typer.Option("--strict", help=STRICT_HELP)] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help=BASE_URL_HELP)] = None,
    browser_arg: BrowserArgs = [],  # noqa: B006
    trace: Trace = None,
) -> None:
    """Run an SOP headless, start to finish: exit code 0 completed, 1 failed or paused, 2 invalid (or
    refused: a resumed run that another live process holds)."""
    errors_as_json(as_json)
    browser = BrowserHost(headed=headed, extra_args=browser_arg)
    options = {"browser": browser, "as_json": as_json, "strict": strict, "base_url": checked_base_url(base_url)}
    options["trace"] = trace.value if trace else None
    if resume is not None:
        target = resume_target(resume, force)  # checked, and claimed, before anything starts
        raise typer.Exit(run_document(lambda: target, resume=resume, **options))  # type: ignore[arg-type]
    if file is None:
        raise refuse("give an SOP file, or --resume RUN_ID")
    raise typer.Exit(run_document(from_file(file, input, inputs_json), **options))  # type: ignore[arg-type]


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

    loaded = None if serve else load_file(sop)  # an invalid document is refused before the pages are served
    pages = serve_folder(sites, port=port, prefix="/demo/")
    try:
        url = pages.__enter__().rstrip("/")
    except OSError as exc:
        raise refuse(
            f"cannot serve the pages on 127.0.0.1:{port}: {exc.strerror or exc}; pick another --port"
        ) from None
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
    from datetime import timedelta

    from .artifacts import Artifacts
    from .events import utcnow
    from .store import Store

    match = re.fullmatch(r"(\d+)([dhm])", older_than.strip())
    if not match:
        raise refused("--older-than", "takes a number and d, h or m: 30d, 12h, 90m")
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
    cutoff = utcnow() - timedelta(**{unit: int(match.group(1))})
    store = Store()
    run_ids = store.runs_ended_before(cutoff)
    artifacts = Artifacts.configured()  # a folder, or shared storage (SOP_ARTIFACTS_URL)
    with_files = [rid for rid in run_ids if artifacts.has_run(rid)]
    if not dry_run:
        for rid in with_files:
            artifacts.delete_run(rid)
        store.drop_checkpoints(run_ids)
    store.close()
    verb = "would delete" if dry_run else "deleted"
    out.print(
        f"{verb} the artifacts of {len(with_files)} run(s) and the checkpoints of {len(run_ids)} ended before "
        f"{cutoff:%Y-%m-%d %H:%M} UTC"
    )


@app.command()
def batch(
    file: Annotated[Path | None, typer.Argument(help="The SOP document (YAML or JSON).")] = None,
    rows: Annotated[Path | None, typer.Argument(help="The data file (or --data).", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Rows: CSV, JSON array, JSON Lines.")] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=VALUE for every row.")] = [],  # noqa: B006
    map_: Annotated[list[str], typer.Option("--map", help="COLUMN=INPUT when the names differ.")] = [],  # noqa: B006
    encoding: Annotated[str | None, typer.Option("--encoding", help="The data file's encoding (UTF-8).")] = None,
    strict_columns: Annotated[bool, typer.Option("--strict-columns", help=STRICT_COLUMNS_HELP)] = False,
    concurrency: Annotated[int | None, typer.Option(help="Rows run at once (default: from the cores).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Results: .jsonl or .csv.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=BATCH_JSON_HELP)] = False,
    resume: Annotated[str | None, typer.Option("--resume", help="Go on with a batch's rows not done yet.")] = None,
    retry_failed: Annotated[str | None, typer.Option("--retry-failed", help="Run a batch's failed rows again.")] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help=BASE_URL_HELP)] = None,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help=STRICT_HELP)] = False,
    browser_arg: BrowserArgs = [],  # noqa: B006
    trace: Trace = None,
) -> None:
    """Run an SOP over every row of a data file: exit code 0 when every row completed, 1 when some did not,
    2 when the document or the data file is invalid, or its columns leave a required input without a value."""
    from .batch import results_csv, results_jsonl

    errors_as_json(as_json)
    if rows is not None and data is not None and rows != data:
        raise refused("--data", f"give the data file once, as the second argument or as --data (not {rows} and {data})")
    data = data or rows
    if not (resume or retry_failed) and (file is None or data is None):
        raise refuse("give an SOP file and its data file, or --resume / --retry-failed BATCH_ID")
    if concurrency is not None and concurrency < 1:
        raise refused("--concurrency", "must be at least 1")
    mapping, base = column_mapping(map_), checked_base_url(base_url)
    new = None
    if not (resume or retry_failed):
        assert file is not None and data is not None
        loaded = load_file(file)
        fixed = given_inputs(input, None, {name: spec.type for name, spec in loaded.sop.inputs.items()})
        new = NewBatch(loaded, read_rows(loaded, data, mapping, fixed, encoding, strict_columns or strict), data)
    browser = BrowserHost(headed=headed, extra_args=browser_arg)
    try:
        batches, batch_id = asyncio.run(
            run_batch(
                new,
                resume or retry_failed,
                browser,
                retry_failed=bool(retry_failed),
                concurrency=concurrency,
                progress=not as_json,
                strict=strict,
                force=force,
                base_url=base,
                trace=trace.value if trace else None,
            )
        )
    except BrowserNotFound as exc:
        raise refuse(str(exc), code=EXIT_FAILED) from None
    lines = batches.results(batch_id)
    summary = batches.summary(batch_id)
    outputs = batches.document(batches.store.batch(batch_id).document_id).sop.outputs
    if out_file is not None:
        text = results_csv(lines, outputs) if out_file.suffix == ".csv" else results_jsonl(lines)
        out_file.write_text(text, encoding="utf-8")
    if as_json:
        sys.stdout.write(json.dumps({"batch": summary, "results": lines}, default=str) + "\n")
    else:
        print_batch_summary(summary, lines, out_file)
    raise typer.Exit(EXIT_OK if all(line["status"] == "completed" for line in lines) else EXIT_FAILED)


def main() -> None:
    app()
