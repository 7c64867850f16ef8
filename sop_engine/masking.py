"""Secret values never leave the engine in clear: every outgoing text passes through a Masker."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"


class Masker:
    """Replaces every occurrence of a secret value, in any nested str/list/dict, with `***`."""

    def __init__(self, secrets: list[Any] | None = None) -> None:
        self._secrets: list[str] = []
        for secret in secrets or []:
            self.add(secret)

    def add(self, secret: Any) -> None:
        """A secret; also learnt during a run (a person typed it into a form). The forms it takes in URLs
        and in JSON are secrets too, and so is every value inside a secret list or dict."""
        values = set(self._secrets)
        for leaf in _leaves(secret):
            values |= {leaf, quote(leaf, safe=""), quote_plus(leaf), json.dumps(leaf)[1:-1]}
        values.discard("")
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted(values, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def __call__(self, value: Any) -> Any:
        if not self._secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self(k): self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in self._secrets:
            return MASK
        return value


def _leaves(value: Any) -> list[str]:
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)] + [str(value)]
    if isinstance(value, list | tuple):
        return [leaf for v in value for leaf in _leaves(v)] + [str(value)]
    return [str(value)]
