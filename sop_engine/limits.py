"""Bounded parsing: YAML and JSON from people and pages are refused, with a clear error, when they nest too deep
or expand to too many values, before Python recurses or allocates for them. Limits come from settings:
`yaml_max_depth`, `yaml_max_nodes` and, for the text an already-parsed value holds, `template_max_output`."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from . import settings
from .text import clean, has_unencodable


class ParseError(ValueError):
    """Text that is not valid YAML or JSON; `where` is "line 3, column 5" when known, else "document"."""

    def __init__(self, message: str, where: str = "document") -> None:
        self.where = where
        super().__init__(message)


class LimitError(ValueError):
    """Text or a value over one of the size limits; the message names the limit."""


def too_deep(limit: int, what: str = "the document") -> LimitError:
    return LimitError(f"{what} nests deeper than {limit} levels")


def too_many(limit: int, what: str = "the document") -> LimitError:
    return LimitError(f"{what} expands to more than {limit} values (aliases count every time they are used)")


# YAML ---------------------------------------------------------------------------------------------


try:  # libyaml scans and parses in C, some ten times quicker; composing stays in Python, where it is bounded
    from yaml.cyaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None

if _CParser is not None:

    class _Loader(Composer, _CParser, SafeConstructor, Resolver):
        def __init__(self, text: str) -> None:
            _CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover
    _Loader = yaml.SafeLoader  # type: ignore[misc,assignment]


class _BoundedLoader(_Loader):  # type: ignore[misc,valid-type]
    """Counts nesting and values while composing, so deep text is refused long before Python's recursion
    limit, and long text as soon as it holds too many values."""

    max_depth = 64
    max_nodes = 10_000

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._nodes = 0

    def _counted(self) -> None:
        self._nodes += 1
        if self._nodes > self.max_nodes:
            raise too_many(self.max_nodes)

    def _nested(self, compose: Any, anchor: Any) -> Node:
        self._counted()
        self._depth += 1
        if self._depth > self.max_depth:
            raise too_deep(self.max_depth)
        try:
            return compose(anchor)
        finally:
            self._depth -= 1

    def compose_scalar_node(self, anchor: Any) -> Node:
        self._counted()
        return super().compose_scalar_node(anchor)

    def compose_sequence_node(self, anchor: Any) -> Node:
        return self._nested(super().compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor: Any) -> Node:
        return self._nested(super().compose_mapping_node, anchor)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expanded(root: Node, max_depth: int, max_nodes: int) -> None:
    """Values and depth of the document once every alias is replaced by what it names: memoised per node,
    so linear in the nodes written, and without recursion (aliases can chain far deeper than the text nests)."""
    counts: dict[int, int] = {}
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            counts[key] = 1 + sum(counts[id(k)] for k in kids)
            nested = isinstance(node, SequenceNode | MappingNode)
            depths[key] = 1 + max((depths[id(k)] for k in kids), default=0) if nested else 0
            open_nodes.discard(key)
            if counts[key] > max_nodes:
                raise too_many(max_nodes)
            if depths[key] > max_depth:
                raise too_deep(max_depth)
            continue
        if key in counts:
            continue
        if key in open_nodes:
            raise LimitError("the document refers to itself through an alias")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node))


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"


def load_yaml(text: str) -> Any:
    """YAML (and so JSON) text as Python values. Raises LimitError over yaml_max_depth levels or
    yaml_max_nodes values after alias expansion, ParseError for text that is not YAML."""
    limits = settings.current()
    if (bad := has_unencodable(text, "the document")) is not None:
        raise ParseError(bad)
    loader = None
    try:
        loader = _BoundedLoader(text)  # reading starts here: a control character is refused at once
        loader.max_depth, loader.max_nodes = limits.yaml_max_depth, limits.yaml_max_nodes
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node, limits.yaml_max_depth, limits.yaml_max_nodes)
        value = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ParseError(f"not valid YAML or JSON: {getattr(exc, 'problem', None) or exc}", _where(exc)) from None
    except LimitError:
        raise
    except (ValueError, OverflowError, TypeError) as exc:  # a constructor refusing a value: int digits, dates
        raise ParseError(f"not valid YAML or JSON: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if (bad := has_unencodable(value, "the document")) is not None:
        raise ParseError(bad)
    return value


# JSON ---------------------------------------------------------------------------------------------

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep a JSON text's brackets nest, strings left out; without parsing or recursing."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise ParseError(f"not valid JSON: {name} is not a JSON value")


def load_json(text: str, what: str = "the document", *, mend: bool = False) -> Any:
    """JSON text as Python values. Raises LimitError over yaml_max_depth levels (checked before parsing),
    ParseError for text that is not JSON, for NaN and Infinity, and for lone surrogates (text with no UTF-8 form);
    with `mend` (text a page wrote), a lone surrogate becomes U+FFFD instead."""
    limit = settings.current().yaml_max_depth
    if json_depth(text) > limit:
        raise too_deep(limit, what)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not valid JSON: {exc}", f"line {exc.lineno}, column {exc.colno}") from None
    except ParseError:
        raise
    except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits
        raise ParseError(f"not valid JSON: {exc}") from None
    if mend:
        return clean(value)
    if (bad := has_unencodable(value, what)) is not None:
        raise ParseError(bad)
    return value


# values -------------------------------------------------------------------------------------------


def check_value(value: Any, what: str = "the value", *, max_nodes: int | None = None) -> None:
    """Refuse (LimitError) a parsed value nesting deeper than yaml_max_depth, holding more than yaml_max_nodes
    values (or `max_nodes`), or more than template_max_output characters of text, keys included. Without
    recursion; a value that contains itself counts as too deep."""
    limits = settings.current()
    max_depth, max_chars = limits.yaml_max_depth, limits.template_max_output
    max_nodes = limits.yaml_max_nodes if max_nodes is None else max_nodes
    nodes = chars = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise LimitError(f"{what} holds more than {max_nodes} values")
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict | list | tuple):
            if depth + 1 > max_depth:
                raise too_deep(max_depth, what)
            if isinstance(item, dict):
                chars += sum(len(k) for k in item if isinstance(k, str))
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        if chars > max_chars:
            raise LimitError(f"{what} holds more than {max_chars} characters of text")
