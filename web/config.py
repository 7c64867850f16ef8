"""Server settings, with the embedded defaults `make run` uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout; a wheel carries its assets in web/assets
_PACKED = Path(__file__).resolve().parent / "assets"


def asset_dir(name: str) -> Path:
    """templates/, static/, fixtures/: beside the package in a checkout, inside it in a wheel."""
    packed = _PACKED / name
    return packed if packed.exists() else ROOT / name


def vendor_dir() -> Path | None:
    """Where the page's third-party JavaScript is: installed by npm, or packed into the wheel."""
    for folder in (_PACKED / "vendor", ROOT / "node_modules" / "socket.io-client" / "dist"):
        if (folder / "socket.io.min.js").exists():
            return folder
    return None


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    concurrency: int = 4
    headed: bool = False
    examples: Path | None = field(default_factory=lambda: asset_dir("fixtures") / "sops")
    sites: Path | None = field(default_factory=lambda: asset_dir("fixtures") / "sites")

    @property
    def base_url(self) -> str:
        return f"http://{_bracketed(self.host)}:{self.port}"

    @property
    def local_url(self) -> str:
        """Where this machine reaches the server: its runs resolve relative URLs (`/demo/todo.html`) here, so
        they work on any port, behind any proxy (the egress proxy refuses a TLS tunnel to the server's own
        public origin: it cannot see the path)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{_bracketed(host)}:{self.port}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
