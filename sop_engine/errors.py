"""Classified step errors: what went wrong, where, and whether another attempt can help."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"  # the step ran out of time
    ELEMENT_NOT_FOUND = "element_not_found"  # the selector matched nothing in time
    NAVIGATION = "navigation"  # the page could not be loaded
    BROWSER = "browser"  # the browser, context or page went away
    HTTP = "http"  # an http step's request failed
    ASSERTION = "assertion"  # the page or data was not as expected: final
    TEMPLATE = "template"  # a template failed to render: final
    ACTION = "action"  # the action itself refused (bad file path, bad script): final
    INTERRUPTED = "interrupted"  # the run was cancelled or timed out while the step ran
    POLICY = "policy"  # the network policy refused a URL, a host or an address: final
    CIRCUIT = "circuit"  # the target host's circuit breaker is open: another attempt after its cool-down


RETRYABLE = frozenset(
    {
        ErrorKind.TIMEOUT,
        ErrorKind.ELEMENT_NOT_FOUND,
        ErrorKind.NAVIGATION,
        ErrorKind.BROWSER,
        ErrorKind.HTTP,
        ErrorKind.CIRCUIT,
    }
)


# how Playwright says the browser, a context or a page is gone
BROWSER_GONE = ("has been closed", "Target closed", "Browser closed", "Connection closed", "browser has disconnected")


class StepError(Exception):
    """A step's failure, readable on its own: which step, which selector, what URL, expected vs found."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        selector: str | None = None,
        url: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.selector = selector
        self.url = url
        self.expected = expected
        self.found = found

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def describe(self) -> str:
        """The message with the page's URL, when the message does not say it already."""
        if self.url and self.url not in self.message:
            return f"{self.message} (page: {self.url})"
        return self.message

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind.value, "message": self.describe(), "retryable": self.retryable}
        for field in ("selector", "url", "expected", "found"):
            value = getattr(self, field)
            if value is not None:
                data[field] = value
        return data


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, StepError) and exc.retryable
