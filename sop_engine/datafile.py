"""Rows of a batch: CSV with a header, a JSON array of objects, or JSON Lines; cells converted to the
declared input types."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from .document import DocumentError, Problem, Sop, resolve_inputs
from .limits import LimitError, ParseError, load_json
from .text import has_unencodable

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


@dataclass(frozen=True)
class Row:
    number: int  # 1 for the first data row
    inputs: dict[str, Any] | None  # None when the row does not fit the SOP
    error: str | None = None
    cells: dict[str, Any] | None = None


def parse_rows(text: str, name: str = "") -> list[dict[str, Any]]:
    """The rows of a data file; the format comes from the name's ending, else from the text. JSON is bounded
    in depth (limits.load_json); each row's values are bounded when they become inputs (resolve_inputs)."""
    label = name or "data"
    if (bad := has_unencodable(text, "the file")) is not None:
        raise DocumentError([Problem(label, bad)])
    lowered = name.lower()
    stripped = text.lstrip()
    try:
        if lowered.endswith((".jsonl", ".ndjson")) or (stripped.startswith("{") and not lowered.endswith(".json")):
            return _objects([load_json(line, "the line") for line in text.splitlines() if line.strip()], name)
        if lowered.endswith(".json") or stripped.startswith("["):
            data = load_json(text, "the file")
            if not isinstance(data, list):
                raise DocumentError([Problem(label, "a JSON data file is an array of objects")])
            return _objects(data, name)
    except (ParseError, LimitError) as exc:
        raise DocumentError([Problem(label, str(exc))]) from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise DocumentError([Problem(label, "a CSV data file needs a header row")])
        return [{k: v for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as exc:  # a cell over csv's field size limit, a NUL byte
        raise DocumentError([Problem(label, f"not valid CSV: {exc}")]) from None


def _objects(items: list[Any], name: str) -> list[dict[str, Any]]:
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise DocumentError([Problem(f"{name or 'data'} row {number}", "is not an object")])
    return items


def convert_cell(value: Any, type_name: str) -> Any:
    """A cell as the declared type: text from CSV is converted; a list or dict cell is written as JSON."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if type_name == "string":
        return value
    if type_name == "integer":
        try:
            return int(text)
        except ValueError:
            return value
    if type_name == "number":
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return value
    if type_name == "boolean":
        return True if text.lower() in _TRUE else False if text.lower() in _FALSE else value
    try:
        return load_json(text, "the cell")
    except ValueError:  # not JSON, or too deep: left as text, and refused by the input's type
        return value


def row_inputs(sop: Sop, number: int, cells: dict[str, Any], mapping: dict[str, str], fixed: dict[str, Any]) -> Row:
    """The run inputs of one row: its cells (renamed by `mapping`, column -> input) over the fixed inputs.
    Empty cells count as not given; columns that are no input are left out."""
    given = dict(fixed)
    for column, value in cells.items():
        name = mapping.get(column, column)
        if name not in sop.inputs or value is None or value == "":
            continue
        given[name] = convert_cell(value, sop.inputs[name].type)
    try:
        return Row(number, resolve_inputs(sop, given), cells=cells)
    except DocumentError as exc:
        return Row(number, None, "; ".join(str(p) for p in exc.problems), cells=cells)
