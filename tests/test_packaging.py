"""A wheel of the project carries the page's assets, the npm-installed client included: no Node.js needed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_wheel_carries_the_page_assets(tmp_path: Path):
    # setuptools builds in the source folder (build/): build from a copy, never in the repository
    source = tmp_path / "source"
    skipped = (".git", ".venv", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache", ".peers")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skipped))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("sop_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "web/assets/templates/run.html",
        "web/assets/static/app.js",
        "web/assets/vendor/socket.io.min.js",
        "web/assets/fixtures/sops/todo-add.yaml",
        "web/assets/fixtures/sites/todo.html",
        "sop_engine/runner/execution.py",
        "sop_engine/store/journal.py",
        "sop_engine/migrations/env.py",
        "sop_engine/migrations/script.py.mako",
        "sop_engine/migrations/versions/0002_creators_and_tokens.py",
        "web/app.py",
        "web/api/openapi.py",
    ):
        assert needed in names, needed
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = "from web.config import asset_dir, vendor_dir; print(asset_dir('templates')); print(vendor_dir())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(unpacked / "web" / "assets" / "templates"), str(unpacked / "web" / "assets" / "vendor")]
