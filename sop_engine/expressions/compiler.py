"""Parsing and compiling templates, cached: refused tags, and whether a template is watched by the deadline."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, nodes

from .errors import ExpressionError, first_line, shown
from .marks import CACHED_SOURCE
from .sandbox import LONE, env

_ONLY_READS = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Const)
_REFUSED_TAGS = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}


def parse(source: str) -> tuple[nodes.Template, bool]:
    """The template's tree, and whether it does more than read names (loops, and also filters, calls,
    operators and tests, since a few thousand of them over a large list take as long as a loop)."""
    try:
        tree = env.parse(source)
    except (TemplateError, RecursionError, ValueError) as exc:  # ValueError: an integer of over 4300 digits
        raise ExpressionError(f"template {shown(source)} does not parse: {first_line(exc)}") from None
    watched = False
    for node in tree.find_all(nodes.Node):
        tag = _REFUSED_TAGS.get(type(node))
        if tag is not None:
            raise ExpressionError(f"template {shown(source)} uses {{% {tag} %}}, which SOP templates do not allow")
        watched = watched or not isinstance(node, _ONLY_READS)
    return tree, watched


def _compile(source: str) -> tuple[Any, bool]:
    """The compiled template and whether it is watched; a lone `{{ expr }}` compiles to an expression."""
    lone = LONE.match(source)
    tree, watched = parse(source)
    try:
        if lone:
            return env.compile_expression(lone.group(1), undefined_to_none=False), watched
        return env.from_string(tree), watched
    except (TemplateError, RecursionError) as exc:
        raise ExpressionError(f"template {shown(source)} does not parse: {first_line(exc)}") from None


_compile_cached = lru_cache(maxsize=2048)(_compile)


def compiled(source: str) -> tuple[Any, bool]:
    return _compile_cached(source) if len(source) <= CACHED_SOURCE else _compile(source)
