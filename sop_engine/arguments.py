"""What the command line is given, read and checked: an SOP file, --input and --inputs-json, a data file and
its --map, --base-url. Anything invalid prints every problem and ends the command with exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .console import EXIT_INVALID, err

if TYPE_CHECKING:
    from .document import DocumentError, LoadedSop

# the document and its inputs, read when the run asks (in a thread, while Chromium starts)
Loader = Callable[[], "tuple[LoadedSop, dict[str, Any]]"]


def invalid(error: DocumentError, what: str) -> typer.Exit:
    err.print(f"[red]{what}[/]")
    for problem in error.problems:
        err.print(f"  - {problem}", markup=False)
    return typer.Exit(EXIT_INVALID)


def load_file(file: Path) -> LoadedSop:
    from .document import DocumentError, load_sop_file

    try:
        return load_sop_file(file)
    except DocumentError as exc:
        raise invalid(exc, f"{file} is not a valid SOP:") from None


def given_inputs(pairs: list[str], inputs_json: Path | None, types: dict[str, str]) -> dict[str, Any]:
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


def from_file(file: Path, pairs: list[str], inputs_json: Path | None) -> Loader:
    def load() -> tuple[LoadedSop, dict[str, Any]]:
        from .document import DocumentError, resolve_inputs

        loaded = load_file(file)
        types = {name: spec.type for name, spec in loaded.sop.inputs.items()}
        given = given_inputs(pairs, inputs_json, types)
        try:
            return loaded, resolve_inputs(loaded.sop, given)
        except DocumentError as exc:
            raise invalid(exc, "The inputs do not fit the SOP:") from None

    return load


def column_mapping(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            err.print(f"[red]--map {pair!r}: write COLUMN=INPUT[/]")
            raise typer.Exit(EXIT_INVALID)
        mapping[column] = name
    return mapping


def read_rows(loaded: LoadedSop, data: Path, mapping: dict[str, str], fixed: dict[str, Any]) -> list[Any]:
    from .datafile import parse_rows, row_inputs
    from .document import DocumentError

    try:
        cells = parse_rows(data.read_text(encoding="utf-8"), data.name)
    except OSError as exc:
        err.print(f"[red]--data {data}: {exc.strerror or exc}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    except DocumentError as exc:
        raise invalid(exc, f"{data} is not a valid data file:") from None
    unknown = sorted(set(mapping.values()) - set(loaded.sop.inputs))
    if unknown:
        err.print(f"[red]--map names {', '.join(unknown)}, which the SOP does not declare as inputs[/]")
        raise typer.Exit(EXIT_INVALID)
    return [row_inputs(loaded.sop, n, row, mapping, fixed) for n, row in enumerate(cells, 1)]


def checked_base_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or exit 2."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        err.print(f"[red]--base-url must be an http(s) URL with a host, like http://127.0.0.1:8765 (not {value!r})[/]")
        raise typer.Exit(EXIT_INVALID)
    return value.rstrip("/")
