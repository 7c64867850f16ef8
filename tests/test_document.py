import contextlib
import hashlib
import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sop_engine.document import DocumentError, load_sop, load_sop_file, parse_cli_value, parse_text, resolve_inputs
from sop_engine.steps import Loop, Probe

EXAMPLE = """\
sop: 1
id: todo-add
name: Add todo items
inputs:
  base_url: {type: string, default: "http://127.0.0.1:8765/todo.html"}
  items: {type: list, default: [milk, eggs, bread]}
  password: {type: string, secret: true, default: ""}
outputs: [left, labels]
defaults: {timeout: 10s, retry: {attempts: 1}, on_error: fail}
steps:
  - id: open
    action: navigate
    url: "{{ base_url }}"
    inputs: [base_url]
  - id: add
    action: loop
    for_each: "{{ items }}"
    as: item
    inputs: [items]
    steps:
      - id: type
        action: fill
        selector: input.new-todo
        value: "{{ item }}"
        inputs: [item]
      - id: enter
        action: press
        selector: input.new-todo
        key: Enter
  - id: read
    action: extract
    selector: ul.todo-list li label
    outputs: {left: count, labels: texts}
"""


def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(DocumentError) as caught:
        load_sop(text)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return [(p.where, p.message) for p in caught.value.problems]


def _one_step(step: str) -> str:
    return f"sop: 1\nid: t\nsteps:\n  - {step}\n"


def test_the_example_loads_as_written():
    loaded = load_sop(EXAMPLE)
    sop = loaded.sop
    assert [s.id for s in sop.walk()] == ["open", "add", "type", "enter", "read"]
    assert (sop.defaults.timeout, sop.defaults.retry.attempts, sop.defaults.on_error) == (10.0, 1, "fail")
    assert sop.secret_inputs == {"password"}
    assert not any(spec.required for spec in sop.inputs.values())
    assert sop.outputs == ["left", "labels"]
    loop = sop.steps[1]
    assert isinstance(loop, Loop) and loop.steps[0].inputs == ["item"]
    assert (loop.for_each, loop.as_, loop.max_iterations) == ("{{ items }}", "item", 1000)
    assert sop.steps[2].outputs == {"left": "count", "labels": "texts"}
    assert loaded.source == EXAMPLE
    assert loaded.content_hash == hashlib.sha256(EXAMPLE.encode()).hexdigest()
    assert loaded.base_dir is None


def test_load_sop_file_remembers_its_folder(tmp_path):
    (tmp_path / "todo.yaml").write_text(EXAMPLE, encoding="utf-8")
    loaded = load_sop_file(tmp_path / "todo.yaml")
    assert (loaded.sop.id, loaded.base_dir) == ("todo-add", tmp_path.resolve())
    with pytest.raises(DocumentError) as caught:
        load_sop_file(tmp_path / "nope.yaml")
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


LOG = _one_step("{id: a, action: log, message: m}")


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("- a", [("document", "an SOP is a mapping with 'sop', 'id' and 'steps'")]),
        (": :\n  - [", [("line 1, column 1", "not valid YAML or JSON: did not find expected key")]),
        (
            "sop: 2\nid: 'a b'\nsteps: []\n",
            [
                ("sop", "Input should be 1"),
                ("id", "String should match pattern '^[A-Za-z0-9_][A-Za-z0-9_.-]*$'"),
                ("steps", "List should have at least 1 item after validation, not 0"),
            ],
        ),
        (LOG.replace("sop: 1\n", ""), [("sop", "is required")]),
        (LOG + "bogus: 1\n", [("bogus", "Extra inputs are not permitted")]),
        (LOG + "defaults: {timeout: -1}\n", [("defaults.timeout", "a duration cannot be negative")]),
        (LOG + "inputs: {bad-name: {}}\n", [("inputs.bad-name", "is not a variable name (letters, digits, _)")]),
    ],
)
def test_document_problems(text, problems):
    assert _problems(text) == problems


NOT_A_DURATION = "is not a duration (write 500ms, 2s, 1m, or a number of seconds)"


