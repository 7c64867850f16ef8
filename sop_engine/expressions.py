"""Templates: sandboxed Jinja2, undefined names are errors, a lone `{{ expr }}` keeps its native type.

A hostile template gets an ExpressionError naming the limit, never a frozen process or a blown-up memory:
nothing is evaluated while a document is checked (no constant folding); `**` and `*` refuse results over
TEMPLATE_MAX_BITS or template_max_output characters; range() stops at template_max_range items; filters and
str methods that widen text are checked before they run; a render's output stops at template_max_output
characters; a template that does more than read names (a loop, a filter, a call, an operator) is stopped
after TEMPLATE_MAX_SECONDS; macros, calls, blocks, includes and imports are refused when a template is
compiled."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import queue
import re
import string
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any, TypeVar

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, generate_lorem_ipsum

from . import settings
from .limits import LimitError, ParseError, load_json

TEMPLATE_MAX_SECONDS = 1.0  # a template that does more than read names is stopped after this long
TEMPLATE_MAX_BITS = 10_000  # the largest integer '**' and '*' may give (about 3000 digits)
TEMPLATE_MAX_BUILT = 16  # a render may build this many times template_max_output characters in all
_ONLY_READS = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Const)
_CACHED_SOURCE = 2_000  # longer templates are compiled each time: a cache of large ones would hold much memory
_REFUSED_TAGS = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}
T = TypeVar("T")


class ExpressionError(ValueError):
    """A template that does not parse, or that fails when rendered (a limit's message names the limit)."""


# the size of what a render builds ----------------------------------------------------------------


class _Budget:
    """One render's limits and what it has built so far; sizes of containers already measured, by id."""

    def __init__(self) -> None:
        limits = settings.current()
        self.max_output = limits.template_max_output
        self.max_range = limits.template_max_range
        self.built = 0
        self.sizes: dict[int, tuple[Any, int]] = {}  # the value is kept so its id is not reused


_local = threading.local()


def _budget() -> _Budget:
    budget = getattr(_local, "budget", None)
    if budget is None:
        budget = _local.budget = _Budget()
    return budget


def _size(value: Any, budget: _Budget, remember: bool = True) -> int:
    """About how many characters a value takes as text; counting stops once over max_output. A list or dict
    measured is remembered (and kept) until the render ends: templates pass the same ones again and again."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if not isinstance(value, list | tuple | dict | set | frozenset | range):
        return value.bit_length() // 3 + 1 if isinstance(value, int) else 1
    known = budget.sizes.get(id(value))
    if known is not None and known[0] is value:
        return known[1]
    total, stack = 0, [value]
    while stack and total <= budget.max_output:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += len(item) + 2
        elif isinstance(item, range):
            total += 2 * len(item)
        elif isinstance(item, list | tuple | dict | set | frozenset):
            total += 2 * len(item) + 2
            if total <= budget.max_output:
                stack.extend(item)
                stack.extend(item.values() if isinstance(item, dict) else ())
        else:
            total += item.bit_length() // 3 + 1 if isinstance(item, int) else 1
    if remember:
        budget.sizes[id(value)] = (value, total)
    return total


def _refuse_size(size: int, budget: _Budget, what: str) -> None:
    if size > budget.max_output:
        raise ExpressionError(f"{what} of more than {budget.max_output} characters is refused")


def _charge(result: Any, budget: _Budget, what: str = "a value") -> Any:
    if isinstance(result, str | bytes | bytearray | list | tuple | dict):
        size = _size(result, budget, remember=False)
        _refuse_size(size, budget, what)
        budget.built += size
        if budget.built > TEMPLATE_MAX_BUILT * budget.max_output:
            raise ExpressionError(f"the template built more than {TEMPLATE_MAX_BUILT * budget.max_output} characters")
    return result


# operators ----------------------------------------------------------------------------------------

_SEQUENCE = (str, bytes, bytearray, list, tuple)


def _latin(value: Any) -> Any:
    """Bytes as text of the same length, so the checks for text apply to them."""
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else value


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_widths(widths: list[str], starred: bool, values: Any, budget: _Budget) -> None:
    """Refuse a format whose widths, or the numbers that stand in for `*` or `{n}` widths, pass max_output."""
    if any(len(w) > 12 or int(w) > budget.max_output for w in widths if w.isdigit()):
        raise ExpressionError(f"a format wider than {budget.max_output} characters is refused")
    if starred:
        flat = values.values() if isinstance(values, dict) else values if isinstance(values, tuple | list) else [values]
        numbers = (str(v) for v in flat if isinstance(v, int | str))
        if any(len(n) > 12 or int(n) > budget.max_output for v in numbers for n in re.findall(r"\d+", v)):
            raise ExpressionError(f"a format wider than {budget.max_output} characters is refused")


def _check_percent(text: str, values: Any, budget: _Budget) -> None:
    found = _PERCENT.findall(text)
    _check_widths([w for pair in found for w in pair], any("*" in pair for pair in found), values, budget)
    for value in values.values() if isinstance(values, dict) else values if isinstance(values, tuple) else [values]:
        _refuse_size(_size(value, budget), budget, "a value formatted into text")


def _check_format(text: str, args: tuple[Any, ...], kwargs: dict[str, Any], budget: _Budget) -> None:
    specs = [spec for _, field, spec, _ in string.Formatter().parse(text) if field is not None and spec]
    widths = [w for spec in specs for w in re.findall(r"\d+", spec)]
    _check_widths(widths, any("{" in spec for spec in specs), [*args, *kwargs.values()], budget)


def _check_power(base: Any, exponent: Any) -> None:
    if not (isinstance(base, int) and isinstance(exponent, int) and exponent > 1 and abs(base) > 1):
        return
    if exponent > TEMPLATE_MAX_BITS or exponent * math.log2(abs(base)) > TEMPLATE_MAX_BITS:
        raise ExpressionError(f"'**' with a result that large is refused (over {TEMPLATE_MAX_BITS} bits)")


def _check_product(left: Any, right: Any, budget: _Budget) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > TEMPLATE_MAX_BITS:
            raise ExpressionError(f"'*' with a result that large is refused (over {TEMPLATE_MAX_BITS} bits)")
        return
    sequence, times = (left, right) if isinstance(right, int) else (right, left)
    repeats = isinstance(sequence, _SEQUENCE) and isinstance(times, int) and times > 1
    if repeats and len(sequence) * times > budget.max_output:
        raise ExpressionError(f"'*' that repeats text or a list past {budget.max_output} characters is refused")


def _check_sum(left: Any, right: Any, budget: _Budget) -> None:
    joins = isinstance(left, _SEQUENCE) and isinstance(right, _SEQUENCE)
    if joins and len(left) + len(right) > budget.max_output:
        raise ExpressionError(f"'+' that joins past {budget.max_output} characters is refused")


# methods and filters that widen text --------------------------------------------------------------


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _replaced_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * (len(new) - len(old))


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], budget: _Budget) -> None:
    limit = budget.max_output
    if name in ("ljust", "rjust", "center", "zfill"):
        width = _arg(args, kwargs, 0, "width", 0)
        if isinstance(width, int) and width > limit:
            raise ExpressionError(f"str.{name}() wider than {limit} characters is refused")
    elif name == "expandtabs":
        tab = _arg(args, kwargs, 0, "tabsize", 8)
        _refuse_size(len(text) + text.count("\t") * tab if isinstance(tab, int) else 0, budget, "str.expandtabs()")
    elif name == "replace":
        size = _replaced_size(
            text, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count")
        )
        _refuse_size(size, budget, "str.replace()")
    elif name in ("format", "format_map"):
        _check_format(text, args if name == "format" else (), kwargs if name == "format" else args[0], budget)


def _check_join(items: list[Any], separator: Any, budget: _Budget) -> None:
    gaps = len(separator) * max(len(items) - 1, 0) if isinstance(separator, str | bytes | bytearray) else 0
    total = gaps
    for item in items:
        total += _size(item, budget)
        if total > budget.max_output:
            break
    _refuse_size(total, budget, "join()")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: _Budget) -> None:
    limit, text = budget.max_output, _text(value)
    for given in (value, *args, *kwargs.values()):
        _refuse_size(_size(given, budget), budget, f"a value given to '{name}'")
    if name == "center" and isinstance(width := _arg(args, kwargs, 0, "width", 80), int) and width > limit:
        raise ExpressionError(f"center wider than {limit} characters is refused")
    elif name == "indent":
        width = _arg(args, kwargs, 0, "width", 4)
        wide = width if isinstance(width, int) else len(str(width))
        _refuse_size(len(text) + wide * (text.count("\n") + 1), budget, "indent")
    elif name == "wordwrap":
        width, wrap = _arg(args, kwargs, 0, "width", 79), _arg(args, kwargs, 2, "wrapstring") or "\n"
        breaks = len(text) // max(width, 1) + len(re.findall(r"\s+|-", text)) + 1 if isinstance(width, int) else 0
        _refuse_size(len(text) + breaks * len(str(wrap)), budget, "wordwrap")
    elif name == "replace":
        size = _replaced_size(
            text, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count")
        )
        _refuse_size(size, budget, "replace")
    elif name == "format" and isinstance(value, str):
        _check_percent(value, kwargs or args, budget)
    elif name == "tojson" and isinstance(indent := _arg(args, kwargs, 0, "indent"), int):
        _refuse_size(indent * _size(value, budget), budget, "tojson")
    elif name in ("batch", "slice"):
        count = _arg(args, kwargs, 0, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > limit:
            raise ExpressionError(f"{name} of more than {limit} items is refused")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, checked before it runs and after; marked as wanting the context, so that Jinja never calls it
    while compiling a template (no constant folding)."""
    passes = _PassArg.from_obj(func)

    @pass_context
    def bounded(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        if name == "join" and not isinstance(value, str | list | tuple | dict):
            value = list(value)
        if name == "join" and isinstance(value, list | tuple):
            _check_join(list(value), _arg(args, kwargs, 0, "d", ""), budget)
        _check_filter(name, value, args, kwargs, budget)
        if passes is _PassArg.context:
            result = func(context, value, *args, **kwargs)
        elif passes is _PassArg.eval_context:
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif passes is _PassArg.environment:
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return _charge(result, budget, f"the result of '{name}'")

    return bounded


def _range(*args: int) -> range:
    numbers = range(*args)
    limit = _budget().max_range
    try:
        too_many = len(numbers) > limit
    except OverflowError:  # more items than a C integer holds
        too_many = True
    if too_many:
        raise ExpressionError(f"range() of more than {limit} items is refused")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    limit = _budget().max_output
    if n * max * 12 > limit:
        raise ExpressionError(f"lipsum() of more than {limit} characters is refused")
    return generate_lorem_ipsum(n, html, min, max)


def _fromjson(text: str) -> Any:
    try:
        return load_json(text, "the JSON text")
    except (ParseError, LimitError) as exc:
        raise ExpressionError(str(exc)) from None


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:  # noqa: N802 - Jinja's visitor name
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        if operator == "**":
            _check_power(left, right)
        elif operator == "*":
            _check_product(left, right, budget)
        elif operator == "+":
            _check_sum(left, right, budget)
        elif isinstance(left, str | bytes | bytearray):
            _check_percent(_latin(left), right, budget)
        return _charge(self.binop_table[operator](left, right), budget, f"the result of '{operator}'")

    def concat(self, parts: tuple[Any, ...]) -> str:
        budget = _budget()
        _refuse_size(sum(_size(part, budget) for part in parts), budget, "'~'")
        return _charge(str_join(parts), budget, "the result of '~'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        budget = _budget()
        for given in (*args, *kwargs.values()):
            _refuse_size(_size(given, budget), budget, "a value given to a call")
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", None)
        if isinstance(owner, str | bytes | bytearray) and isinstance(name, str):
            if name == "join" and args and not isinstance(args[0], _SEQUENCE):
                args = (list(args[0]), *args[1:])
            if name == "join" and args:
                _check_join(list(args[0]), owner, budget)
            _check_str_method(_latin(owner), name, tuple(_latin(a) for a in args), kwargs, budget)
        elif isinstance(owner, int) and name == "to_bytes":
            length = _arg(args, kwargs, 0, "length", 1)
            if isinstance(length, int) and length > budget.max_output:
                raise ExpressionError(f"int.to_bytes() of more than {budget.max_output} bytes is refused")
        return _charge(super().call(__context, __obj, *args, **kwargs), budget, "the result of a call")


def _finalize(value: Any) -> Any:
    """Every `{{ value }}` written into text: a list or dict is measured before it becomes text."""
    if isinstance(value, list | tuple | dict | set | frozenset):
        budget = _budget()
        _refuse_size(_size(value, budget), budget, "a value written into the template's output")
    return value


_env = _Sandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, optimized=False, finalize=_finalize
)
_env.filters["fromjson"] = _fromjson
_env.filters = {name: _bounded_filter(name, func) for name, func in _env.filters.items()}
_env.globals.update(range=_range, lipsum=_lipsum)
_LONE = re.compile(r"^\s*\{\{((?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)
_BUILTINS = frozenset(_env.globals)


# time: one watchdog thread for every render that does more than read names -------------------------------------------


class _TookTooLong(BaseException):
    """Raised inside a rendering thread by the watchdog (a BaseException, so no `except Exception` in Jinja
    swallows it); never leaves `within_deadline`."""


def _set_async(thread_id: int, exc: type[BaseException] | None) -> None:
    # None is passed as NULL: it clears a pending exception
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


REFIRE_SECONDS = 0.2  # an exception that landed where Python ignores it (a GC callback) is raised again
MOST_FIRES = 10


class _Watchdog:
    """Holds {thread id: deadline}; when a deadline passes while its render is still registered, raises
    _TookTooLong in that thread, and again every REFIRE_SECONDS (at most MOST_FIRES times) while it stays
    registered: an exception delivered inside a weakref or GC callback is only printed, not raised.
    Deciding and raising happen under the lock that unregistering takes, so no exception is set after a
    render has left; one set just before is cleared on the way out.

    A rendering thread touches only primitives written in C (a Lock, a SimpleQueue): an exception raised
    inside Python-level code such as Condition.__enter__ could leave a lock held for ever."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._deadlines: dict[int, float] = {}
        self._fired: set[int] = set()
        self._fires: dict[int, int] = {}
        self._wake_at: float | None = None  # None while the thread waits for work
        self._thread: threading.Thread | None = None

    def register(self, thread_id: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="template-watchdog", daemon=True)
                self._thread.start()
            self._deadlines[thread_id] = deadline
            if self._wake_at is None or deadline < self._wake_at:
                self._wake.put(None)

    def watching(self, thread_id: int) -> bool:
        return thread_id in self._deadlines or thread_id in self._fired

    def release(self, thread_id: int) -> None:
        """Unregister; raises _TookTooLong if the deadline fired, even while releasing."""
        fired = False
        while True:
            try:
                with self._lock:
                    self._deadlines.pop(thread_id, None)
                    self._fires.pop(thread_id, None)
                    fired = fired or thread_id in self._fired
                    self._fired.discard(thread_id)
                _set_async(thread_id, None)
                break
            except _TookTooLong:  # delivered here rather than in the render; it fires once
                fired = True
        if fired:
            raise _TookTooLong

    def _watch(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for thread_id, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        fires = self._fires[thread_id] = self._fires.get(thread_id, 0) + 1
                        if fires < MOST_FIRES:
                            self._deadlines[thread_id] = now + REFIRE_SECONDS
                        else:
                            del self._deadlines[thread_id]
                        self._fired.add(thread_id)
                        _set_async(thread_id, _TookTooLong)
                self._wake_at = min(self._deadlines.values(), default=None)
                wait = None if self._wake_at is None else self._wake_at - now
            with contextlib.suppress(queue.Empty):
                self._wake.get(timeout=wait)


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog.__init__)


class OutOfTime(ExpressionError):
    """Work run by within_deadline that passed its deadline."""


def within_deadline(run: Callable[[], T], seconds: float, what: str = "it") -> T:
    """`run()` in this thread, stopped with OutOfTime ("<what> took longer than <seconds> s") once its
    deadline passes, wherever it is in Python code; no thread hop, about 10 µs. Inside another deadline of
    the same thread, the outer one governs."""
    thread_id = threading.get_ident()
    if _watchdog.watching(thread_id):
        return run()
    try:
        try:
            _watchdog.register(thread_id, seconds)
            return run()
        finally:
            _watchdog.release(thread_id)
    except _TookTooLong:
        # it may have landed between run() and release(): make sure nothing is left registered to fire again
        with contextlib.suppress(_TookTooLong):
            _watchdog.release(thread_id)
        raise OutOfTime(f"{what} took longer than {seconds:g} s") from None


# compiling ----------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it nests too deeply"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _shown(source: str) -> str:
    return repr(source if len(source) <= 200 else source[:200] + "…")


def _parse(source: str) -> tuple[nodes.Template, bool]:
    """The template's tree, and whether it does more than read names (loops, and also filters, calls,
    operators and tests, since a few thousand of them over a large list take as long as a loop)."""
    try:
        tree = _env.parse(source)
    except (TemplateError, RecursionError, ValueError) as exc:  # ValueError: an integer of over 4300 digits
        raise ExpressionError(f"template {_shown(source)} does not parse: {_first_line(exc)}") from None
    watched = False
    for node in tree.find_all(nodes.Node):
        tag = _REFUSED_TAGS.get(type(node))
        if tag is not None:
            raise ExpressionError(f"template {_shown(source)} uses {{% {tag} %}}, which SOP templates do not allow")
        watched = watched or not isinstance(node, _ONLY_READS)
    return tree, watched


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _compile(source: str) -> tuple[Any, bool]:
    """The compiled template and whether it is watched; a lone `{{ expr }}` compiles to an expression."""
    lone = _LONE.match(source)
    tree, watched = _parse(source)
    try:
        if lone:
            return _env.compile_expression(lone.group(1), undefined_to_none=False), watched
        return _env.from_string(tree), watched
    except (TemplateError, RecursionError) as exc:
        raise ExpressionError(f"template {_shown(source)} does not parse: {_first_line(exc)}") from None


_compile_cached = lru_cache(maxsize=2048)(_compile)


def _compiled(source: str) -> tuple[Any, bool]:
    return _compile_cached(source) if len(source) <= _CACHED_SOURCE else _compile(source)


def is_light(value: Any, condition: bool = False) -> bool:
    """True when rendering `value` only reads names (`{{ x }}`, `{{ a.b }}`): cheap enough for an event loop.
    A template with a loop, filter, call, operator or test may take up to TEMPLATE_MAX_SECONDS, and is
    rendered in a thread by async callers. `condition`: a bare string is an expression, as in conditions.
    A template that does not parse counts as light: rendering it fails at once."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            source = item if is_template(item) else ("{{ " + item + " }}" if condition else None)
            if source is None:
                continue
            try:
                if _compiled(source)[1]:
                    return False
            except ExpressionError:
                continue
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


def _find_names(source: str, bare: bool) -> frozenset[str]:
    text = "{{ " + source + " }}" if bare else source
    try:
        found = meta.find_undeclared_variables(_parse(text)[0])
    except (TemplateError, RecursionError) as exc:
        raise ExpressionError(f"template {_shown(source)} does not parse: {_first_line(exc)}") from None
    return frozenset(found - _BUILTINS)


_names_cached = lru_cache(maxsize=2048)(_find_names)


def _names(source: str, bare: bool) -> frozenset[str]:
    return _names_cached(source, bare) if len(source) <= _CACHED_SOURCE else _find_names(source, bare)


def names_in(value: Any) -> set[str]:
    """Every variable a value's templates read, looking into nested lists and dicts. Never evaluates."""
    if isinstance(value, str):
        return set(_names(value, False)) if is_template(value) else set()
    if isinstance(value, dict):
        return set().union(*(names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(names_in(v) for v in value)) if value else set()
    return set()


def names_in_condition(condition: Any) -> set[str]:
    if isinstance(condition, str):
        return names_in(condition) if is_template(condition) else set(_names(condition, True))
    return set()


# rendering ----------------------------------------------------------------------------------------


def to_json_value(value: Any, max_chars: int | None = None) -> Any:
    """A template's result as JSON data: tuples become lists, text subclasses (Markup) plain str. Raises
    ExpressionError for anything else (a function, a generator, an undefined value), for NaN and infinity,
    for keys that are not text, and past `max_chars` (default template_max_output) characters of text, or values.
    Integers are kept whatever their size (JSON allows them; a store may not)."""
    limit = settings.current().template_max_output if max_chars is None else max_chars
    holder: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, holder, 0)]
    items = chars = 0
    while stack:
        item, parent, key = stack.pop()
        items += 1
        chars += len(item) if isinstance(item, str) else 0
        if items > limit or chars > limit:
            raise ExpressionError(f"the template gave a value of more than {limit} characters")
        if item is None or isinstance(item, bool | int):
            parent[key] = item
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ExpressionError(f"the template gave {item}, which is not a JSON value")
            parent[key] = item
        elif isinstance(item, str):
            parent[key] = str(item)
        elif isinstance(item, list | tuple):
            parent[key] = copy = [None] * len(item)
            stack.extend((v, copy, i) for i, v in enumerate(item))
        elif isinstance(item, dict):
            bad = next((k for k in item if not isinstance(k, str)), None)
            if bad is not None:
                raise ExpressionError(f"the template gave a dict with a {type(bad).__name__} key; JSON keys are text")
            parent[key] = copy = dict.fromkeys(str(k) for k in item)
            stack.extend((v, copy, str(k)) for k, v in item.items())
        else:
            hint = " (add '| list')" if isinstance(item, Iterator) else ""
            raise ExpressionError(f"the template gave a {type(item).__name__}, which is not a JSON value{hint}")
    return holder[0]


def _describe(exc: BaseException) -> str:
    text = _first_line(exc)
    if "is undefined" in text:
        return f"{text} (declare it in the step's inputs, and make sure it has a value)"
    return text


def _render_text(template: Any, variables: dict[str, Any], budget: _Budget) -> str:
    chunks, written = [], 0
    for chunk in template.generate(variables):
        written += len(chunk)
        if written > budget.max_output:
            raise ExpressionError(f"template output is over {budget.max_output} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _render_one(source: str, variables: dict[str, Any]) -> Any:
    compiled, watched = _compiled(source)
    budget = _local.budget = _Budget()
    try:
        if _LONE.match(source):
            result = (
                within_deadline(lambda: compiled(**variables), TEMPLATE_MAX_SECONDS, "template")
                if watched
                else compiled(**variables)
            )
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            return to_json_value(result, budget.max_output)
        if watched:
            return within_deadline(lambda: _render_text(compiled, variables, budget), TEMPLATE_MAX_SECONDS, "template")
        return _render_text(compiled, variables, budget)
    except Exception as exc:  # jinja raises many types; all mean "this template failed"
        raise ExpressionError(f"template {_shown(source)} failed: {_describe(exc)}") from None
    finally:
        _local.budget = None


def render(value: Any, variables: dict[str, Any]) -> Any:
    """Render every template in a value; non-template values come back as they are. A lone `{{ expr }}` gives
    its value as JSON data (see to_json_value); any other template gives text."""
    if isinstance(value, str):
        return _render_one(value, variables) if is_template(value) else value
    if isinstance(value, dict):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables) for v in value]
    return value


def evaluate_condition(condition: str | bool, variables: dict[str, Any]) -> bool:
    """A condition is a template (`"{{ n > 2 }}"`) or a bare expression (`"n > 2"`)."""
    if isinstance(condition, bool):
        return condition
    result = render(condition if is_template(condition) else "{{ " + condition + " }}", variables)
    if isinstance(result, str):
        return result.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(result)
