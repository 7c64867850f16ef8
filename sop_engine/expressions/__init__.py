"""Templates: sandboxed Jinja2, undefined names are errors, a lone `{{ expr }}` keeps its native type.

A hostile template gets an ExpressionError naming the limit, never a frozen process or a blown-up memory:
nothing is evaluated while a document is checked (no constant folding); `**` and `*` refuse results over
TEMPLATE_MAX_BITS or template_max_output characters; range() stops at template_max_range items; filters and
str methods that widen text are checked before they run; a render's output stops at template_max_output
characters; a template that does more than read names (a loop, a filter, a call, an operator) is stopped
after TEMPLATE_MAX_SECONDS; macros, calls, blocks, includes and imports are refused when a template is
compiled."""

from __future__ import annotations

from .deadline import OutOfTime, within_deadline
from .errors import ExpressionError
from .json_values import to_json_value
from .marks import is_template
from .names import names_in, names_in_condition
from .rendering import evaluate_condition, is_light, render

# The limits (TEMPLATE_MAX_SECONDS in rendering, TEMPLATE_MAX_BITS in operators, TEMPLATE_MAX_BUILT in budget)
# are not re-exported: each is read from its own module at each use, so that is where a test patches it.
__all__ = [
    "ExpressionError",
    "OutOfTime",
    "evaluate_condition",
    "is_light",
    "is_template",
    "names_in",
    "names_in_condition",
    "render",
    "to_json_value",
    "within_deadline",
]
