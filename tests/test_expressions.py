import hypothesis
import hypothesis.strategies
import pytest

from sop_engine.expressions import (
    ExpressionError,
    evaluate_condition,
    is_template,
    names_in,
    names_in_condition,
    render,
    rendering,
    to_json_value,
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


# limits: hostile templates get an error naming the limit, before they allocate ----------------------

MAX = 1024 * 1024


@pytest.mark.parametrize(
    ("template", "refused"),
    [
        ("{{ (10**(10**8)) > 5 }}", "'**' with a result that large is refused (over 10000 bits)"),
        ("{{ 2**20000 }}", "'**' with a result that large is refused (over 10000 bits)"),
        ("{{ (2**5000) * (2**5001) }}", "'*' with a result that large is refused (over 10000 bits)"),
        ("{{ 'a'*10**9 }}", f"'*' that repeats text or a list past {MAX} characters is refused"),
        ("x{{ [1]*10**9 }}", f"'*' that repeats text or a list past {MAX} characters is refused"),
        ("{{ 'a'*600000 + 'b'*600000 }}", f"'+' that joins past {MAX} characters is refused"),
        ("{% set a = 'a'*600000 %}{{ a ~ a }}", f"'~' of more than {MAX} characters is refused"),
        ("{{ '%999999999d' % 1 }}", f"a format wider than {MAX} characters is refused"),
        ("{{ '%*d' % (999999999, 1) }}", f"a format wider than {MAX} characters is refused"),
        ("{{ '{:>999999999}'.format(1) }}", f"a format wider than {MAX} characters is refused"),
        ("{{ '{0:{1}}'.format(1, 999999999) }}", f"a format wider than {MAX} characters is refused"),
        ("{{ '%999999999d'|format(1) }}", f"a format wider than {MAX} characters is refused"),
        ("{{ 'a'.center(10**9) }}", f"str.center() wider than {MAX} characters is refused"),
        ("{{ 'a'.zfill(10**9) }}", f"str.zfill() wider than {MAX} characters is refused"),
        ("{{ ('\t'*100).expandtabs(100000) }}", f"str.expandtabs() of more than {MAX} characters is refused"),
        ("{{ 'ab'.replace('', 'x'*600000) }}", f"str.replace() of more than {MAX} characters is refused"),
        ("{{ ('x'*600000).join('abc') }}", f"join() of more than {MAX} characters is refused"),
        ("{{ 'a'|center(10**9) }}", f"center wider than {MAX} characters is refused"),
        ("{{ 'a'|indent(10**9) }}", f"indent of more than {MAX} characters is refused"),
        ("{{ ('a '*1000)|wordwrap(1, wrapstring='x'*1000) }}", f"wordwrap of more than {MAX} characters is refused"),
        ("{{ 'aa'|replace('a', 'x'*600000) }}", f"replace of more than {MAX} characters is refused"),
        ("{{ ['x'*1000]*2000|join }}", "'int' object is not iterable"),  # a filter binds before '*'
        ("{{ (['x'*100000]*20) }}", f"the result of '*' of more than {MAX} characters is refused"),
        ("{{ [1]|batch(10**9, 0)|list }}", f"batch of more than {MAX} items is refused"),
        ("{{ [1]|slice(10**9)|list }}", f"slice of more than {MAX} items is refused"),
        ("{{ ['x'*100000]*20 }}", f"the result of '*' of more than {MAX} characters is refused"),
        ("{{ range(10**6) }}", "range() of more than 100000 items is refused"),
        ("{{ 'a'.encode() * 10**9 }}", f"'*' that repeats text or a list past {MAX} characters is refused"),
        ("{{ 'a'.encode().rjust(10**9) }}", f"str.rjust() wider than {MAX} characters is refused"),
        ("{{ (1).to_bytes(10**9, 'big') }}", f"int.to_bytes() of more than {MAX} bytes is refused"),
        ("{{ [1, 2]|tojson(indent=10**9) }}", f"tojson of more than {MAX} characters is refused"),
        ("{{ lipsum(10**6) }}", f"lipsum() of more than {MAX} characters is refused"),
        ("{% for i in range(100000) %}{{ 'abcdefghijk' }}{% endfor %}", f"template output is over {MAX} characters"),
        ("{{ ('[' * 100) | fromjson }}", "the JSON text nests deeper than 64 levels"),
    ],
)
def test_a_template_over_a_limit_is_refused_with_the_limit_named(template, refused):
    with pytest.raises(ExpressionError) as caught:
        render(template, {})
    assert str(caught.value) == f"template {template!r} failed: {refused}"


def test_range_and_output_follow_the_settings(monkeypatch):
    monkeypatch.setenv("SOP_TEMPLATE_MAX_RANGE", "10")
    assert render("{{ range(10) | list | length }}", {}) == 10
    with pytest.raises(ExpressionError, match=r"range\(\) of more than 10 items is refused"):
        render("{{ range(11) }}", {})
    monkeypatch.setenv("SOP_TEMPLATE_MAX_OUTPUT", "5")
    assert render("{{ 'ab' }}cde", {}) == "abcde"
    with pytest.raises(ExpressionError, match="template output is over 5 characters"):
        render("{{ 'ab' }}cdef", {})


def test_a_join_over_the_limit_is_refused_before_it_is_built():
    template = "{{ items|join }}"
    with pytest.raises(ExpressionError) as caught:
        render(template, {"items": ["x" * 1000] * 2000})
    assert str(caught.value) == f"template {template!r} failed: join() of more than {MAX} characters is refused"


@pytest.mark.parametrize(
    ("template", "refused"),
    [
        ("x{{ big }}", f"a value written into the template's output of more than {MAX} characters is refused"),
        ("{{ big }}", f"the template gave a value of more than {MAX} characters"),
        ("{{ big|string }}", f"a value given to 'string' of more than {MAX} characters is refused"),
        ("{{ big ~ 'x' }}", f"'~' of more than {MAX} characters is refused"),
        ("{{ '%s' % [big] }}", f"a value formatted into text of more than {MAX} characters is refused"),
        ("{{ '{}'.format(big) }}", f"a value given to a call of more than {MAX} characters is refused"),
    ],
)
def test_a_list_is_measured_before_it_becomes_text(template, refused):
    # two thousand references to one string: little memory, two million characters as text
    with pytest.raises(ExpressionError) as caught:
        render(template, {"big": ["x" * 1000] * 2000})
    assert str(caught.value) == f"template {template!r} failed: {refused}"


def test_templates_within_the_limits_render():
    assert render("{{ 2**100 }}", {}) == 2**100
    assert render("{{ 'ab'*3 }}", {}) == "ababab"
    assert render("{{ [0]*3 + [1] }}", {}) == [0, 0, 0, 1]
    assert render("{{ '%05.1f'|format(2.25) }} {{ '{:>4}'.format(7) }}", {}) == "002.2    7"
    assert render("{{ items|join(', ') }}", {"items": ["a", "b"]}) == "a, b"
    assert render("{{ 'a b c'|wordwrap(1) }}", {}) == "a\nb\nc"
    assert render("{{ x }}", {"x": "y" * MAX}) == "y" * MAX


@pytest.mark.parametrize(
    ("template", "tag"),
    [
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "macro"),
        ("{% call range(1) %}{% endcall %}", "call"),
        ("{% block b %}{{ self.b() }}{% endblock %}", "block"),
        ("{% include 'x' %}", "include"),
        ("{% import 'x' as y %}", "import"),
        ("{% from 'x' import y %}", "from ... import"),
        ("{% extends 'x' %}", "extends"),
    ],
)
def test_macros_calls_blocks_and_other_templates_are_refused(template, tag):
    said = f"template {template!r} uses {{% {tag} %}}, which SOP templates do not allow"
    with pytest.raises(ExpressionError) as caught:
        render(template, {})
    assert str(caught.value) == said
    with pytest.raises(ExpressionError) as caught:
        names_in(template)
    assert str(caught.value) == said


