"""What the engine adds to a run's wall time for each browser step, and once per run, with one definition for
every part that reports it: the slope of the engine's extra time (its median less its floor's) between two sizes
of the todo flow, over the browser steps between them; the fixed part is what is left of the smaller size's extra
time at zero steps."""

from __future__ import annotations

from dataclasses import dataclass

STEADY_SHARE = 0.10  # a larger run's slope may differ from a smaller one's by this share of it...
STEADY_MS = 0.1  # ...or by this many milliseconds a step, whichever is larger: against noise, a share of a small slope
STEADY_RULE = (
    f"within {STEADY_SHARE:.0%} of the smaller sizes' slope, or within {STEADY_MS} ms a step whichever is larger "
    "(at slopes under 1 ms a share alone would be below the noise of a median)"
)


def browser_steps(n: int) -> int:
    """The browser steps of todo-N (bench/todo.yaml): a navigate, a fill and a press for each item, a check for
    every other item (the first, the third, …: ceil(N/2)) and an extract; 2.5N + 2 for an even N. The loops and
    the assert touch no page and are not counted."""
    return 1 + 2 * n + (n + 1) // 2 + 1


@dataclass(frozen=True)
class Pair:
    """Median seconds of the engine and of its floor (plain Playwright) on todo-N, from the same rounds."""

    n: int
    engine: float
    floor: float

    @property
    def extra(self) -> float:
        return self.engine - self.floor


@dataclass(frozen=True)
class Overhead:
    slope_ms: float  # wall time the engine adds per browser step
    fixed_ms: float  # wall time it adds once per run (start-up, wrap-up)
    small: Pair
    large: Pair


def overhead(small: Pair, large: Pair) -> Overhead:
    """((engine_large − floor_large) − (engine_small − floor_small)) / (steps_large − steps_small), and the
    smaller size's extra time less that slope times its steps."""
    slope = (large.extra - small.extra) / (browser_steps(large.n) - browser_steps(small.n))
    return Overhead(slope * 1000, (small.extra - slope * browser_steps(small.n)) * 1000, small, large)


def steady(first: Overhead, second: Overhead) -> bool:
    """The second (larger sizes') slope is the first's, within the rule (STEADY_RULE)."""
    allowed = max(STEADY_SHARE * abs(first.slope_ms), STEADY_MS)
    return abs(second.slope_ms - first.slope_ms) <= allowed


def figure_rows(found: Overhead, prefix: str = "") -> list[str]:
    """Rows of a `| figure | value |` table: the slope and the fixed part, each with how it was reached."""
    small, large = found.small, found.large
    return [
        f"| {prefix}wall overhead per browser step (slope todo-{small.n} → todo-{large.n}: extra time "
        f"{small.extra * 1000:.0f} → {large.extra * 1000:.0f} ms over {browser_steps(small.n)} → "
        f"{browser_steps(large.n)} browser steps) | {found.slope_ms:.3f} ms |",
        f"| {prefix}fixed overhead per run (todo-{small.n}'s extra time less {browser_steps(small.n)} steps × the "
        f"slope) | {found.fixed_ms:.0f} ms |",
    ]
