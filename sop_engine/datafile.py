"""Rows of a batch: CSV with a header, a JSON array of objects, or JSON Lines; the columns matched against the
SOP's inputs before any run is made; cells converted to the declared input types."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class DataFile:
    """A data file's columns (a CSV's header; for JSON, every key in the order first seen) and its rows' cells.
    `broken`: row number -> why that row cannot be read (a CSV line with more or fewer cells than the header)."""

    name: str  # where the problems with it are: the file's name
    columns: list[str]
    rows: list[dict[str, Any]]
    broken: dict[int, str] = field(default_factory=dict)


def parse_data(text: str, name: str = "") -> DataFile:
    """The rows of a data file; the format comes from the name's ending, else from the text. JSON is bounded
    in depth (limits.load_json); each row's values are bounded when they become inputs (resolve_inputs)."""
    label = name or "data"
    text = text.removeprefix("\ufeff")  # a byte-order mark is no part of the first column's name
    if (bad := has_unencodable(text, "the file")) is not None:
        raise DocumentError([Problem(label, bad)])
    lowered = name.lower()
    stripped = text.lstrip()
    if lowered.endswith((".jsonl", ".ndjson")) or (stripped.startswith("{") and not lowered.endswith(".json")):
        return _json_lines(text, label)
    try:
        if lowered.endswith(".json") or stripped.startswith("["):
            data = load_json(text, "the file")
            if not isinstance(data, list):
                raise DocumentError([Problem(label, "a JSON data file is an array of objects")])
            return data_of_objects(data, label)
    except (ParseError, LimitError) as exc:
        raise DocumentError([Problem(label, str(exc))]) from None
    return _csv(text, label)


def _json_lines(text: str, label: str) -> DataFile:
    """JSON Lines: an error names its line as an editor counts it. Only a newline ends a line: U+2028 and
    the other breaks `str.splitlines` knows may stand inside a JSON string."""
    items, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            items.append(load_json(line, "the line"))
        except (ParseError, LimitError) as exc:
            # within one line, json's "line 1 column 5 (char 4)" only needs its column
            said = re.sub(r": line 1 column (\d+) \(char \d+\)$", r" at column \1", str(exc))
            raise DocumentError([Problem(f"{label} line {number}", said)]) from None
        lines.append(number)
    return data_of_objects(items, label, [f"{label} line {n}" for n in lines])


def data_of_objects(items: list[Any], label: str = "data", places: list[str] | None = None) -> DataFile:
    """Rows given as objects (JSON): their columns are every key, in the order first seen. `places` says
    where each item is (its line), else it is named by its row number."""
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            where = places[number - 1] if places else f"{label} row {number}"
            raise DocumentError([Problem(where, "is not an object")])
    columns = dict.fromkeys(key for item in items for key in item)
    return DataFile(label, list(columns), items)


