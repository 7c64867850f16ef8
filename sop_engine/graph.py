"""Dependencies between steps: data, `depends_on` and tab order; cycles; which steps are ready."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .states import STEP_TERMINAL, StepStatus
from .steps import If, Loop, Step, uses_browser

_SATISFIED = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
_BROKEN = frozenset({StepStatus.FAILED, StepStatus.BLOCKED})


def step_outputs(step: Step) -> set[str]:
    """Names a step makes visible to its siblings."""
    if isinstance(step, Loop):
        return set(step.collect)
    if isinstance(step, If):
        return set()
    return set(step.outputs)


def bound_inside(step: Step) -> set[str]:
    return {step.as_, "index"} if isinstance(step, Loop) else set()


def free_names(step: Step) -> set[str]:
    """Variables the step, or any step inside it, takes from the scope around it."""
    names = set(step.inputs)
    for children in step.children():
        produced = set().union(*(step_outputs(c) for c in children)) if children else set()
        inner = set().union(*(free_names(c) for c in children)) if children else set()
        names |= inner - produced - bound_inside(step)
    return names


def free_dependencies(step: Step) -> set[str]:
    """Step ids named in `depends_on` by the step, or by a step inside it that is not its sibling."""
    found = set(step.depends_on)
    for children in step.children():
        ids = {c.id for c in children}
        for child in children:
            found |= free_dependencies(child) - ids
    return found


def tabs_used(step: Step) -> set[str]:
    tabs = {step.tab} if uses_browser(step) else set()
    for children in step.children():
        for child in children:
            tabs |= tabs_used(child)
    return tabs


@dataclass(frozen=True)
class Node:
    step: Step
    needs: frozenset[str]  # siblings whose success it needs (their outputs, or depends_on)
    after: frozenset[str]  # siblings it only runs after (the previous step on the same tab)


@dataclass(frozen=True)
class Graph:
    nodes: dict[str, Node]  # in document order

    def ready(self, status: Mapping[str, StepStatus], first: bool = False) -> list[str]:
        """Pending steps whose dependencies are done, in document order (with `first`, only the first)."""
        found = []
        for sid, node in self.nodes.items():
            if (
                status[sid] == StepStatus.PENDING
                and all(status[d] in _SATISFIED for d in node.needs)
                and all(status[d] in STEP_TERMINAL for d in node.after)
            ):
                found.append(sid)
                if first:
                    break
        return found

    def blocked(self, status: Mapping[str, StepStatus]) -> list[str]:
        """Pending steps that can never run: a step they need failed or is blocked itself."""
        if not any(value in _BROKEN for value in status.values()):
            return []
        return [
            sid
            for sid, node in self.nodes.items()
            if status[sid] == StepStatus.PENDING and any(status[d] in _BROKEN for d in node.needs)
        ]

    def dependants(self, sid: str) -> set[str]:
        """Every step that needs `sid`, directly or through others."""
        found: set[str] = set()
        frontier = {sid}
        while frontier:
            frontier = {o for o, n in self.nodes.items() if n.needs & frontier} - found
            found |= frontier
        return found


def sibling_lists(steps: list[Step]) -> dict[str, list[Step]]:
    """For every step id of a document, the list of steps it stands in."""
    found: dict[str, list[Step]] = {}
    for step in steps:
        found[step.id] = steps
        for children in step.children():
            found.update(sibling_lists(children))
    return found


def subtree_ids(step: Step) -> set[str]:
    ids = {step.id}
    for children in step.children():
        for child in children:
            ids |= subtree_ids(child)
    return ids


def build_graph(steps: list[Step]) -> Graph:
    producer = {name: s.id for s in steps for name in step_outputs(s)}
    owner = {sid: s.id for s in steps for sid in subtree_ids(s)}  # a nested step stands for its top sibling
    last_on_tab: dict[str, str] = {}
    nodes: dict[str, Node] = {}
    for step in steps:
        needs = {producer[n] for n in free_names(step) if n in producer and producer[n] != step.id}
        needs |= {owner[d] for d in free_dependencies(step) if d in owner and owner[d] != step.id}
        tabs = tabs_used(step)
        after = {last_on_tab[t] for t in tabs if t in last_on_tab}
        for tab in tabs:
            last_on_tab[tab] = step.id
        nodes[step.id] = Node(step, frozenset(needs), frozenset(after - needs))
    return Graph(nodes)
