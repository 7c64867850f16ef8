"""Reading batch rows and fitting them to the SOP's inputs."""

from __future__ import annotations

import pytest

from sop_engine.datafile import convert_cell, parse_data, row_inputs
from sop_engine.document import DocumentError, load_sop

SOP = load_sop("""
sop: 1
id: rows
inputs:
  name: {type: string}
  age: {type: integer, default: 0}
  score: {type: number, default: 0}
  vip: {type: boolean, default: false}
  tags: {type: list, default: []}
  site: {type: string, default: x}
steps:
  - {id: a, action: log, message: hi}
""").sop


def test_csv_json_and_jsonl_give_the_same_rows():
    expected = [{"name": "Ada", "age": "36"}, {"name": "Alan", "age": "41"}]
    assert parse_data("name,age\nAda,36\nAlan,41\n", "rows.csv").rows == expected
    assert parse_data('[{"name": "Ada", "age": "36"}, {"name": "Alan", "age": "41"}]', "rows.json").rows == expected
    assert parse_data('{"name": "Ada", "age": "36"}\n\n{"name": "Alan", "age": "41"}\n', "rows.jsonl").rows == expected
    assert parse_data('{"name": "Ada", "age": "36"}\n{"name": "Alan", "age": "41"}', "").rows == expected


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ('{"not": "a list"}', "rows.json", "a JSON data file is an array of objects"),
        ("[1, 2]", "rows.json", "rows.json row 1: is not an object"),
        ("[", "rows.json", "not valid JSON"),
        ("", "rows.csv", "a CSV data file needs a header row"),
    ],
)
def test_bad_data_files_are_refused(text, name, message):
    with pytest.raises(DocumentError) as caught:
        parse_data(text, name)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("value", "type_name", "expected"),
    [
        ("42", "integer", 42),
        ("4.5", "number", 4.5),
        ("7", "number", 7),
        ("yes", "boolean", True),
        ("0", "boolean", False),
        ('["a", "b"]', "list", ["a", "b"]),
        ('{"k": 1}', "dict", {"k": 1}),
        ("  padded ", "string", "  padded "),
        ("forty", "integer", "forty"),
        ("maybe", "boolean", "maybe"),
        (3, "integer", 3),
    ],
)
def test_cells_are_converted_to_the_declared_type(value, type_name, expected):
    assert convert_cell(value, type_name) == expected


def test_a_row_becomes_inputs_with_mapping_fixed_values_and_defaults():
    row = row_inputs(
        SOP,
        3,
        {"Full name": "Ada", "age": "36", "vip": "true", "tags": '["x"]', "extra": "?"},
        {"Full name": "name"},
        {"site": "https://example.test"},
    )
    assert (row.number, row.error) == (3, None)
    assert row.inputs == {
        "name": "Ada",
        "age": 36,
        "score": 0,
        "vip": True,
        "tags": ["x"],
        "site": "https://example.test",
    }


def test_a_row_that_does_not_fit_is_invalid_with_the_reason():
    row = row_inputs(SOP, 5, {"name": "", "age": "old"}, {}, {})
    assert row.inputs is None
    assert row.error == "input 'name': is required (string); input 'age': must be integer, got \"old\""


# hostile data files: a clear problem, at once -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "rows.json", "rows.json: the file nests deeper than 64 levels"),
        ('{"a": ' * 100_000, "rows.jsonl", "rows.jsonl line 1: the line nests deeper than 64 levels"),
        ('[{"a": NaN}]', "rows.json", "rows.json: not valid JSON: NaN is not a JSON value"),
        ('[{"a": "\\ud800"}]', "rows.json", "rows.json: the file[0]['a'] holds text that cannot be encoded"),
        ("name\nAda\ud800\n", "rows.csv", "rows.csv: the file holds text that cannot be encoded as UTF-8"),
        ("name\n" + "x" * 200_000 + "\n", "rows.csv", "rows.csv line 2: not valid CSV: field larger than field limit"),
    ],
)
def test_hostile_data_files_are_refused(text, name, message):
    with pytest.raises(DocumentError) as caught:
        parse_data(text, name)
    assert str(caught.value).startswith(message)


def test_a_deep_json_cell_stays_text_and_is_refused_by_the_type():
    deep = "[" * 100_000 + "]" * 100_000
    assert convert_cell(deep, "list") == deep
    row = row_inputs(SOP, 1, {"name": "Ada", "tags": deep}, {}, {})
    assert row.error.startswith("input 'tags': must be list, got \"[[[[")
    assert len(row.error) < 300


def test_a_row_value_over_the_limits_is_invalid(monkeypatch):
    monkeypatch.setenv("SOP_YAML_MAX_NODES", "3")
    row = row_inputs(SOP, 1, {"name": "Ada", "tags": "[1, 2, 3]"}, {}, {})
    assert row.error == "input 'tags': the value holds more than 3 values"
