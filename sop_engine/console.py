"""What the command line shows: its two consoles and exit codes, why a command is refused, a line as each step
ends, a run's ending, a batch's progress bar and its summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .cost import Figures
from .problems import Problem
from .states import RunStatus

if TYPE_CHECKING:
    from rich.console import Console

    from .events import Event
    from .runner import RunOutcome
    from .store import Store


class _Console:
    """A rich Console made at its first use: a run that prints only JSON never loads rich (20 ms)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
_MARKS = {"completed": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]↷[/]", "blocked": "[magenta]⊘[/]"}


_errors_as_json = False  # --json: a refusal is one JSON object on stdout, as the command's only output


def escape(text: str) -> str:
    return text.replace("[", r"\[")


def errors_as_json(on: bool) -> None:
    global _errors_as_json
    _errors_as_json = on


def refuse(summary: str, problems: Sequence[Problem] = (), code: int = EXIT_INVALID) -> typer.Exit:
    """Says why the command cannot go on: on stderr, the summary and a line per problem; with --json, on stdout
    `{"error": summary, "problems": [{"where", "message"}, ...]}`, never with no problem: the summary is the
    one problem when none is given. Returns the Exit to raise."""
    problems = list(problems) or [Problem("", summary)]
    if _errors_as_json:
        body = {"error": summary, "problems": [p.as_dict() for p in problems]}
        sys.stdout.write(json.dumps(body) + "\n")
    elif [str(p) for p in problems] in ([], [summary]):  # the summary says it all
        err.print(f"[red]{escape(summary)}[/]")
    else:
        err.print(f"[red]{escape(summary)}:[/]")
        for problem in problems:
            err.print(f"  - {problem}", markup=False)
    return typer.Exit(code)


def warn(text: str) -> None:
    err.print(f"[yellow]warning: {escape(text)}[/]")


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
                detail = f"[red]{escape(data['error'].get('message', ''))}[/]"
            if data.get("reason"):
                detail = f"[dim]{escape(data['reason'])}[/]"
            out.print(f"  {_MARKS[status]} {escape(data['key'])}  {detail}")
        elif event.type == "step.retried":
            out.print(
                f"  [yellow]↻[/] {escape(data['key'])} attempt {data['attempt']} failed, retrying in "
                f"{data['wait_s']}s: {escape(data['error'].get('message', ''))}"
            )
        elif event.type == "log":
            out.print(f"  [cyan]log[/] {escape(data['key'])}: {escape(data['message'])}")


def run_summary(store: Store, outcome: RunOutcome) -> dict[str, Any]:
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
                "cost": row.cost,
            }
        )
    run = store.run(outcome.run_id)
    return {
        "run_id": outcome.run_id,
        "status": outcome.status.value,
        "outputs": outcome.outputs,
        "error": outcome.error,
        "steps": steps,
        "restored": store.restorations(outcome.run_id),
        "cost": run.cost if run else None,
    }


def print_outcome(outcome: RunOutcome, summary: dict[str, Any]) -> None:
    colour = "green" if outcome.status == RunStatus.COMPLETED else "red"
    out.print(f"[{colour}]{outcome.status.value}[/] run {outcome.run_id}")
    if outcome.status == RunStatus.PAUSED:
        out.print("[yellow]a person must decide (in the server: retry or skip the step)[/]")
    if outcome.error:
        out.print(f"[red]{escape(outcome.error)}[/]")
    for restored in summary["restored"]:
        after = restored["checkpoint_after"] or "the start"
        out.print(
            f"[yellow]warning: the browser was rebuilt from a checkpoint (taken after {escape(after)}) before "
            f"{escape(restored['before'])}; lost: {escape('; '.join(restored['lost']))}. An SOP answers this "
            "with resume_from on the step that needs the lost page state (see the README).[/]"
        )
    if outcome.outputs:
        out.print_json(json.dumps(outcome.outputs, default=str))
    cost = describe_cost(summary.get("cost"))
    if cost:
        out.print(f"[dim]cost: {escape(cost)}[/]")


async def show_batch_progress(batches: Any, batch_id: str, total: int, done: asyncio.Event) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]rows[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=out.console,
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


def print_batch_summary(summary: dict[str, Any], lines: list[dict[str, Any]], out_file: Path | None) -> None:
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
            out.print(f"  row {line['row']}: [red]{line['status']}[/] {escape(line['error'] or '')}")
    rebuilt = [str(line["row"]) for line in lines if line.get("restored")]
    if rebuilt:
        out.print(
            f"[yellow]warning: rows {', '.join(rebuilt)} had their browser rebuilt from a checkpoint: what their "
            "pages held in memory was lost (see `restored` in each run; resume_from answers it)[/]"
        )
    cost = describe_cost(summary.get("cost"))
    if cost:
        out.print(f"[dim]cost of its runs: {escape(cost)}[/]")
    if out_file is not None:
        out.print(f"results in {out_file}")
    out.print(
        f"[dim]resume: sop-engine batch --resume {summary['id']}   "
        f"retry the failed rows: sop-engine batch --retry-failed {summary['id']}[/]"
    )


def size_text(count: float) -> str:
    """A count of bytes for people: "980 B", "80.2 kB", "1.2 MB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def describe_cost(cost: dict[str, Any] | None) -> str | None:
    """One short line: "3.1 s, 1.2 MB received in 34 requests, ~0.4 s browser CPU, 80.2 kB of files"."""
    if not cost:
        return None
    figures = Figures.read(cost)
    parts = [f"{figures.wall_ms / 1000:.1f} s"]
    parts.append(f"{size_text(figures.bytes_received)} received in {figures.requests} requests")
    if figures.browser_cpu_ms is not None:
        parts.append(f"~{figures.browser_cpu_ms / 1000:.1f} s browser CPU")
    if figures.artifact_bytes:
        parts.append(f"{size_text(figures.artifact_bytes)} of files")
    return ", ".join(parts)
