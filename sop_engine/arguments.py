"""What the command line is given, read and checked: an SOP file, --input and --inputs-json, a data file and
its --map, --base-url. Anything invalid prints every problem and ends the command with exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .console import refuse, warn
from .problems import Problem

if TYPE_CHECKING:
    from .datafile import Row
    from .document import DocumentError, LoadedSop

# the document and its inputs, read when the run asks (in a thread, while Chromium starts)
Loader = Callable[[], "tuple[LoadedSop, dict[str, Any]]"]


def invalid(error: DocumentError, what: str) -> typer.Exit:
    return refuse(what, error.problems)


def load_file(file: Path) -> LoadedSop:
    from .document import DocumentError, load_sop_file

    try:
        return load_sop_file(file)
    except DocumentError as exc:
        raise invalid(exc, f"{file} is not a valid SOP") from None


def refused(where: str, message: str) -> typer.Exit:
    """Refuses the command for one problem: `where` (an option, a file) and what is wrong with it."""
    return refuse(f"{where}: {message}", [Problem(where, message)])


def given_inputs(pairs: list[str], inputs_json: Path | None, types: dict[str, str]) -> dict[str, Any]:
    from .document import parse_cli_value

    given: dict[str, Any] = {}
    if inputs_json is not None:
        try:
            loaded = json.loads(inputs_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise refused(f"--inputs-json {inputs_json}", str(exc)) from None
        if not isinstance(loaded, dict):
            raise refused(f"--inputs-json {inputs_json}", "must hold a JSON object")
        given.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise refused(f"--input {pair!r}", "write NAME=VALUE")
        given[name.strip()] = parse_cli_value(value, types.get(name.strip()))
    return given


class FileLoader:
    """The document in `file` with the inputs given: read and checked when called (in a thread)."""

    def __init__(self, file: Path, pairs: list[str], inputs_json: Path | None) -> None:
        self.file, self.pairs, self.inputs_json = file, pairs, inputs_json

    def looks_like_browser(self) -> bool:
        """A hint, before the document is read (prescan): Chromium may start at once."""
        from .prescan import looks_like_browser

        return looks_like_browser(self.file)

    def __call__(self) -> tuple[LoadedSop, dict[str, Any]]:
        from .document import DocumentError, resolve_inputs

        loaded = load_file(self.file)
        types = {name: spec.type for name, spec in loaded.sop.inputs.items()}
        given = given_inputs(self.pairs, self.inputs_json, types)
        try:
            return loaded, resolve_inputs(loaded.sop, given)
        except DocumentError as exc:
            raise invalid(exc, "The inputs do not fit the SOP") from None


def from_file(file: Path, pairs: list[str], inputs_json: Path | None) -> Loader:
    return FileLoader(file, pairs, inputs_json)


def column_mapping(pairs: list[str]) -> dict[str, str]:
    from .datafile import column_mapping
    from .document import DocumentError

    try:
        return column_mapping(pairs, "--map")
    except DocumentError as exc:
        raise invalid(exc, str(exc.problems[0]) if len(exc.problems) == 1 else "--map takes COLUMN=INPUT") from None


def read_rows(
    loaded: LoadedSop,
    data: Path,
    mapping: dict[str, str],
    fixed: dict[str, Any],
    encoding: str | None = None,
    strict: bool = False,
) -> list[Row]:
    """A data file's rows as run inputs, its columns checked against the SOP's inputs first (a required input
    no column supplies ends the command; columns that match no input are a warning, with `strict` an error)."""
    from .datafile import check_columns, fit_rows, parse_data
    from .decoding import Undecodable, decode
    from .document import DocumentError

    if encoding is not None:
        try:
            decode(b"", encoding)
        except Undecodable as exc:
            raise refused("--encoding", str(exc)) from None
    try:
        text = decode(data.read_bytes(), encoding)
    except OSError as exc:
        raise refused(f"--data {data}", exc.strerror or str(exc)) from None
    except Undecodable as exc:
        hint = "" if encoding else "; name its encoding with --encoding"
        raise refused(str(data), f"{exc}{hint}") from None
    try:
        table = parse_data(text, str(data))
    except DocumentError as exc:
        raise invalid(exc, f"{data} is not a valid data file") from None
    try:
        warnings = check_columns(loaded.sop, table, mapping, fixed, strict)
    except DocumentError as exc:
        raise invalid(exc, f"{data} does not fit the SOP") from None
    for warning in warnings:
        warn(f"{data}: {warning}")
    return fit_rows(loaded.sop, table, mapping, fixed)


def checked_base_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or exit 2."""
    if value is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refused("--base-url", f"must be an http(s) URL with a host, like http://127.0.0.1:8765 (not {value!r})")
    return value.rstrip("/")