@pytest.mark.parametrize(
    ("step", "where", "message"),
    [
        ("{id: a, action: klick}", "step 'a' (steps[0])", "unknown action 'klick' (did you mean 'click'?)"),
        ("{id: a, action: teleport}", "step 'a' (steps[0])", "unknown action 'teleport'"),
        ("{id: a, selector: b}", "step 'a' (steps[0])", "field 'action' is required"),
        ("3", "step at steps[0]", "a step is a mapping with at least 'id' and 'action'"),
        ("{id: a, action: fill, selector: b}", "step 'a' (steps[0]), field 'value'", "is required"),
        (
            "{id: a, action: fill, selector: b, value: 1, valu: 2}",
            "step 'a' (steps[0]), field 'valu'",
            "is not a field of 'fill'",
        ),
        (
            "{id: a, action: log, message: m, timeout: soon}",
            "step 'a' (steps[0]), field 'timeout'",
            f"'soon' {NOT_A_DURATION}",
        ),
        (
            "{id: a, action: log, message: m, retry: {attempts: 0}}",
            "step 'a' (steps[0]), field 'retry.attempts'",
            "Input should be greater than or equal to 1",
        ),
        (
            "{id: a, action: log, message: m, inputs: [a-b]}",
            "step 'a' (steps[0]), field 'inputs'",
            "'a-b' is not a variable name",
        ),
        # checks across fields name every field they concern in the message
        (
            "{id: a, action: select, selector: b, value: x, label: y}",
            "step 'a' (steps[0])",
            "select takes exactly one of 'value' or 'label'",
        ),
        (
            "{id: a, action: wait}",
            "step 'a' (steps[0])",
            "wait takes exactly one of 'selector' (or 'locator'), 'url', 'load_state' or 'duration'",
        ),
        (
            "{id: a, action: assert, selector: b}",
            "step 'a' (steps[0])",
            "assert on an element takes exactly one of text, contains, count, visible, value",
        ),
        (
            "{id: a, action: assert, that: 'x', url: u}",
            "step 'a' (steps[0])",
            "'that' stands alone: no selector, url or element check beside it",
        ),
        (
            "{id: a, action: loop, repeat: 2, for_each: [1], steps: [{id: b, action: log, message: m}]}",
            "step 'a' (steps[0])",
            "a loop takes exactly one of for_each, repeat, for_each_element, while, until",
        ),
        # steps inside steps are located by their path
        (
            "{id: a, action: loop, repeat: 2, steps: [{id: b, action: log, message: m, timeout: x}]}",
            "step 'b' (steps[0].steps[0]), field 'timeout'",
            f"'x' {NOT_A_DURATION}",
        ),
        (
            "{id: a, action: if, condition: 'true', then: [{id: b, action: log, message: m}], "
            "else: [{id: c, action: lg}]}",
            "step 'c' (steps[0].else[0])",
            "unknown action 'lg' (did you mean 'log'?)",
        ),
    ],
)
def test_step_problems_name_the_step_and_the_field(step, where, message):
    assert _problems(_one_step(step)) == [(where, message)]


def test_every_problem_is_listed_at_once():
    text = "sop: 1\nid: t\nsteps:\n  - {id: a, action: klick}\n  - {id: b, action: fill, selector: s}\n"
    assert [w for w, _ in _problems(text)] == ["step 'a' (steps[0])", "step 'b' (steps[1]), field 'value'"]


def test_a_bad_when_probe_is_reported_at_field_when():
    problems = _problems(_one_step("{id: a, action: log, message: m, when: {exists: x, missing: y}}"))
    where = "step 'a' (steps[0]), field 'when'"
    assert (where, "a page probe has exactly one of 'exists' or 'missing'") in problems
    assert {w for w, _ in problems} == {where}


def test_a_default_of_the_wrong_type_is_a_document_problem():
    problems = _problems(LOG + "inputs: {items: {type: list, default: milk}}\n")
    assert [w for w, _ in problems] == ["inputs.items"]


def test_step_fields():
    text = _one_step("{id: a, action: set, values: {x: 1, y: '{{ n }}'}, inputs: [n]}") + "inputs: {n: {}}\n"
    assert load_sop(text).sop.steps[0].outputs == {"x": "x", "y": "y"}  # a set step's values are its outputs
    text = _one_step("{id: a, action: extract, selector: s, outputs: [count], when: {missing: x}}")
    step = load_sop(text).sop.steps[0]
    assert step.outputs == {"count": "count"}
    assert step.when == Probe(missing="x") and step.when.target == "x"
    # every field of the action may be a template: all of them are rendered
    assert step.templated() == {
        "selector": "s",
        "locator": None,
        "frame": None,
        "attribute": None,
        "optional": False,
        "timeout": None,
    }


def test_resolve_inputs_fills_in_defaults():
    sop = load_sop(EXAMPLE).sop
    assert resolve_inputs(sop, {}) == {
        "base_url": "http://127.0.0.1:8765/todo.html",
        "items": ["milk", "eggs", "bread"],
        "password": "",
    }
    assert resolve_inputs(sop, {"items": ["tea"]})["items"] == ["tea"]


