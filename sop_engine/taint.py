"""Which values carry a secret: the names a document taints (read off the document alone, so a resumed run gets
the same answer), the rendered values that read one, and the texts a secret shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .expressions import ExpressionError, is_template, names_in
from .steps import If, Input, Loop, Set, Step

# A name is *tainted* when it is a secret input, a secret field of an input form, or an output computed
# from a tainted name: by an output template that reads one; for `set`, by the value template that reads
# one; for any other action, by any of its fields reading one (what the action gives back came from the
# secret: an evaluate, an http call). A loop over a tainted value taints its item; a loop collecting a
# tainted name taints the collection. The rule reads the document only, so a resumed run gets the same
# answer. Names are not scoped: a name tainted anywhere in the document is tainted everywhere in it.


def _reads(value: Any) -> set[str]:
    try:
        return names_in(value)
    except ExpressionError:  # it fails when rendered, and says why then
        return set()


def _all_steps(steps: list[Step]) -> Iterator[Step]:
    for step in steps:
        yield step
        for children in step.children():
            yield from _all_steps(children)


def _tainted_by(step: Step, tainted: set[str]) -> set[str]:
    if isinstance(step, Loop):
        found = {step.as_} if _reads(step.templated()) & tainted else set()
        return found | {name for name, var in step.collect.items() if var in tainted}
    if isinstance(step, If):
        return set()
    whole = False
    if isinstance(step, Set):
        fed = {k for k, v in step.values.items() if _reads(v) & tainted}
    elif isinstance(step, Input):
        fed = {k for k, spec in step.fields.items() if spec.secret}
    else:
        whole = bool(_reads(step.templated()) & tainted)
        fed = set()
    found = set()
    for name, source in step.outputs.items():
        if "{" in source:
            reads = _reads(source)
            if reads & tainted or ("result" in reads and (whole or fed)):
                found.add(name)
        elif whole or source in fed:
            found.add(name)
    return found


def tainted_names(steps: list[Step], secrets: set[str]) -> frozenset[str]:
    """Every name of the document whose value carries a secret (the rule above)."""
    tainted = set(secrets)
    while True:
        grown = set().union(tainted, *(_tainted_by(step, tainted) for step in _all_steps(steps)))
        if grown == tainted:
            return frozenset(tainted)
        tainted = grown


def secret_parts(template: Any, rendered: Any, tainted: frozenset[str]) -> Iterator[Any]:
    """The rendered values of the templates in `template` that read a tainted name: each is secret as a whole."""
    if isinstance(template, str):
        if is_template(template) and _reads(template) & tainted:
            yield rendered
    elif isinstance(template, dict) and isinstance(rendered, dict):
        for key, value in template.items():
            yield from secret_parts(value, rendered.get(key), tainted)
    elif isinstance(template, list) and isinstance(rendered, list):
        for value, out in zip(template, rendered, strict=False):
            yield from secret_parts(value, out, tainted)


MIN_DERIVED = 4  # a value computed from a secret this short ("200", "yes") is masked by name only


def secret_texts(value: Any) -> Iterator[str]:
    """The texts a value computed from a secret shows: itself and its leaves, of MIN_DERIVED characters or more."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, dict | list | tuple):
        for item in value.values() if isinstance(value, dict) else value:
            yield from secret_texts(item)
    text = str(value)
    if len(text) >= MIN_DERIVED:
        yield text
