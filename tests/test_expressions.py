import pytest

from sop_engine.expressions import (
    ExpressionError,
    evaluate_condition,
    is_template,
    names_in,
    names_in_condition,
    render,
)
from sop_engine.steps import Probe

UNDEFINED_HINT = "(declare it in the step's inputs, and make sure it has a value)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{{ x }}", True), ("{% if x %}y{% endif %}", True), ("plain", False), ("{ x }", False), ("", False)],
)
def test_is_template(text, expected):
    assert is_template(text) is expected


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("{{ items }}", {"items": ["milk", "eggs"]}, ["milk", "eggs"]),
        (" {{ n + 1 }} ", {"n": 1}, 2),
        ("{{ flag }}", {"flag": False}, False),
        ("{{ x }}", {"x": None}, None),
        ("{{ s | fromjson }}", {"s": '{"a": [1]}'}, {"a": [1]}),
        ("{{ items | length }}", {"items": [1, 2, 3]}, 3),
    ],
)
def test_a_lone_expression_keeps_its_native_type(template, variables, expected):
    assert render(template, variables) == expected
    assert type(render(template, variables)) is type(expected)


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("n={{ n }}", {"n": 1}, "n=1"),
        ("{{ a }}{{ b }}", {"a": 1, "b": 2}, "12"),
        ("{% if n %}yes{% endif %}", {"n": 1}, "yes"),
        ("{% for i in items %}{{ i }},{% endfor %}", {"items": ["a", "b"]}, "a,b,"),
    ],
)
def test_text_around_an_expression_renders_a_string(template, variables, expected):
    assert render(template, variables) == expected


def test_render_walks_lists_and_dicts_and_leaves_other_values():
    value = {"a": ["{{ n }}", 3, None], "b": "plain {n}", "c": True}
    assert render(value, {"n": 5}) == {"a": [5, 3, None], "b": "plain {n}", "c": True}


@pytest.mark.parametrize("template", ["{{ x }}", "hi {{ x }}"])
def test_an_undefined_name_is_an_error_with_a_hint(template):
    with pytest.raises(ExpressionError) as caught:
        render(template, {})
    assert str(caught.value) == f"template {template!r} failed: 'x' is undefined {UNDEFINED_HINT}"


def test_a_missing_attribute_is_an_error_without_the_inputs_hint():
    with pytest.raises(ExpressionError) as caught:
        render("{{ x.y }}", {"x": {}})
    assert str(caught.value) == "template '{{ x.y }}' failed: 'dict object' has no attribute 'y'"


def test_a_template_that_does_not_parse():
    with pytest.raises(ExpressionError, match=r"^template '\{\{ a b \}\}' does not parse: "):
        render("{{ a b }}", {"a": 1, "b": 2})


def test_a_failing_expression_names_the_template():
    with pytest.raises(ExpressionError) as caught:
        render("{{ 1 / n }}", {"n": 0})
    assert str(caught.value) == "template '{{ 1 / n }}' failed: division by zero"


@pytest.mark.parametrize(
    ("template", "variables", "refused"),
    [
        ("{{ ''.__class__ }}", {}, "access to attribute '__class__' of 'str' object is unsafe."),
        ("{{ items.append(3) }}", {"items": [1]}, "access to attribute 'append' of 'list' object is unsafe."),
        ("{{ d.clear() }}", {"d": {"k": 1}}, "access to attribute 'clear' of 'dict' object is unsafe."),
    ],
)
def test_the_sandbox_refuses_unsafe_and_mutating_calls(template, variables, refused):
    with pytest.raises(ExpressionError) as caught:
        render(template, variables)
    assert str(caught.value) == f"template {template!r} failed: {refused}"


def test_a_refused_mutation_leaves_the_value_unchanged():
    items = [1]
    with pytest.raises(ExpressionError):
        render("{{ items.append(3) }}", {"items": items})
    assert items == [1]


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("{{ a + b }}", {"a", "b"}),
        ("{% for x in xs %}{{ x }}{% endfor %}", {"xs"}),  # the loop variable is bound, not read
        ("{{ range(n) | list }}", {"n"}),  # globals such as range are not variables
        ("{{ user.name }}", {"user"}),
        ("plain {a}", set()),
        ({"k": ["{{ a }}", {"z": "{{ b.c }}"}], "j": 3}, {"a", "b"}),
        (("{{ t }}",), {"t"}),
        ([], set()),
        ({}, set()),
        (5, set()),
        (None, set()),
    ],
)
def test_names_in(value, names):
    assert names_in(value) == names


def test_names_in_a_template_that_does_not_parse():
    with pytest.raises(ExpressionError) as caught:
        names_in("{{ a b }}")
    assert str(caught.value) == (
        "template '{{ a b }}' does not parse: expected token 'end of print statement', got 'b'"
    )


@pytest.mark.parametrize(
    ("condition", "names"),
    [
        ("n > 2 and m", {"n", "m"}),
        ("{{ n > limit }}", {"n", "limit"}),
        (True, set()),
        (Probe(exists="#done"), set()),
    ],
)
def test_names_in_condition(condition, names):
    assert names_in_condition(condition) == names


@pytest.mark.parametrize(
    ("condition", "variables", "expected"),
    [
        ("{{ n > 2 }}", {"n": 3}, True),
        ("n > 2", {"n": 1}, False),
        (True, {}, True),
        (False, {}, False),
        ("items", {"items": []}, False),
        ("items", {"items": [0]}, True),
        ("{{ n }} items", {"n": 0}, True),  # text that is not a falsy word is true
    ],
)
def test_evaluate_condition(condition, variables, expected):
    assert evaluate_condition(condition, variables) is expected


@pytest.mark.parametrize("text", ["", " ", "false", "False", " no ", "0", "none", "null", "NULL"])
def test_falsy_words_are_false(text):
    assert evaluate_condition("s", {"s": text}) is False
    assert evaluate_condition("{{ s }}", {"s": text}) is False


@pytest.mark.parametrize("text", ["true", "yes", "1", "anything"])
def test_other_words_are_true(text):
    assert evaluate_condition("s", {"s": text}) is True


def test_a_condition_on_an_undefined_name_is_an_error():
    with pytest.raises(ExpressionError, match="'missing' is undefined"):
        evaluate_condition("missing > 1", {})