def test_a_template_that_nests_too_deeply_does_not_parse():
    template = "{{ " + "[" * 5000 + "]" * 5000 + " }}"
    with pytest.raises(ExpressionError, match="does not parse: it nests too deeply$"):
        render(template, {})
    with pytest.raises(ExpressionError, match="does not parse: it nests too deeply$"):
        names_in(template)


def test_finding_names_never_evaluates():
    # were constants folded while a document is checked, this would run for minutes
    assert names_in("{{ (10**(10**8)) > n }} {{ 'a'|center(10**9) }}") == {"n"}


def test_a_long_message_shows_the_start_of_the_template():
    template = "{{ x }}" + "y" * 1000
    with pytest.raises(ExpressionError) as caught:
        render(template, {})
    assert len(str(caught.value)) < 400


# time: a template with a loop is stopped ----------------------------------------------------------

NESTED_LOOP = "{% for i in range(30000) %}{% for j in range(30000) %}{% endfor %}{% endfor %}"


def test_a_loop_that_runs_too_long_is_stopped(monkeypatch):
    monkeypatch.setattr(rendering, "TEMPLATE_MAX_SECONDS", 0.05)
    with pytest.raises(ExpressionError) as caught:
        render(NESTED_LOOP, {})
    assert str(caught.value) == f"template {NESTED_LOOP!r} failed: template took longer than 0.05 s"


