"""The checks made on a parsed document before it may run: unique ids, declared inputs and outputs, what
each template reads, dependencies and their cycles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING

from .expressions import ExpressionError, names_in, names_in_condition
from .graph import bound_inside, build_graph, step_outputs
from .problems import Problem
from .steps import If, Loop, Step

if TYPE_CHECKING:
    from .document import Sop


def check_document(sop: Sop) -> list[Problem]:
    ids = [s.id for s in sop.walk()]
    problems = check_unique_ids(ids)
    all_ids = set(ids)
    for step in sop.walk():
        for compensation in step.compensate:  # what it reads, it declares (sop_engine.rollback says what it sees)
            found: list[Problem] = []
            _check_templates(compensation, found)
            problems += [Problem(f"step '{step.id}', compensation {p.where}", p.message) for p in found]
    _check_scope(sop.steps, set(sop.inputs), set(sop.inputs), all_ids, problems, frozenset())
    top = set(sop.inputs).union(*(step_outputs(s) for s in sop.steps))
    for name in sop.outputs:
        if name not in top:
            problems.append(Problem(f"outputs '{name}'", "is neither an input nor an output of a top-level step"))
    return problems


def _check_scope(
    steps: list[Step],
    outer: set[str],
    sop_inputs: set[str],
    all_ids: set[str],
    problems: list[Problem],
    ancestors: frozenset[str],
) -> None:
    seen: dict[str, str] = {}
    for step in steps:
        for name in step_outputs(step):
            if name in seen:
                problems.append(
                    Problem(
                        f"step '{step.id}'",
                        f"output '{name}' is also an output of step '{seen[name]}' at the same level",
                    )
                )
            elif name in sop_inputs:
                problems.append(Problem(f"step '{step.id}'", f"output '{name}' has the name of an SOP input"))
            seen[name] = step.id
    available = outer | set(seen)
    for step in steps:
        _check_step(step, available, all_ids, problems)
        for dep in set(step.depends_on) & ancestors:
            problems.append(
                Problem(
                    f"step '{step.id}', field 'depends_on'",
                    f"'{dep}' contains step '{step.id}': a step cannot wait for its own container",
                )
            )
        for children in step.children():
            inner = available | bound_inside(step)
            _check_scope(children, inner, sop_inputs, all_ids, problems, ancestors | {step.id})
    graph = build_graph(steps)
    try:
        TopologicalSorter({sid: n.needs | n.after for sid, n in graph.nodes.items()}).prepare()
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        problems.append(Problem(f"step '{exc.args[1][0]}'", f"dependency cycle: {cycle}"))


def _uses(step: Step, names: Iterable[str], allowed: set[str], field: str, problems: list[Problem]) -> None:
    for name in sorted(set(names) - allowed):
        problems.append(
            Problem(
                f"step '{step.id}', field '{field}'",
                f"step '{step.id}' uses '{name}', which it does not declare in its inputs",
            )
        )


def _names(step: Step, field: str, value: object, condition: bool, problems: list[Problem]) -> set[str]:
    try:
        return names_in_condition(value) if condition else names_in(value)
    except ExpressionError as exc:
        problems.append(Problem(f"step '{step.id}', field '{field}'", str(exc)))
        return set()


def check_unique_ids(ids: Iterable[str]) -> list[Problem]:
    problems = []
    for sid, n in Counter(ids).items():
        if n > 1:
            problems.append(Problem(f"step '{sid}'", f"the id '{sid}' is used by {n} steps; ids must be unique"))
    return problems


def raw_step_ids(raw_steps: object) -> list[str]:
    """The ids of steps as written, whether or not they parse: the ids a document with broken steps uses."""
    ids: list[str] = []
    stack = [raw_steps]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            if isinstance(item.get("id"), str):
                ids.append(item["id"])
            stack.extend(item.get(key) for key in ("else", "then", "steps") if isinstance(item.get(key), list))
    return ids


def check_parsed_steps(steps: list[Step], raw_steps: object) -> list[Problem]:
    """What can still be checked when some steps did not parse: ids unique among every step written, each
    parsed step's own templates, and what its depends_on and resume_from name among those ids."""
    ids = raw_step_ids(raw_steps)
    problems = check_unique_ids(ids) + check_declarations(steps)
    stack = list(steps)
    while stack:
        step = stack.pop(0)
        _check_references(step, set(ids), problems)
        stack.extend(child for children in step.children() for child in children)
    return problems


def check_declarations(steps: list[Step]) -> list[Problem]:
    """Only the checks a step makes on its own (its templates use what it declares): with steps that did not
    parse, the checks between steps would report what is only missing because of them."""
    problems: list[Problem] = []
    for step in steps:
        _check_templates(step, problems)
        for children in step.children():
            problems += check_declarations(children)
    return problems


def _check_templates(step: Step, problems: list[Problem]) -> None:
    declared = set(step.inputs)
    for field, value in step.templated().items():
        _uses(step, _names(step, field, value, False, problems), declared, field, problems)
    if step.when is not None:
        _uses(step, _names(step, "when", step.when, True, problems), declared, "when", problems)
    if step.dialogs is not None and step.dialogs.prompt is not None:
        _uses(step, _names(step, "dialogs.prompt", step.dialogs.prompt, False, problems), declared, "dialogs", problems)
    for name, source in step.outputs.items():
        if "{" in source:
            _uses(
                step,
                _names(step, f"outputs.{name}", source, False, problems),
                declared | {"result"},
                f"outputs.{name}",
                problems,
            )


def _check_step(step: Step, available: set[str], all_ids: set[str], problems: list[Problem]) -> None:
    declared = set(step.inputs)
    for name in step.inputs:
        if name not in available:
            problems.append(
                Problem(
                    f"step '{step.id}', field 'inputs'",
                    f"step '{step.id}' declares input '{name}', which is not an SOP input, a loop variable in "
                    "scope, or an output of another step",
                )
            )
    _check_templates(step, problems)
    _check_references(step, all_ids, problems)
    if isinstance(step, Loop):
        _check_loop(step, declared, problems)
    if isinstance(step, If):
        _uses(step, _names(step, "condition", step.condition, True, problems), declared, "condition", problems)


def _check_references(step: Step, all_ids: set[str], problems: list[Problem]) -> None:
    for dep in step.depends_on:
        if dep not in all_ids or dep == step.id:
            problems.append(Problem(f"step '{step.id}', field 'depends_on'", f"'{dep}' is not another step's id"))
    if step.resume_from is not None and step.resume_from not in all_ids:
        problems.append(Problem(f"step '{step.id}', field 'resume_from'", f"'{step.resume_from}' is not a step id"))


def _check_loop(loop: Loop, declared: set[str], problems: list[Problem]) -> None:
    body_outputs = set().union(*(step_outputs(c) for c in loop.steps))
    for name, var in loop.collect.items():
        if var not in body_outputs:
            problems.append(
                Problem(
                    f"step '{loop.id}', field 'collect.{name}'",
                    f"'{var}' is not an output of a step in the loop's body",
                )
            )
    scope = declared | body_outputs | {loop.as_, "index"}
    for field, cond in (("while", loop.while_), ("until", loop.until)):
        if cond is not None:
            _uses(loop, _names(loop, field, cond, True, problems), scope, field, problems)