def test_resolve_inputs_lists_every_problem_and_hides_secrets():
    sop = load_sop(EXAMPLE).sop
    with pytest.raises(DocumentError) as caught:
        resolve_inputs(sop, {"items": "milk", "password": 1234, "nope": 1})
    assert [str(p) for p in caught.value.problems] == [
        "input 'nope': is not an input of this SOP (its inputs: base_url, items, password)",
        "input 'items': must be list, got \"milk\"",
        "input 'password': must be string, got ***",
    ]


TYPED = LOG + ("inputs: {n: {type: integer}, f: {type: number, default: null}, b: {type: boolean, default: false}}\n")


@pytest.mark.parametrize(
    ("given", "result"),
    [
        ({"n": 2}, {"n": 2, "f": None, "b": False}),
        ({"n": 2, "f": 1, "b": True}, {"n": 2, "f": 1, "b": True}),
        ({"n": 2, "f": 1.5}, {"n": 2, "f": 1.5, "b": False}),
        ({}, "input 'n': is required (integer)"),
        ({"n": 1.0}, "input 'n': must be integer, got 1.0"),
        ({"n": True}, "input 'n': must be integer, got true"),  # a boolean is not a number here
        ({"n": 2, "f": True}, "input 'f': must be number, got true"),
        ({"n": 2, "b": 1}, "input 'b': must be boolean, got 1"),
        ({"n": 2, "f": None}, "input 'f': must be number, got null"),  # only a default may be null
    ],
)
def test_resolve_inputs_checks_types(given, result):
    sop = load_sop(TYPED).sop
    if isinstance(result, dict):
        assert resolve_inputs(sop, given) == result
    else:
        with pytest.raises(DocumentError) as caught:
            resolve_inputs(sop, given)
        assert str(caught.value) == result


def test_resolve_inputs_of_an_sop_without_inputs():
    with pytest.raises(DocumentError, match=r"^input 'a': is not an input of this SOP \(its inputs: none\)$"):
        resolve_inputs(load_sop(LOG).sop, {"a": 1})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ('["a", 1]', ["a", 1]),
        ('{"k": 1}', {"k": 1}),
        ('"3"', "3"),
        ("milk", "milk"),
        ("", ""),
        ("a=b", "a=b"),
        ("02134", "02134"),
    ],
)
def test_parse_cli_value(text, value):
    assert parse_cli_value(text) == value
    assert type(parse_cli_value(text)) is type(value)


# hostile documents and inputs: a clear problem, at once --------------------------------------------

ALIAS_BOMB_DEFAULT = (
    LOG
    + "inputs:\n  x:\n    type: list\n    default: &a0 [a, a, a, a, a, a, a, a, a]\n"
    + "".join(f"  x{i}:\n    type: list\n    default: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
)


def test_an_alias_bomb_in_an_input_default_is_refused():
    assert _problems(ALIAS_BOMB_DEFAULT) == [
        ("document", "the document expands to more than 10000 values (aliases count every time they are used)")
    ]


@pytest.mark.parametrize("text", ["[" * 10_000 + "]" * 10_000, "{" * 100_000, LOG + "x: " + "[" * 10_000])
def test_a_deep_document_is_refused(text):
    assert _problems(text) == [("document", "the document nests deeper than 64 levels")]


def test_a_document_with_text_that_cannot_be_encoded_is_refused():
    text = LOG + "name: \ud800\n"
    at = len(LOG) + 6
    assert _problems(text) == [
        (
            "document",
            f"the document holds text that cannot be encoded as UTF-8 (lone surrogate '\\ud800' at character {at})",
        )
    ]
    assert (
        _problems(LOG + 'name: "\\ud800"\n')[0][1]
        == "not valid YAML or JSON: found invalid Unicode character escape code"
    )


def test_a_document_with_a_costly_template_loads_without_evaluating_it():
    # valid: templates are evaluated only when their step runs, where this one fails with the '**' limit
    loaded = load_sop(_one_step("{id: a, action: log, message: '{{ (10**(10**8)) > 5 }}'}"))
    assert loaded.sop.steps[0].id == "a"


def test_a_template_with_a_macro_is_a_problem_of_its_step():
    template = "{% macro f() %}{% endmacro %}"
    problems = _problems(_one_step(f"{{id: a, action: log, message: '{template}'}}"))
    assert problems == [
        ("step 'a', field 'message'", f"template {template!r} uses {{% macro %}}, which SOP templates do not allow")
    ]


def test_an_input_default_over_the_text_limit_is_refused(monkeypatch):
    monkeypatch.setenv("SOP_TEMPLATE_MAX_OUTPUT", "10")
    assert _problems(LOG + "inputs: {s: {default: abcdefghijk}}\n") == [
        ("inputs.s", "the default holds more than 10 characters of text")
    ]


def _deep(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (_deep(100_000), "input 'items': the value nests deeper than 64 levels"),
        (list(range(10_001)), "input 'items': the value holds more than 10000 values"),
        (["\udc80"], "input 'items': the value[0] holds text that cannot be encoded as UTF-8 (lone surrogate"),
    ],
)
def test_given_inputs_over_a_limit_or_unencodable_are_refused(value, said):
    with pytest.raises(DocumentError) as caught:
        resolve_inputs(load_sop(EXAMPLE).sop, {"items": value})
    assert str(caught.value).startswith(said)


