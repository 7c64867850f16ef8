import pytest

from sop_engine.checks import check_document
from sop_engine.document import DocumentError, load_sop
from sop_engine.graph import build_graph, free_names
from sop_engine.states import StepStatus

P, R, C, F, S, B = (
    StepStatus.PENDING,
    StepStatus.RUNNING,
    StepStatus.COMPLETED,
    StepStatus.FAILED,
    StepStatus.SKIPPED,
    StepStatus.BLOCKED,
)


def _steps(steps: str, head: str = ""):
    return load_sop(f"sop: 1\nid: g\n{head}steps:\n{steps}").sop.steps


def _edges(steps: str, head: str = "") -> dict[str, tuple[set[str], set[str]]]:
    return {sid: (set(n.needs), set(n.after)) for sid, n in build_graph(_steps(steps, head)).nodes.items()}


def _problems(steps: str, head: str = "") -> list[str]:
    with pytest.raises(DocumentError) as caught:
        _steps(steps, head)
    return [str(p) for p in caught.value.problems]


TODO = """\
  - {id: open, action: navigate, url: "{{ base_url }}", inputs: [base_url]}
  - id: add
    action: loop
    for_each: "{{ items }}"
    as: item
    inputs: [items]
    steps:
      - {id: type, action: fill, selector: input.new-todo, value: "{{ item }}", inputs: [item]}
      - {id: enter, action: press, selector: input.new-todo, key: Enter}
  - {id: read, action: extract, selector: ul.todo-list li label, outputs: {left: count, labels: texts}}
"""
TODO_HEAD = "inputs: {base_url: {default: u}, items: {type: list, default: [a]}}\noutputs: [left, labels]\n"


def test_the_example_runs_in_tab_order():
    edges = _edges(TODO, TODO_HEAD)
    assert edges == {"open": (set(), set()), "add": (set(), {"open"}), "read": (set(), {"add"})}


def test_a_step_needs_the_step_whose_output_it_reads():
    assert _edges(
        "  - {id: b, action: log, message: '{{ x }}', inputs: [x]}\n  - {id: a, action: set, values: {x: 1}}\n"
    ) == {"b": ({"a"}, set()), "a": (set(), set())}


def test_depends_on_is_a_need_and_other_steps_run_side_by_side():
    edges = _edges(
        "  - {id: a, action: log, message: m}\n"
        "  - {id: b, action: log, message: m}\n"
        "  - {id: c, action: log, message: m, depends_on: [a]}\n"
    )
    assert edges == {"a": (set(), set()), "b": (set(), set()), "c": ({"a"}, set())}


def test_browser_steps_on_one_tab_run_in_document_order_and_tabs_run_side_by_side():
    edges = _edges(
        "  - {id: a, action: click, selector: x}\n"
        "  - {id: b, action: click, selector: x, tab: other}\n"
        "  - {id: c, action: log, message: m}\n"
        "  - {id: d, action: assert, that: 'true'}\n"  # reads no page
        "  - {id: e, action: click, selector: x}\n"
        "  - {id: f, action: log, message: m, when: {exists: x}, tab: other}\n"
    )
    assert edges == {
        "a": (set(), set()),
        "b": (set(), set()),
        "c": (set(), set()),
        "d": (set(), set()),
        "e": (set(), {"a"}),
        "f": (set(), {"b"}),
    }


def test_a_need_on_the_same_tab_is_not_also_an_after():
    edges = _edges(
        "  - {id: a, action: extract, selector: x, outputs: [n]}\n"
        "  - {id: b, action: fill, selector: y, value: '{{ n }}', inputs: [n]}\n"
    )
    assert edges["b"] == ({"a"}, set())


def test_a_loop_needs_what_its_body_takes_from_outside():
    steps = _steps(
        "  - {id: a, action: set, values: {x: 1}}\n"
        "  - {id: z, action: log, message: m}\n"
        "  - id: l\n    action: loop\n    repeat: 2\n    collect: {all: y}\n    steps:\n"
        "      - {id: s, action: set, values: {y: '{{ x }}'}, inputs: [x]}\n"
        "      - {id: t, action: log, message: '{{ y }}{{ index }}', inputs: [y, index],"
        " depends_on: [z]}\n"
        "  - {id: u, action: log, message: '{{ all }}', inputs: [all]}\n"
    )
    assert free_names(steps[2]) == {"x"}  # y comes from the body, index from the loop
    graph = build_graph(steps)
    assert graph.nodes["l"].needs == {"a", "z"}
    assert graph.nodes["u"].needs == {"l"}  # collected names are the loop's outputs


