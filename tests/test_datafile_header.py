"""A data file's columns against the SOP's inputs, ragged and broken CSV with the lines an editor shows, and
the bytes of a file read as text."""

from __future__ import annotations

import re

import pytest

from sop_engine.datafile import check_columns, column_mapping, data_of_objects, fit_rows, parse_data
from sop_engine.decoding import Undecodable, decode
from sop_engine.document import DocumentError, load_sop

SOP = load_sop("""
sop: 1
id: signup
inputs:
  name: {type: string}
  email: {type: string}
  plan: {type: string, default: free}
steps:
  - {id: a, action: log, message: hi}
""").sop


def problems(data_text: str, name: str = "d.csv", mapping=None, fixed=None, strict=False) -> list[str]:
    with pytest.raises(DocumentError) as caught:
        check_columns(SOP, parse_data(data_text, name), mapping or {}, fixed or {}, strict)
    return [str(p) for p in caught.value.problems]


def test_a_required_input_no_column_supplies_names_it_and_the_unmatched_columns():
    assert problems("fullname,email,plan\nAda,a@x,pro\n") == [
        "d.csv: input 'name' is required but no column supplies it; columns that match no input: fullname"
    ]
    assert problems("plan\npro\n") == [
        "d.csv: inputs 'name', 'email' are required but no column supplies them (its columns: plan)"
    ]


def test_mapped_columns_and_fixed_inputs_supply_inputs():
    data = parse_data("fullname,plan,note\nAda,pro,hi\n", "d.csv")
    warnings = check_columns(SOP, data, {"fullname": "name"}, {"email": "a@x"})
    assert warnings == ["columns that match no input: note"]
    [row] = fit_rows(SOP, data, {"fullname": "name"}, {"email": "a@x"})
    assert row.inputs == {"name": "Ada", "email": "a@x", "plan": "pro"}


def test_unknown_columns_are_a_warning_and_with_strict_a_problem():
    text = "name,email,colour\nAda,a@x,red\n"
    assert check_columns(SOP, parse_data(text, "d.csv"), {}, {}) == ["columns that match no input: colour"]
    assert problems(text, strict=True) == ["d.csv: columns that match no input: colour"]
    unused = check_columns(SOP, parse_data("name,email\nA,B\n", "d.csv"), {"mail": "email"}, {})
    assert unused == ["the mapping names columns the file does not have: mail"]


def test_a_mapping_or_fixed_input_that_names_no_input_is_a_problem():
    said = problems("name,email\nA,B\n", mapping={"nick": "fullname"}, fixed={"colour": "red"})
    assert said == [
        "mapping: 'fullname': not an input of this SOP (its inputs: name, email, plan)",
        "inputs: 'colour': not an input of this SOP (its inputs: name, email, plan)",
    ]


def test_json_columns_are_every_key_of_every_row():
    data = data_of_objects([{"name": "A"}, {"email": "b", "x": 1}], "rows")
    assert data.columns == ["name", "email", "x"]
    assert check_columns(SOP, data, {}, {}) == ["columns that match no input: x"]


def test_ragged_rows_are_invalid_with_their_line_counted_as_an_editor_shows_it():
    text = 'name,email\n\nAda,"a@x\nsecond line"\nBob,b@x,extra\nCy\nDee,d@x\n'
    data = parse_data(text, "d.csv")
    rows = fit_rows(SOP, data, {}, {})
    assert [r.number for r in rows] == [1, 2, 3, 4]
    assert rows[0].inputs == {"name": "Ada", "email": "a@x\nsecond line", "plan": "free"}
    assert rows[1].error == "line 5: 3 cells, but the header has 2 columns"
    assert rows[2].error == "line 6: 1 cells, but the header has 2 columns"
    assert rows[3].inputs is not None


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('name,email\nAda,"a@x\nBob,b@x\n', 2),
        ('name,email\nAda,"a\n""quoted"" still"\nBob,"b@x\n', 4),
        ('name,email\nAda,a@x\nBob,"' + "x" * 200_000 + "\n", 3),  # over csv's field limit before the end
    ],
)
def test_an_unclosed_quote_is_a_file_problem_naming_the_line_it_opens_on(text, line):
    with pytest.raises(DocumentError) as caught:
        parse_data(text, "d.csv")
    assert str(caught.value) == f"d.csv line {line}: a quote opens here and is never closed"