def _csv(text: str, label: str) -> DataFile:
    """CSV, read strictly: a row's error names its line as an editor shows it (a quoted cell can span lines)."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, strict=True)
    records: list[tuple[int, list[str]]] = []  # (the line the record starts on, its cells)
    first = 1
    try:
        for cells in reader:
            if cells:  # a blank line is no row
                records.append((first, cells))
            first = reader.line_num + 1
    except csv.Error as exc:  # an unclosed quote, text after a closing quote, a cell over the size limit, NUL
        opened = _unclosed_quote(lines, first)
        if opened is not None:
            raise DocumentError([Problem(f"{label} line {opened}", "a quote opens here and is never closed")]) from None
        raise DocumentError([Problem(f"{label} line {reader.line_num}", f"not valid CSV: {exc}")]) from None
    if not records:
        raise DocumentError([Problem(label, "a CSV data file needs a header row")])
    (_, header), body = records[0], records[1:]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise DocumentError([Problem(f"{label} line 1", f"the header names {_listed(twice)} more than once")])
    rows, broken = [], {}
    for number, (line, cells) in enumerate(body, 1):
        rows.append(dict(zip(header, cells, strict=False)))
        if len(cells) != len(header):
            broken[number] = f"line {line}: {len(cells)} cells, but the header has {len(header)} columns"
    return DataFile(label, header, rows, broken)


def _unclosed_quote(lines: list[str], first: int) -> int | None:
    """The line where a quoted cell opens and runs to the end of the file, reading from the record that starts
    on line `first`; None when every quote there closes. Quotes only open a cell at its start, and two
    quotes inside a quoted cell are one quote character, as csv reads them."""
    quoted, at_start, opened, skip = False, True, 0, False
    for number, line in enumerate(lines[first - 1 :], first):
        for index, char in enumerate(line):
            if skip:
                skip = False
            elif quoted:
                if char == '"':
                    if line[index + 1 : index + 2] == '"':
                        skip = True
                    else:
                        quoted = False
            elif char == '"' and at_start:
                quoted, opened = True, number
            at_start = not quoted and char in ",\r\n"
    return opened if quoted else None


def _listed(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def column_mapping(pairs: Iterable[str], where: str = "--map") -> dict[str, str]:
    """COLUMN=INPUT pairs (the command line's --map, the server's `mapping` field) as column -> input.
    Raises DocumentError naming every pair that is not one."""
    mapping, problems = {}, []
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            problems.append(Problem(f"{where} {pair!r}", "write COLUMN=INPUT"))
        mapping[column] = name
    if problems:
        raise DocumentError(problems)
    return mapping


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


def check_columns(
    sop: Sop, data: DataFile, mapping: dict[str, str], fixed: dict[str, Any], strict: bool = False
) -> list[str]:
    """The data file's columns against the SOP's inputs, before any run is made. Raises DocumentError when a
    required input is supplied by no column (renamed by `mapping`, column -> input) and no fixed input, or when
    `mapping` or `fixed` names something that is no input. Returns the warnings: columns that match no input,
    and mapped columns the file does not have; with `strict`, those are problems too."""
    declared = set(sop.inputs)
    problems = []
    for where, names in (("mapping", mapping.values()), ("inputs", fixed)):
        if unknown := sorted(set(names) - declared):
            known = ", ".join(sop.inputs) or "none"
            problems.append(Problem(where, f"{_listed(unknown)}: not an input of this SOP (its inputs: {known})"))
    unmatched = [c for c in data.columns if mapping.get(c, c) not in declared]
    supplied = {mapping.get(c, c) for c in data.columns} | set(fixed)
    problems += _supplied_twice(data, mapping, declared)
    if missing := [name for name, spec in sop.inputs.items() if spec.required and name not in supplied]:
        problems.append(Problem(data.name, _missing(missing, unmatched, data.columns)))
    warnings = []
    if unmatched:
        warnings.append(f"columns that match no input: {', '.join(unmatched)}")
    if absent := [c for c in mapping if c not in data.columns]:
        warnings.append(f"the mapping names columns the file does not have: {', '.join(absent)}")
    if strict:
        problems += [Problem(data.name, said) for said in warnings]
    if problems:
        raise DocumentError(problems)
    return warnings


def _supplied_twice(data: DataFile, mapping: dict[str, str], declared: set[str]) -> list[Problem]:
    """An input that more than one of the file's columns would supply: which one a row uses is no guess."""
    sources: dict[str, list[str]] = {}
    for column in data.columns:
        sources.setdefault(mapping.get(column, column), []).append(column)
    problems = []
    for name, columns in sources.items():
        if name in declared and len(columns) > 1:
            count = {2: "two", 3: "three"}.get(len(columns), str(len(columns)))
            named = ", ".join(f"{c} (mapped)" if mapping.get(c, c) != c else c for c in columns)
            problems.append(Problem(data.name, f"input '{name}' would come from {count} columns: {named}"))
    return problems


def _missing(missing: list[str], unmatched: list[str], columns: list[str]) -> str:
    said = (
        f"input {_listed(missing)} is required but no column supplies it"
        if len(missing) == 1
        else f"inputs {_listed(missing)} are required but no column supplies them"
    )
    if unmatched:
        return f"{said}; columns that match no input: {', '.join(unmatched)}"
    return f"{said} (its columns: {', '.join(columns) or 'none'})"


def fit_rows(sop: Sop, data: DataFile, mapping: dict[str, str], fixed: dict[str, Any]) -> list[Row]:
    """Every row as run inputs (row_inputs), or invalid with the reason; a row that could not be read is
    invalid with where it is."""
    return [
        Row(n, None, data.broken[n], cells) if n in data.broken else row_inputs(sop, n, cells, mapping, fixed)
        for n, cells in enumerate(data.rows, 1)
    ]
