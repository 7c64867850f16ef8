"""The example SOPs of real-site features (locators and frames, dialogs and tabs, downloads, browser settings) run
to completion through the command line and through the server, as a user would run them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SOPS, start_run, wait_run
from tests.demo_site import serve_demo
from tests.test_cli import cli

EXAMPLES = ["customer-ticket", "dialogs-and-tabs", "downloads", "browser-settings"]


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_demo(tmp_path_factory.mktemp("demo-root")) as base:
        yield base


@pytest.mark.parametrize("sop_id", EXAMPLES)
def test_example_runs_from_the_command_line(sop_id: str, demo_base: str, tmp_path: Path):
    done = cli("run", str(SOPS / f"{sop_id}.yaml"), "--base-url", demo_base, "--json", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = json.loads(done.stdout)["outputs"]
    assert outputs and all(value is not None for value in outputs.values()), outputs


@pytest.mark.parametrize("sop_id", EXAMPLES)
def test_example_runs_in_the_server(sop_id: str, api):
    run = wait_run(api, start_run(api, sop_id), "completed", timeout=90)
    assert run["outputs"] and all(value is not None for value in run["outputs"].values()), run["outputs"]
