"""The benchmark harness's smoke run (tiny sizes, one run): the harness itself works end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_harness_runs_every_flow_and_writes_its_report(tmp_path: Path):
    out = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    assert "This is a smoke run" in text and "- machine: " in text and "python -m bench --smoke" in text
    for heading in ("### todo-4", "### todo-6", "### scrape", "### batch: todo-3 over 4 rows", "### engine figures"):
        assert heading in text, heading
    for target in (
        "todo-6 wall time next to plain Playwright",
        "batch throughput at concurrency 2",
        "engine overhead per step (SQLite store)",
        "faster than selenium-side-runner",
        "faster than @puppeteer/replay",
    ):
        assert target in text, target
    assert "| SOP engine | " in text and "| plain Playwright | " in text
    assert "store commits a second" in text
