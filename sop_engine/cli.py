"""The command line: `sop-engine validate`, `run`, `demo`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .browser import BrowserHost, BrowserNotFound
from .document import DocumentError, LoadedSop, load_sop_file, parse_cli_value, resolve_inputs
from .events import Event
from .runner import Runner, RunOutcome
from .states import RunStatus
from .store import Store

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run browser SOPs step by step.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
_MARKS = {"completed": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]↷[/]", "blocked": "[magenta]⊘[/]"}


def _invalid(error: DocumentError, what: str) -> typer.Exit:
    err.print(f"[red]{what}[/]")
    for problem in error.problems:
        err.print(f"  - {problem}", markup=False)
    return typer.Exit(EXIT_INVALID)


def _load(file: Path) -> LoadedSop:
    try:
        return load_sop_file(file)
    except DocumentError as exc:
        raise _invalid(exc, f"{file} is not a valid SOP:") from None


def _given_inputs(pairs: list[str], inputs_json: Path | None, types: dict[str, str]) -> dict[str, Any]:
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
        duration = None
        if row.started_at and row.finished_at:
            duration = round((row.finished_at - row.started_at).total_seconds() * 1000, 1)
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
    }


async def _execute(loaded: LoadedSop, inputs: dict[str, Any], headed: bool, progress: bool) -> tuple[Store, RunOutcome]:
    store = Store()
    sinks = [ConsoleProgress()] if progress else []
    async with BrowserHost(headed=headed) as browser:
        runner = Runner(store, browser, sinks)
        run = await runner.create_run(loaded, inputs)
        outcome = await runner.execute(run.id, loaded, inputs)
    return store, outcome


def run_document(loaded: LoadedSop, given: dict[str, Any], *, headed: bool = False, as_json: bool = False) -> int:
    try:
        inputs = resolve_inputs(loaded.sop, given)
    except DocumentError as exc:
        raise _invalid(exc, "The inputs do not fit the SOP:") from None
    if not as_json:
        out.print(f"[bold]{_escape(loaded.sop.name or loaded.sop.id)}[/]")
    try:
        store, outcome = asyncio.run(_execute(loaded, inputs, headed, progress=not as_json))
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
        if outcome.error:
            out.print(f"[red]{_escape(outcome.error)}[/]")
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
    file: Annotated[Path, typer.Argument(help="The SOP document (YAML or JSON).")],
    input: Annotated[list[str], typer.Option("--input", "-i", help="NAME=VALUE (JSON when it parses).")] = [],  # noqa: B006
    inputs_json: Annotated[Path | None, typer.Option("--inputs-json", help="A JSON object of inputs.")] = None,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of progress.")] = False,
) -> None:
    """Run an SOP headless, start to finish: exit code 0 completed, 1 failed, 2 invalid."""
    loaded = _load(file)
    types = {name: spec.type for name, spec in loaded.sop.inputs.items()}
    given = _given_inputs(input, inputs_json, types)
    raise typer.Exit(run_document(loaded, given, headed=headed, as_json=as_json))


@app.command()
def demo(
    sites: Annotated[Path, typer.Option(help="Folder of fixture pages to serve.")] = Path("fixtures/sites"),
    sop: Annotated[Path, typer.Option(help="The SOP to run.")] = Path("fixtures/sops/todo-add.yaml"),
    port: Annotated[int, typer.Option(help="Loopback port for the pages.")] = 8765,
) -> None:
    """Serve the fixture pages on 127.0.0.1 and run the demo SOP against them."""
    from .static_site import serve_folder

    loaded = _load(sop)
    with serve_folder(sites, port=port) as url:
        out.print(f"[dim]fixture pages at {url}[/]")
        raise typer.Exit(run_document(loaded, {}))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    concurrency: Annotated[int, typer.Option(help="Runs executed at once.")] = 4,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
) -> None:
    """Start the server: JSON API, live web page, Socket.IO feed, and the worker pool."""
    import uvicorn

    from web.app import create_app
    from web.auth import Tokens
    from web.config import ServerConfig

    config = ServerConfig(host=host, port=port, concurrency=concurrency, headed=headed)
    tokens = Tokens.from_env()
    application = create_app(config, tokens)
    out.print(f"SOP engine at [bold]{config.base_url}/login?token={tokens.first}[/]", markup=True)
    out.print("[dim]open that URL; API clients send Authorization: Bearer <token>[/]")
    uvicorn.run(application, host=host, port=port, log_level="warning", lifespan="on")


def main() -> None:
    app()
