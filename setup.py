"""Packs the page's assets into the wheel (web/assets), so that installing the wheel needs no Node.js:
templates/, static/, the example SOPs and fixture pages, and the npm-installed Socket.IO client."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
VENDOR = ROOT / "node_modules" / "socket.io-client" / "dist"


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the assets from the checkout
        target = Path(self.build_lib) / "web" / "assets"
        for name in ("templates", "static", "fixtures"):
            shutil.copytree(ROOT / name, target / name, dirs_exist_ok=True)
        if not (VENDOR / "socket.io.min.js").exists():
            raise SystemExit("node_modules is missing: run `npm ci` (make setup) before building a wheel")
        (target / "vendor").mkdir(parents=True, exist_ok=True)
        for name in ("socket.io.min.js", "socket.io.min.js.map"):
            shutil.copy2(VENDOR / name, target / "vendor" / name)


setup(cmdclass={"build_py": BuildWithAssets})