def test_loops_in_several_threads_are_stopped_each_in_its_own(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(rendering, "TEMPLATE_MAX_SECONDS", 0.05)

    def attempt(template: str) -> str:
        try:
            return str(render(template, {}))
        except ExpressionError as exc:
            return str(exc).rsplit(": ", 1)[1]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, [NESTED_LOOP, NESTED_LOOP, "{% for i in [1, 2] %}{{ i }}{% endfor %}"]))
    assert results == ["template took longer than 0.05 s", "template took longer than 0.05 s", "12"]


def test_no_stop_is_left_pending_after_a_render_ends_near_its_deadline(monkeypatch):
    # renders that end just before, at and just after the deadline; none may leave the watchdog's exception
    # behind, where it would be raised in whatever the thread runs next
    monkeypatch.setattr(rendering, "TEMPLATE_MAX_SECONDS", 0.001)
    template = "{% for i in range(300) %}{{ i }}{% endfor %}"
    for _ in range(300):
        try:
            assert render(template, {}).startswith("0123")
        except ExpressionError as exc:
            assert str(exc).endswith("template took longer than 0.001 s")
    total = 0
    for i in range(3_000_000):  # a pending exception would be raised in here
        total += i
    assert total == 3_000_000 * 2_999_999 // 2


def test_renders_in_many_threads_near_their_deadlines_leave_nothing_behind(monkeypatch):
    # an exception raised inside Python-level lock code would leave the lock held: the next render would hang
    import threading

    monkeypatch.setattr(rendering, "TEMPLATE_MAX_SECONDS", 0.0003)
    failures: list[str] = []

    def work(k: int) -> None:
        try:
            for n in range(150):
                try:
                    render("{% for i in range(" + str(50 + (7 * n + k) % 400) + ") %}{{ i }}{% endfor %}", {})
                except ExpressionError as exc:
                    assert str(exc).endswith("template took longer than 0.0003 s"), exc
            total = sum(i for i in range(1_000_000))
            assert total == 499_999_500_000
        except BaseException as exc:  # noqa: BLE001 - whatever escapes is the failure
            failures.append(repr(exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a render hung"
    assert failures == []


def test_a_template_of_many_operations_without_a_loop_is_stopped_too(monkeypatch):
    monkeypatch.setattr(rendering, "TEMPLATE_MAX_SECONDS", 0.05)
    template = "{% set b = range(100000)|list %}" + "{{ -1 in b }}" * 500
    with pytest.raises(ExpressionError, match="template took longer than 0.05 s$"):
        render(template, {})
    lone = "{{ [" + ", ".join(["-1 in b"] * 500) + "] }}"
    with pytest.raises(ExpressionError, match="template took longer than 0.05 s$"):
        render(lone, {"b": list(range(100000))})


def test_a_template_that_only_reads_names_is_not_watched(monkeypatch):
    monkeypatch.setattr(rendering, "TEMPLATE_MAX_SECONDS", 0.0)
    assert render("n={{ n }}, {{ user.name }} {{ items[0] }}", {"n": 1, "user": {"name": "a"}, "items": [2]}) == (
        "n=1, a 2"
    )
    with pytest.raises(ExpressionError, match="took longer than 0 s"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {})


# results are JSON data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{{ lipsum }}", "the template gave a function, which is not a JSON value"),
        ("{{ range }}", "the template gave a function, which is not a JSON value"),
        ("{{ [1, 2] | select }}", "the template gave a generator, which is not a JSON value (add '| list')"),
        ("{{ 'a'.upper }}", "the template gave a builtin_function_or_method, which is not a JSON value"),
        ("{{ 1e308 * 10 }}", "the template gave inf, which is not a JSON value"),
        ("{{ {1: 2} }}", "the template gave a dict with a int key; JSON keys are text"),
        ("{{ [cycler(1)] }}", "the template gave a Cycler, which is not a JSON value"),
    ],
)
def test_a_lone_expression_that_is_no_json_value_is_an_error(template, said):
    with pytest.raises(ExpressionError) as caught:
        render(template, {})
    assert str(caught.value) == f"template {template!r} failed: {said}"