def test_depends_on_a_nested_step_is_refused_or_waits_for_its_enclosing_step():
    steps = (
        "  - {id: l, action: loop, repeat: 2, steps: [{id: inner, action: log, message: m}]}\n"
        "  - {id: after, action: log, message: m, depends_on: [inner]}\n"
    )
    try:
        edges = _edges(steps)
    except DocumentError as exc:
        assert "step 'after', field 'depends_on'" in str(exc)
    else:
        assert edges["after"] == ({"l"}, set())


@pytest.mark.parametrize(
    ("steps", "cycle"),
    [
        (
            "  - {id: a, action: log, message: m, depends_on: [b]}\n"
            "  - {id: b, action: log, message: m, depends_on: [a]}\n",
            "a -> b -> a",
        ),
        # each arrow points at the step that waits for the one before it
        (
            "  - {id: a, action: log, message: m, depends_on: [c]}\n"
            "  - {id: b, action: log, message: m, depends_on: [a]}\n"
            "  - {id: c, action: log, message: m, depends_on: [b]}\n",
            "a -> b -> c -> a",
        ),
        (
            "  - {id: a, action: set, values: {x: '{{ y }}'}, inputs: [y]}\n"
            "  - {id: b, action: set, values: {y: '{{ x }}'}, inputs: [x]}\n",
            "a -> b -> a",
        ),
        # reading what a later step on the same tab extracts: that step waits for this one
        (
            "  - {id: a, action: fill, selector: s, value: '{{ n }}', inputs: [n]}\n"
            "  - {id: b, action: extract, selector: s, outputs: [n]}\n",
            "a -> b -> a",
        ),
    ],
)
def test_cycles_are_spelled_out(steps, cycle):
    assert _problems(steps) == [f"step 'a': dependency cycle: {cycle}"]


STATUS_GRAPH = """\
  - {id: a, action: set, values: {x: 1}}
  - {id: b, action: click, selector: s, inputs: [x]}
  - {id: c, action: click, selector: s}
  - {id: d, action: log, message: m, depends_on: [b]}
  - {id: e, action: log, message: '{{ x }}', inputs: [x], depends_on: [d]}
"""


@pytest.mark.parametrize(
    ("status", "ready", "blocked"),
    [
        ({"a": P, "b": P, "c": P, "d": P, "e": P}, ["a"], []),
        ({"a": R, "b": P, "c": P, "d": P, "e": P}, [], []),
        ({"a": C, "b": P, "c": P, "d": P, "e": P}, ["b"], []),
        ({"a": S, "b": P, "c": P, "d": P, "e": P}, ["b"], []),  # a skipped step satisfies its dependants
        ({"a": C, "b": C, "c": P, "d": P, "e": P}, ["c", "d"], []),
        ({"a": C, "b": F, "c": P, "d": P, "e": P}, ["c"], ["d"]),  # c only runs after b on the tab
        ({"a": C, "b": F, "c": C, "d": B, "e": P}, [], ["e"]),
        ({"a": F, "b": P, "c": P, "d": P, "e": P}, [], ["b", "e"]),
    ],
)
def test_ready_and_blocked_at_run_time(status, ready, blocked):
    graph = build_graph(_steps(STATUS_GRAPH))
    assert graph.ready(status) == ready
    assert graph.blocked(status) == blocked


@pytest.mark.parametrize(("sid", "dependants"), [("a", {"b", "d", "e"}), ("b", {"d", "e"}), ("c", set()), ("e", set())])
def test_dependants_follow_needs_not_tab_order(sid, dependants):
    assert build_graph(_steps(STATUS_GRAPH)).dependants(sid) == dependants


