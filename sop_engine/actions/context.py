"""What an executor may use while it runs: the tab, the time it has, a place for files, an HTTP client."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx
from playwright.async_api import Page


class ActionContext(Protocol):
    timeout: float  # seconds this attempt has
    base_dir: Path  # relative file paths (uploads) resolve here
    variables: dict[str, Any]  # the step's declared inputs

    async def page(self) -> Page: ...

    def artifact(self, name: str) -> Path: ...

    def http_client(self) -> httpx.AsyncClient: ...

    async def log(self, message: str, level: str = "info") -> None: ...
