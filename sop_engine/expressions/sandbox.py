"""The one Jinja2 environment: sandboxed, undefined names are errors, every operator, call, filter and global
bounded; `~` goes through `concat` so that it is bounded too."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from .budget import charge, current_budget, refuse_size, size_of
from .errors import ExpressionError
from .filters import bounded_filter, fromjson
from .methods import arg, check_join, check_str_method
from .operators import SEQUENCE, check_percent, check_power, check_product, check_sum, latin


def _range(*args: int) -> range:
    numbers = range(*args)
    limit = current_budget().max_range
    try:
        too_many = len(numbers) > limit
    except OverflowError:  # more items than a C integer holds
        too_many = True
    if too_many:
        raise ExpressionError(f"range() of more than {limit} items is refused")
    return numbers


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 - Jinja's names
    limit = current_budget().max_output
    if n * max * 12 > limit:
        raise ExpressionError(f"lipsum() of more than {limit} characters is refused")
    return generate_lorem_ipsum(n, html, min, max)


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:  # noqa: N802 - Jinja's visitor name
        self.write("environment.concat((")
        for item in node.nodes:
            self.visit(item, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = current_budget()
        if operator == "**":
            check_power(left, right)
        elif operator == "*":
            check_product(left, right, budget)
        elif operator == "+":
            check_sum(left, right, budget)
        elif isinstance(left, str | bytes | bytearray):
            check_percent(latin(left), right, budget)
        return charge(self.binop_table[operator](left, right), budget, f"the result of '{operator}'")

    def concat(self, parts: tuple[Any, ...]) -> str:
        budget = current_budget()
        refuse_size(sum(size_of(part, budget) for part in parts), budget, "'~'")
        return charge(str_join(parts), budget, "the result of '~'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        budget = current_budget()
        for given in (*args, *kwargs.values()):
            refuse_size(size_of(given, budget), budget, "a value given to a call")
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", None)
        if isinstance(owner, str | bytes | bytearray) and isinstance(name, str):
            if name == "join" and args and not isinstance(args[0], SEQUENCE):
                args = (list(args[0]), *args[1:])
            if name == "join" and args:
                check_join(list(args[0]), owner, budget)
            check_str_method(latin(owner), name, tuple(latin(a) for a in args), kwargs, budget)
        elif isinstance(owner, int) and name == "to_bytes":
            length = arg(args, kwargs, 0, "length", 1)
            if isinstance(length, int) and length > budget.max_output:
                raise ExpressionError(f"int.to_bytes() of more than {budget.max_output} bytes is refused")
        return charge(super().call(__context, __obj, *args, **kwargs), budget, "the result of a call")


def _finalize(value: Any) -> Any:
    """Every `{{ value }}` written into text: a list or dict is measured before it becomes text."""
    if isinstance(value, list | tuple | dict | set | frozenset):
        budget = current_budget()
        refuse_size(size_of(value, budget), budget, "a value written into the template's output")
    return value


env = _Sandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, optimized=False, finalize=_finalize
)
env.filters["fromjson"] = fromjson
env.filters = {name: bounded_filter(name, func) for name, func in env.filters.items()}
env.globals.update(range=_range, lipsum=_lipsum)
LONE = re.compile(r"^\s*\{\{((?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)  # a lone `{{ expr }}` keeps its native type
BUILTINS = frozenset(env.globals)
