"""What a run loads: a run with no browser step, started from the command line, loads neither Playwright nor
httpx, fsspec, cryptography or Jinja2 (its executors, files, vault and templates load them when a run first needs
them), nor, printing JSON, rich; the executors' table names every action each family's module runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sop_engine import actions
from sop_engine.steps import STEP_MODELS

LATE = ("playwright", "httpx", "fsspec", "cryptography", "jinja2", "rich")

# runs the command as `python -m web` does, then says which of LATE it loaded (the command's own exit skips atexit)
PROBE = """
import json, sys
from sop_engine.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
late = sorted(name for name in sys.modules if name.split(".")[0] in {late!r})
print(json.dumps({{"code": code, "late": late}}))
"""


def loaded_by_run(document: str, tmp_path: Path) -> dict:
    sop = tmp_path / "sop.yaml"
    sop.write_text(document)
    env = {**os.environ, "SOP_DATA_DIR": str(tmp_path / "data"), "NO_COLOR": "1"}
    env.pop("SOP_DATABASE_URL", None)
    probe = PROBE.format(late=set(LATE))
    done = subprocess.run(
        [sys.executable, "-c", probe, "run", str(sop), "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [line["status"] for line in lines if "run_id" in line] == ["completed"], done.stdout
    return lines[-1]


def test_a_run_without_a_browser_step_or_template_loads_none_of_the_late_libraries(tmp_path: Path):
    document = """
sop: 1
id: no-browser
steps:
  - {id: greet, action: log, message: hello}
  - {id: keep, action: set, values: {n: 1}}
  - {id: pause, action: sleep, duration: 1ms}
"""
    found = loaded_by_run(document, tmp_path)
    assert found["code"] == 0
    assert found["late"] == [], f"a run with no browser step loaded {found['late']}"


def test_a_run_with_a_browser_step_loads_playwright(tmp_path: Path, site: str):
    # the probe itself: it sees Playwright when a run does need it
    document = f"""
sop: 1
id: with-browser
steps:
  - {{id: open, action: navigate, url: "{site}todo.html"}}
"""
    found = loaded_by_run(document, tmp_path)
    assert "playwright" in {name.split(".")[0] for name in found["late"]}


def test_the_executors_table_names_each_familys_actions():
    import importlib

    for family in set(actions.FAMILIES.values()):
        module = importlib.import_module(f"sop_engine.actions.{family}")
        for action in module.EXECUTORS:
            assert actions.FAMILIES.get(action) == family, f"{action} is run by actions.{family}"
    assert set(actions.FAMILIES) == set(actions.EXECUTORS)
    for action in actions.FAMILIES:
        assert (
            actions.EXECUTORS[action]
            is importlib.import_module(f"sop_engine.actions.{actions.FAMILIES[action]}").EXECUTORS[action]
        )


def test_every_leaf_action_has_an_executor():
    containers = {"loop", "if"}
    leaf = {name for name in STEP_MODELS if name not in containers}
    assert leaf <= set(actions.EXECUTORS), f"no executor for {sorted(leaf - set(actions.EXECUTORS))}"
