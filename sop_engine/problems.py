"""A problem found in a document or its inputs, with where it is."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document, with where it is."""

    where: str  # "step 'type' (steps[1].steps[0]), field 'value'" or "inputs.items"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}
