"""A quiet static file server on loopback, for the demo and for tests: `with serve_folder(path) as url`."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _QuietHandler(SimpleHTTPRequestHandler):
    def __init__(
        self, *args: Any, redirects: Mapping[str, str] | None = None, seen: list[str] | None = None, **kwargs: Any
    ) -> None:
        self.redirects = redirects or {}
        self.seen = seen
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def send_head(self) -> Any:
        if self.seen is not None:
            self.seen.append(self.path)
        target = self.redirects.get(self.path.split("?")[0])
        if target is None:
            return super().send_head()
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None


@contextmanager
def serve_folder(
    folder: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    redirects: Mapping[str, str] | None = None,
    seen: list[str] | None = None,
) -> Iterator[str]:
    """Serves `folder` until the block ends; yields its base URL (ending in '/'). `redirects`: paths answered
    with a 302 to another URL; `seen`: gets the path of every request."""
    handler = partial(_QuietHandler, directory=str(folder), redirects=redirects, seen=seen)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
