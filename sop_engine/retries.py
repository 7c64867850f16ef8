"""Retry policy of a step: how many attempts, how long to wait between them."""

from __future__ import annotations

from dataclasses import dataclass

import tenacity

from .steps import RetrySpec


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 1
    backoff: str = "fixed"  # fixed | linear | exponential
    delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.0

    @classmethod
    def from_spec(cls, spec: RetrySpec) -> RetryPolicy:
        return cls(spec.attempts, spec.backoff, spec.delay, spec.max_delay, spec.jitter)

    def wait(self) -> tenacity.wait.wait_base:
        if self.backoff == "linear":
            base: tenacity.wait.wait_base = tenacity.wait_incrementing(
                start=self.delay, increment=self.delay, max=self.max_delay
            )
        elif self.backoff == "exponential":
            base = tenacity.wait_exponential(multiplier=self.delay, max=self.max_delay)
        else:
            base = tenacity.wait_fixed(min(self.delay, self.max_delay))
        if self.jitter > 0:
            base = base + tenacity.wait_random(0, self.jitter)
        return base

    def delay_before(self, attempt: int) -> float:
        """Seconds waited before attempt number `attempt` (2 = the first retry), jitter left out."""
        if attempt <= 1:
            return 0.0
        if self.backoff == "linear":
            return min(self.delay * (attempt - 1), self.max_delay)
        if self.backoff == "exponential":
            return min(self.delay * 2 ** (attempt - 2), self.max_delay)
        return min(self.delay, self.max_delay)