def test_a_deep_cli_value_stays_text():
    assert parse_cli_value("[" * 1000 + "]" * 1000) == "[" * 1000 + "]" * 1000


# hypothesis: whatever the text or structure, a DocumentError or a document ---------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=40,
)


@given(st.text(max_size=200))
def test_parse_text_raises_only_document_errors(text):
    with contextlib.suppress(DocumentError):
        parse_text(text)


@settings(deadline=None)
@given(JSON_VALUES, st.integers(min_value=0, max_value=200))
def test_load_sop_raises_only_document_errors(value, depth):
    for _ in range(depth):
        value = [value]
    for text in (json.dumps(value), json.dumps({"sop": 1, "id": "t", "steps": [value]}), yaml.safe_dump(value)):
        with contextlib.suppress(DocumentError):
            load_sop(text)


@settings(deadline=None)
@given(st.lists(st.sampled_from(["a", "{{ ", " }}", "{% for i in x %}", "{% endfor %}", "(", "**", "9", "|", "'"])))
def test_load_sop_with_any_template_raises_only_document_errors(tokens):
    text = json.dumps({"sop": 1, "id": "t", "steps": [{"id": "a", "action": "log", "message": "".join(tokens)}]})
    with contextlib.suppress(DocumentError):
        load_sop(text)


def test_checking_a_document_is_stopped_at_its_deadline(monkeypatch):
    from sop_engine import document

    monkeypatch.setattr(document, "DOCUMENT_MAX_SECONDS", 0.05)
    message = "{{ x }}" * 30_000 + " deadline test"  # some 0.5 s of template parsing
    assert _problems(_one_step(f"{{id: a, action: log, message: '{message}'}}")) == [
        ("document", "checking the document took longer than 0.05 s")
    ]


def test_an_unknown_input_name_with_a_lone_surrogate_is_shown_cleaned():
    with pytest.raises(DocumentError) as caught:
        resolve_inputs(load_sop(LOG).sop, {"a\ud800": 1})
    assert str(caught.value) == "input 'a\ufffd': is not an input of this SOP (its inputs: none)"


def test_the_first_look_knows_every_action_that_needs_no_browser(tmp_path):
    """prescan's list (read before the step models are loaded) is the models' own, and its hint agrees with
    the document's steps on a few shapes."""
    from sop_engine.prescan import NO_BROWSER_ACTIONS, looks_like_browser
    from sop_engine.steps import STEP_MODELS

    assert {action for action, model in STEP_MODELS.items() if not model.browser} == NO_BROWSER_ACTIONS
    shapes = {
        "steps: [{id: a, action: log, message: hi}]": False,
        "steps: [{id: a, action: set, values: {x: 1}}, {id: b, action: fill, selector: '#x', value: y}]": True,
        "steps: [{id: a, action: log, message: hi, when: {exists: '#x'}}]": True,
        "steps: [{id: a, action: loop, repeat: 2, steps: [{id: b, action: click, selector: '#x'}]}]": True,
        "steps: [{id: a, action: loop, for_each_element: li, steps: [{id: b, action: log, message: x}]}]": True,
    }
    for steps, browser in shapes.items():
        path = tmp_path / "sop.yaml"
        path.write_text(f"sop: 1\nid: shape\n{steps}\n")
        assert looks_like_browser(path) is browser, steps
        assert load_sop(path.read_text()).sop.needs_browser is browser, steps
    path.write_text("steps: [unclosed")  # what is wrong is said by the full read, not by the first look
    assert looks_like_browser(path) is False
