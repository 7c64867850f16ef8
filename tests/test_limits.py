"""Bounded YAML and JSON, bounded values, and text that cannot be encoded (limits.py and text.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sop_engine.limits import LimitError, ParseError, check_value, json_depth, load_json, load_yaml
from sop_engine.text import has_unencodable

# nine values, each list nine times the one before: 9**9 values once the aliases are expanded, in 500 bytes
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join(['*' + before] * 9)}]\n" for before, name in zip("abcdefgh", "bcdefghi", strict=True)
)
TOO_MANY = "the document expands to more than 10000 values (aliases count every time they are used)"
TOO_DEEP = "the document nests deeper than 64 levels"


def test_an_alias_bomb_is_refused_before_it_is_built():
    assert len(ALIAS_BOMB) < 600
    with pytest.raises(LimitError) as caught:
        load_yaml(ALIAS_BOMB)
    assert str(caught.value) == TOO_MANY


def test_aliases_within_the_limit_are_expanded():
    assert load_yaml("a: &a [1, 2]\nb: [*a, *a]") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


@pytest.mark.parametrize(
    "text", ["[" * 10_000 + "]" * 10_000, "a:\n" + "".join(" " * i + "- \n" for i in range(1, 200))]
)
def test_deep_yaml_is_refused_while_it_is_read(text):
    with pytest.raises(LimitError) as caught:
        load_yaml(text)
    assert str(caught.value) == TOO_DEEP


def test_yaml_at_the_depth_limit_loads():
    assert load_yaml("[" * 64 + "]" * 64) is not None


def test_aliases_that_nest_past_the_limit_are_refused():
    # each list nests 40 deep in the text, and twice that once one is placed inside the other
    deep = "[" * 40 + "]" * 40
    with pytest.raises(LimitError, match="nests deeper than 64 levels"):
        load_yaml(f"a: &a {deep}\nb: {'[' * 39}*a{']' * 39}")


def test_a_document_that_contains_itself_is_refused():
    with pytest.raises(LimitError, match="refers to itself"):
        load_yaml("&a [*a]")


def test_the_limits_follow_the_settings(monkeypatch):
    monkeypatch.setenv("SOP_YAML_MAX_NODES", "3")
    monkeypatch.setenv("SOP_YAML_MAX_DEPTH", "2")
    with pytest.raises(LimitError, match="more than 3 values"):
        load_yaml("[1, 2, 3]")
    with pytest.raises(LimitError, match="deeper than 2 levels"):
        load_yaml("[[[]]]")


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: [", "line 2, column 1", "not valid YAML or JSON: did not find expected node content"),
        ("n: 1" + "0" * 5000, "document", "not valid YAML or JSON: Exceeds the limit (4300 digits)"),
        ("d: 2020-13-45", "document", "not valid YAML or JSON: month must be in 1..12"),
        ('s: "\\ud800"', "line 1, column 7", "not valid YAML or JSON: found invalid Unicode character escape code"),
        ("s: \ud800", "document", "the document holds text that cannot be encoded as UTF-8 (lone surrogate"),
    ],
)
def test_yaml_that_does_not_read_is_a_parse_error(text, where, message):
    with pytest.raises(ParseError) as caught:
        load_yaml(text)
    assert caught.value.where == where
    assert str(caught.value).startswith(message)


def test_deep_json_is_refused_before_it_is_parsed():
    with pytest.raises(LimitError) as caught:
        load_json("[" * 100_000 + "]" * 100_000)
    assert str(caught.value) == TOO_DEEP


@pytest.mark.parametrize(
    ("text", "depth"),
    [("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[[", "\\"]]"]', 1), ("1", 0), ("", 0)],
)
def test_json_depth_leaves_strings_out(text, depth):
    assert json_depth(text) == depth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NaN", "not valid JSON: NaN is not a JSON value"),
        ("[Infinity]", "not valid JSON: Infinity is not a JSON value"),
        (
            '"\\udc80"',
            "the document holds text that cannot be encoded as UTF-8 (lone surrogate '\\udc80' at character 0)",
        ),
        ("1" * 5000, "not valid JSON: Exceeds the limit (4300 digits)"),
        ("[1,", "not valid JSON: Expecting value: line 1 column 4 (char 3)"),
    ],
)
def test_json_that_is_no_json_value_is_refused(text, message):
    with pytest.raises(ParseError) as caught:
        load_json(text)
    assert str(caught.value).startswith(message)


def test_json_loads():
    assert load_json('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_nested(100_000), "the input nests deeper than 64 levels"),
        (list(range(10_001)), "the input holds more than 10000 values"),
        ("x" * (1024 * 1024 + 1), "the input holds more than 1048576 characters of text"),
        ({"k" * (1024 * 1024 + 1): 1}, "the input holds more than 1048576 characters of text"),
    ],
)
def test_check_value_refuses_values_over_a_limit(value, message):
    with pytest.raises(LimitError) as caught:
        check_value(value, "the input")
    assert str(caught.value) == message


def test_check_value_accepts_values_within_the_limits():
    check_value({"a": [1, "x" * 1000, {"b": None}], "c": _nested(63)})


def test_a_value_that_contains_itself_is_too_deep():
    loop: list = []
    loop.append(loop)
    with pytest.raises(LimitError, match="nests deeper"):
        check_value(loop)


# hypothesis: nothing but a parse or limit error, whatever the text ----------------------------------


@given(st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#\n ab1\\")), max_size=200))
def test_load_yaml_raises_only_its_own_errors(text):
    with contextlib.suppress(ParseError, LimitError):
        load_yaml(text)


@given(st.text(max_size=100))
def test_load_yaml_on_any_text_raises_only_its_own_errors(text):
    with contextlib.suppress(ParseError, LimitError):
        load_yaml(text)


@given(st.text(alphabet=st.sampled_from(list('[]{}:,"\\ 1aeNIn.-')), max_size=200))
def test_load_json_raises_only_its_own_errors(text):
    with contextlib.suppress(ParseError, LimitError):
        load_json(text)


@settings(deadline=None)  # PyYAML's scanner looks 1024 characters ahead at each '[': about 0.3 s, once
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", '{"a":', "- ", "a:\n "]))
def test_deeply_nested_text_is_refused_or_read(depth, opener):
    text = opener * depth
    for load in (load_yaml, load_json):
        with contextlib.suppress(ParseError, LimitError):
            load(text)


# text that cannot be encoded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("ok", None),
        ({"a": ["é", "ok"]}, None),
        ("ab\ud800", "value holds text that cannot be encoded as UTF-8 (lone surrogate '\\ud800' at character 2)"),
        ({"a": [1, "x\udfff"]}, "value['a'][1] holds text that cannot be encoded as UTF-8"),
        ({"k\ud800": 1}, "a key of value holds text that cannot be encoded as UTF-8"),
        (("t", "\udc00"), "value[1] holds text"),
    ],
)
def test_has_unencodable_says_where(value, said):
    found = has_unencodable(value)
    assert found == said if said is None else found.startswith(said)


def test_clean_replaces_lone_surrogates_keys_included():
    from sop_engine.text import clean

    value = {"k\ud800": ["a\udfffb", 1, None, ("\ud800",)], "ok": "é"}
    cleaned = clean(value)
    assert cleaned == {"k\ufffd": ["a\ufffdb", 1, None, ["\ufffd"]], "ok": "é"}
    assert has_unencodable(cleaned) is None


def test_clean_gives_back_a_clean_value_itself():
    from sop_engine.text import clean

    value = {"a": ["b"]}
    assert clean(value) is value


def test_clean_handles_deep_values_without_recursion():
    from sop_engine.text import clean

    deep = _nested(50_000)
    deep = [deep, "\ud800"]
    assert clean(deep)[1] == "\ufffd"
