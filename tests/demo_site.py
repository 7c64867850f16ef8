"""The fixture pages under /demo/, where `sop-engine serve` has them: the base URL the example SOPs' relative
URLs (`/demo/todo.html`) resolve against outside the server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sop_engine.static_site import serve_folder
from tests.conftest import SITES


@contextmanager
def serve_demo(root: Path) -> Iterator[str]:
    """Serves SITES as `root`/demo (a link: nothing is copied); yields the base URL, without a final slash."""
    (root / "demo").symlink_to(SITES, target_is_directory=True)
    with serve_folder(root) as url:
        yield url.rstrip("/")