def test_text_after_a_closing_quote_names_its_line():
    with pytest.raises(DocumentError) as caught:
        parse_data('name,email\nAda,a@x\nBob,"b"x\n', "d.csv")
    assert str(caught.value) == "d.csv line 3: not valid CSV: ',' expected after '\"'"


def test_a_header_that_names_a_column_twice_is_refused():
    with pytest.raises(DocumentError) as caught:
        parse_data("name,email,name\nA,B,C\n", "d.csv")
    assert str(caught.value) == "d.csv line 1: the header names 'name' more than once"


def test_a_byte_order_mark_is_no_part_of_the_first_column():
    text = decode("\ufeffname,email\nAda,a@x\n".encode("utf-8"))
    assert parse_data(text, "d.csv").columns == ["name", "email"]
    assert parse_data("\ufeffname,email\nAda,a@x\n", "d.csv").columns == ["name", "email"]  # an upload's text


def test_bytes_in_another_encoding_are_named_by_offset_or_read_with_it():
    raw = "name\nJosé\n".encode("cp1252")
    with pytest.raises(Undecodable) as caught:
        decode(raw)
    assert str(caught.value).startswith("is not utf-8 text: the byte 0xe9 at offset 8 does not decode")
    assert decode(raw, "cp1252") == "name\nJosé\n"
    assert decode("name\n".encode("utf-16"), "utf-16") == "name\n"
    for name in ("no-such-codec", "rot13", "utf\x008"):  # a NUL in a name: codecs raises ValueError, not LookupError
        with pytest.raises(Undecodable, match=f"unknown encoding {re.escape(repr(name))}"):
            decode(b"", name)


def test_a_mapping_pair_without_an_equals_sign_is_a_problem_naming_it():
    with pytest.raises(DocumentError) as caught:
        column_mapping(["fullname", "full name=name", "=email", "plan="], "mapping")
    assert [str(p) for p in caught.value.problems] == [
        "mapping 'fullname': write COLUMN=INPUT",
        "mapping '=email': write COLUMN=INPUT",
        "mapping 'plan=': write COLUMN=INPUT",
    ]
    assert column_mapping(["full name=name", "mail=email"]) == {"full name": "name", "mail": "email"}


def test_two_columns_that_would_supply_one_input_refuse_the_file():
    assert problems("fullname,name,email\nA,B,c\n", mapping={"fullname": "name"}) == [
        "d.csv: input 'name' would come from two columns: fullname (mapped), name"
    ]
    assert problems("a,b,email\nA,B,c\n", mapping={"a": "name", "b": "name"}) == [
        "d.csv: input 'name' would come from two columns: a (mapped), b (mapped)"
    ]
    # a column mapped to its own name, or a mapped column the file does not have, supplies nothing twice
    data = parse_data("name,email\nA,c\n", "d.csv")
    assert check_columns(SOP, data, {"name": "name", "b": "name"}, {}) == [
        "the mapping names columns the file does not have: b"
    ]


def test_a_json_lines_error_names_the_line_as_an_editor_counts_it():
    with pytest.raises(DocumentError) as caught:
        parse_data('{"name": "A"}\n\nnot json\n', "j.jsonl")
    [problem] = caught.value.problems
    assert problem.where == "j.jsonl line 3"
    assert problem.message == "not valid JSON: Expecting value at column 1"
    with pytest.raises(DocumentError) as caught:
        parse_data('{"name": "A"}\n[1]\n', "j.jsonl")
    assert str(caught.value) == "j.jsonl line 2: is not an object"


def test_a_line_separator_inside_a_json_lines_string_is_no_line_break():
    data = parse_data('{"name": "A\u2028B", "email": "x\x85y"}\n{"name": "C"}\n', "j.jsonl")
    assert data.rows == [{"name": "A\u2028B", "email": "x\x85y"}, {"name": "C"}]
