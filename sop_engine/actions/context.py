"""What an executor may use while it runs: the tab, the time it has, a place for files, an HTTP client."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..artifacts import Artifacts
from ..control import Waiting
from ..policy import NetworkPolicy

if TYPE_CHECKING:
    import httpx
    from playwright.async_api import Page


class ActionContext(Protocol):
    timeout: float  # seconds this attempt has
    base_dir: Path  # relative file paths (uploads) resolve here
    variables: dict[str, Any]  # the step's declared inputs
    policy: NetworkPolicy  # where the step may go: URLs, hosts, files to upload
    policy: NetworkPolicy  # where the step may go (the run's, narrowed by its SOP)

    async def page(self, reopen: bool = False) -> Page:
        """The step's tab; `reopen`: open it again if a step closed it (navigate)."""
        ...

    @property
    def run_id(self) -> str: ...

    @property
    def artifact_store(self) -> Artifacts: ...  # the runs' files (screenshots, downloads); it blocks: use a thread

    async def save_artifact(self, name: str, content: bytes | Path) -> str:
        """Keeps `content` (bytes, or a local file's) as one of the run's files; gives back where it is now."""
        ...

    async def artifact_copy(self, name: str) -> Path:
        """A local copy of the run's file `name` for the browser to read (an upload), kept while the run's
        browser is open; FileNotFoundError when there is no such file."""
        ...

    async def adopt_tab(self, name: str, page: Page) -> None: ...  # a page the step opened becomes a tab

    async def close_tab(self, name: str) -> bool: ...

    def http_client(self) -> httpx.AsyncClient: ...

    key: str  # the step instance's key, e.g. add[1].type

    async def log(self, message: str, level: str = "info") -> None: ...

    async def ask(self, waiting: Waiting) -> dict[str, Any]:
        """Waits for a person's answer (human steps); fails the step where no person can answer."""
        ...
