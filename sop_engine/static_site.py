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
        self,
        *args: Any,
        redirects: Mapping[str, str] | None = None,
        seen: list[str] | None = None,
        prefix: str = "/",
        **kwargs: Any,
    ) -> None:
        self.redirects = redirects or {}
        self.seen = seen
        self.prefix = prefix
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
            if not self.path.startswith(self.prefix):
                self.send_error(404)
                return None
            self.path = "/" + self.path[len(self.prefix) :]
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
    prefix: str = "/",
) -> Iterator[str]:
    """Serves `folder` until the block ends; yields its base URL (ending in '/'). `redirects`: paths answered
    with a 302 to another URL; `seen`: gets the path of every request; `prefix`: the path the folder is
    served under (`/demo/`, as the server has the fixture pages), anything else is 404."""
    handler = partial(_QuietHandler, directory=str(folder), redirects=redirects, seen=seen, prefix=prefix)
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
