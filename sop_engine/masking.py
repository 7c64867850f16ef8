"""Secret values never leave the engine in clear: every outgoing text passes through a Masker."""

from __future__ import annotations

from typing import Any

MASK = "***"


class Masker:
    """Replaces every occurrence of a secret value, in any nested str/list/dict, with `***`."""

    def __init__(self, secrets: list[Any] | None = None) -> None:
        values = {str(s) for s in (secrets or []) if s is not None and str(s) != ""}
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted(values, key=len, reverse=True)

    def add(self, secret: Any) -> None:
        """A secret learnt during the run (a person typed it into a form)."""
        if secret is not None and str(secret) != "" and str(secret) not in self._secrets:
            self._secrets = sorted([*self._secrets, str(secret)], key=len, reverse=True)

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