def test_an_undeclared_variable_names_the_step_and_the_field():
    text = TODO.replace('value: "{{ item }}"', 'value: "{{ itme }}"')
    assert _problems(text, TODO_HEAD) == [
        "step 'type', field 'value': step 'type' uses 'itme', which it does not declare in its inputs"
    ]


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (
            "  - {id: a, action: log, message: m, inputs: [y]}\n",
            "step 'a', field 'inputs': step 'a' declares input 'y', which is not an SOP input, "
            "a loop variable in scope, or an output of another step",
        ),
        (
            "  - {id: a, action: log, message: m, when: 'n > 1'}\n",
            "step 'a', field 'when': step 'a' uses 'n', which it does not declare in its inputs",
        ),
        (
            "  - {id: a, action: if, condition: 'n > 1', then: [{id: b, action: log, message: m}]}\n",
            "step 'a', field 'condition': step 'a' uses 'n', which it does not declare in its inputs",
        ),
        (
            "  - {id: a, action: loop, until: 'k > 3', steps: [{id: b, action: set, values: {n: 1}}]}\n",
            "step 'a', field 'until': step 'a' uses 'k', which it does not declare in its inputs",
        ),
        (
            "  - {id: a, action: log, message: m, outputs: {o: '{{ result.x }}', p: '{{ q }}'}}\n",
            "step 'a', field 'outputs.p': step 'a' uses 'q', which it does not declare in its inputs",
        ),
        (
            "  - {id: a, action: log, message: '{{ a b }}'}\n",
            "step 'a', field 'message': template '{{ a b }}' does not parse: "
            "expected token 'end of print statement', got 'b'",
        ),
        (
            "  - {id: a, action: log, message: m, depends_on: [nope]}\n",
            "step 'a', field 'depends_on': 'nope' is not another step's id",
        ),
        (
            "  - {id: a, action: log, message: m, resume_from: nope}\n",
            "step 'a', field 'resume_from': 'nope' is not a step id",
        ),
        (
            "  - {id: a, action: loop, repeat: 2, collect: {all: v}, steps: [{id: b, action: log, message: m}]}\n",
            "step 'a', field 'collect.all': 'v' is not an output of a step in the loop's body",
        ),
        (
            "  - {id: a, action: set, values: {x: 1}}\n  - {id: b, action: set, values: {x: 2}}\n",
            "step 'b': output 'x' is also an output of step 'a' at the same level",
        ),
        ("  - {id: a, action: set, values: {items: 1}}\n", "step 'a': output 'items' has the name of an SOP input"),
        (
            "  - {id: a, action: log, message: m}\n  - {id: a, action: log, message: m}\n",
            "step 'a': the id 'a' is used by 2 steps; ids must be unique",
        ),
    ],
)
def test_document_checks(steps, problem):
    assert _problems(steps, "inputs: {items: {type: list, default: []}}\n") == [problem]


def test_a_self_dependency_is_refused():
    assert _problems("  - {id: a, action: log, message: m, depends_on: [a]}\n") == [
        "step 'a', field 'depends_on': 'a' is not another step's id"
    ]


def test_a_step_cannot_wait_for_its_own_loop():
    steps = "  - {id: l, action: loop, repeat: 1, steps: [{id: b, action: log, message: m, depends_on: [l]}]}\n"
    assert _problems(steps) == [
        "step 'b', field 'depends_on': 'l' contains step 'b': a step cannot wait for its own container"
    ]


def test_sop_outputs_are_inputs_or_outputs_of_top_level_steps():
    steps = (
        "  - {id: a, action: set, values: {x: 1}}\n"
        "  - {id: l, action: loop, repeat: 2, steps: [{id: s, action: set, values: {y: 1}}]}\n"
    )
    assert _problems(steps, "inputs: {n: {type: integer, default: 1}}\noutputs: [n, x, y, ghost]\n") == [
        "outputs 'y': is neither an input nor an output of a top-level step",
        "outputs 'ghost': is neither an input nor an output of a top-level step",
    ]


def test_a_valid_document_has_no_problems():
    sop = load_sop(f"sop: 1\nid: g\n{TODO_HEAD}steps:\n{TODO}").sop
    assert check_document(sop) == []