def test_json_values_come_back_as_plain_json_types():
    value = render("{{ ('a'|safe, [(1, 2)], {'k': 'v'|safe}, 2**70) }}", {})
    assert value == ["a", [[1, 2]], {"k": "v"}, 2**70]
    assert type(value[0]) is str
    assert type(value[2]["k"]) is str


def test_to_json_value_refuses_a_value_over_its_size():
    assert to_json_value(("a", {"b": None})) == ["a", {"b": None}]
    with pytest.raises(ExpressionError, match="the template gave a value of more than 10 characters"):
        to_json_value(["abcdef", "ghijkl"], max_chars=10)


# hypothesis: whatever the template, an ExpressionError or a value ------------------------------------

TOKENS = [
    "{{ ",
    " }}",
    "{% for i in range(",
    ") %}",
    "{% endfor %}",
    "{% if ",
    " %}",
    "{% endif %}",
    "{% set a = ",
    "a",
    "1",
    "99999",
    "10",
    "'ab'",
    "*",
    "**",
    "+",
    "~",
    "%",
    "(",
    ")",
    "[",
    "]",
    ",",
    "|center(",
    "|join",
    "|list",
    "|indent(",
    "|format(",
    "|replace('a', ",
    "|batch(",
    ".ljust(",
    "'%*d'",
    "x",
    "range(",
    "lipsum(",
    "i",
    "-",
]


@hypothesis.settings(deadline=None, max_examples=300)
@hypothesis.given(hypothesis.strategies.lists(hypothesis.strategies.sampled_from(TOKENS), max_size=14))
def test_any_template_renders_or_fails_with_an_expression_error(tokens):
    template = "".join(tokens)
    original = rendering.TEMPLATE_MAX_SECONDS
    rendering.TEMPLATE_MAX_SECONDS = 0.05
    try:
        render(template, {"x": 3})
        names_in(template)
    except ExpressionError:
        pass
    finally:
        rendering.TEMPLATE_MAX_SECONDS = original
