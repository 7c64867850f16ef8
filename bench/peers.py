"""The peer runners, installed by the harness itself into bench/.peers (ignored by git)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"
PACKAGES = {"selenium-side-runner": "^4.0.13", "@puppeteer/replay": "^3.1.3", "puppeteer-core": "^25.0.0"}


def install(allowed: bool = True) -> tuple[Path | None, str]:
    """The folder with the peers' node_modules, or None and why not."""
    ready = all((PEERS / "node_modules" / name / "package.json").exists() for name in PACKAGES)
    if ready:
        return PEERS, "installed"
    if not allowed:
        return None, "not installed (the smoke run does not install them)"
    if shutil.which("npm") is None:
        return None, "npm is not on PATH"
    PEERS.mkdir(exist_ok=True)
    (PEERS / "package.json").write_text(json.dumps({"private": True, "dependencies": PACKAGES}, indent=2))
    try:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=PEERS,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return None, f"npm install failed: {detail.decode(errors='replace').strip()[-300:]}"
    return PEERS, "installed"


def chromedriver(allowed: bool = True) -> tuple[str | None, str]:
    """The system's chromedriver (Debian's chromium-driver package, installed when root and apt is there)."""
    found = shutil.which("chromedriver")
    if found:
        return found, found
    if allowed and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium-driver"], env=env, capture_output=True, timeout=600
        )
        found = shutil.which("chromedriver")
        if found:
            return found, found
    return None, "no chromedriver (install Debian's chromium-driver, or put one on PATH)"
