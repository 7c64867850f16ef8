"""The command line as a user runs it: a real process, real exit codes, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT as ROOT_DIR
from tests.conftest import SOPS

CLI = [sys.executable, "-m", "sop_engine"]


def cli(*args: str, cwd: Path, timeout: float = 60, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOP_DATA_DIR": str(data or cwd / "data"), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SOP_DATABASE_URL", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def with_site(name: str, site: str) -> str:
    """A fixture SOP with its relative demo URLs (`/demo/todo.html`, which need the server) written out in full,
    on the test's site server (the pages at its root)."""
    return (SOPS / name).read_text().replace('"/demo/', f'"{site}')


@pytest.fixture
def todo_sop(tmp_path: Path, site: str) -> Path:
    path = tmp_path / "todo.yaml"
    path.write_text(with_site("todo-add.yaml", site))
    return path


def test_run_json_reports_outputs_and_steps_in_execution_order(todo_sop: Path, tmp_path: Path):
    result = cli("run", str(todo_sop), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "completed"
    assert report["outputs"] == {"left": 3, "labels": ["milk", "eggs", "bread"]}
    order = [s["key"] for s in report["steps"]]
    assert order == [
        "open",
        "add",
        "add[0].type",
        "add[0].enter",
        "add[1].type",
        "add[1].enter",
        "add[2].type",
        "add[2].enter",
        "read",
    ]
    assert all(s["status"] == "completed" and s["attempts"] == 1 and s["error"] is None for s in report["steps"])
    assert all(s["duration_ms"] >= 0 for s in report["steps"])
    assert (tmp_path / "data" / "sop.db").exists()


def test_run_inputs_from_flags_and_json_file(todo_sop: Path, tmp_path: Path):
    (tmp_path / "inputs.json").write_text(json.dumps({"items": ["a", "b", "c", "d"]}))
    result = cli("run", str(todo_sop), "--inputs-json", "inputs.json", "--input", 'items=["x"]', "--json", cwd=tmp_path)
    assert json.loads(result.stdout)["outputs"] == {"left": 1, "labels": ["x"]}


def test_progress_is_printed_per_step(todo_sop: Path, tmp_path: Path):
    result = cli("run", str(todo_sop), "--input", "password=hunter22", cwd=tmp_path)
    assert result.returncode == 0
    assert "✓ add[2].enter" in result.stdout
    assert "completed run" in result.stdout
    assert "hunter22" not in result.stdout + result.stderr


def test_failed_run_exits_1_with_the_reason(tmp_path: Path, site: str):
    path = tmp_path / "fail.yaml"
    path.write_text(f"""
sop: 1
id: fails
steps:
  - {{id: open, action: navigate, url: "{site}todo.html"}}
  - {{id: missing, action: click, selector: "#nope", timeout: 200ms}}
""")
    result = cli("run", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["status"] == "failed"
    assert report["steps"][1]["status"] == "failed"
    assert "no element matched '#nope'" in report["steps"][1]["error"]


INVALID = {
    "undeclared": (
        'value: "{{ item }}"',
        'value: "{{ itme }}"',
        "step 'type' uses 'itme', which it does not declare in its inputs",
    ),
    "cycle": ("  - id: read\n", "  - id: read\n    depends_on: [late]\n", "dependency cycle"),
    "missing-field": ("        key: Enter\n", "", "step 'enter' (steps[1].steps[1]), field 'key': is required"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_invalid_documents_are_refused_with_exit_2(case: str, command: str, tmp_path: Path):
    old, new, message = INVALID[case]
    text = (SOPS / "todo-add.yaml").read_text()
    assert old in text
    text = text.replace(old, new)
    if case == "cycle":
        text += "  - {id: late, action: log, message: x, depends_on: [read]}\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = cli(command, str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    if case == "cycle":
        assert "read -> late -> read" in result.stderr or "late -> read -> late" in result.stderr


def test_validate_ok(tmp_path: Path):
    result = cli("validate", str(SOPS / "todo-add.yaml"), cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "ok")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "items=notalist"], "input 'items': must be list"),
        (["--input", "colour=red"], "input 'colour': is not an input of this SOP"),
        (["--input", "novalue"], "write NAME=VALUE"),
    ],
)
def test_bad_inputs_exit_2(args: list[str], message: str, tmp_path: Path):
    result = cli("run", str(SOPS / "todo-add.yaml"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_required_input_names_it(tmp_path: Path):
    result = cli("run", str(SOPS / "login.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "input 'password': is required" in result.stderr


def test_string_inputs_are_taken_as_text(todo_sop: Path, tmp_path: Path):
    result = cli("run", str(todo_sop), "--input", "base_url=12345", "--json", cwd=tmp_path)
    assert result.returncode == 1  # ran (and failed to load a page called 12345) instead of refusing the input
    assert "12345" in json.loads(result.stdout)["steps"][0]["error"]


def test_secret_input_is_masked_in_errors(tmp_path: Path):
    (tmp_path / "inputs.json").write_text('{"password": 987654}')
    result = cli("run", str(SOPS / "login.yaml"), "--inputs-json", "inputs.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "must be string, got ***" in result.stderr


def test_validate_reports_every_problem_at_once(tmp_path: Path):
    text = (SOPS / "todo-add.yaml").read_text().replace("        key: Enter\n", "").replace("{{ item }}", "{{ itme }}")
    (tmp_path / "bad.yaml").write_text(text)
    result = cli("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "step 'enter' (steps[1].steps[1]), field 'key': is required" in result.stderr
    assert "step 'type' uses 'itme', which it does not declare in its inputs" in result.stderr


def test_demo_serves_the_pages_on_the_port_it_is_given(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = cli("demo", "--port", str(taken.getsockname()[1]), cwd=ROOT_DIR, data=tmp_path / "data")
        assert busy.returncode == 2 and "pick another --port" in busy.stderr
        port = taken.getsockname()[1]
    result = cli("demo", "--port", str(port), cwd=ROOT_DIR, data=tmp_path / "data")  # never the repository's
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fixture pages at http://127.0.0.1:{port}/demo/" in result.stdout and '"left": 3' in result.stdout


def test_strict_refuses_the_file_urls_a_plain_run_opens(tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("local-file-5b2e")
    path = tmp_path / "local.yaml"
    path.write_text(f"""
sop: 1
id: local
outputs: [text]
steps:
  - {{id: open, action: navigate, url: "{secret.as_uri()}"}}
  - {{id: read, action: evaluate, script: "() => document.body.innerText", outputs: {{text: value}}}}
""")
    plain = cli("run", str(path), "--json", cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "local-file-5b2e" in json.loads(plain.stdout)["outputs"]["text"]

    strict = cli("run", str(path), "--json", "--strict", cwd=tmp_path)
    assert strict.returncode == 1
    report = json.loads(strict.stdout)
    assert "file: URLs are not allowed here" in report["steps"][0]["error"]
    assert "local-file-5b2e" not in strict.stdout + strict.stderr

    (tmp_path / "rows.json").write_text('[{"n": 1}]')
    path.write_text(path.read_text().replace("outputs: [text]", "inputs: {n: {type: integer}}\noutputs: [text]"))
    batch = cli("batch", str(path), "--data", "rows.json", "--json", "--strict", cwd=tmp_path)
    assert batch.returncode == 1, batch.stdout + batch.stderr
    assert "file: URLs are not allowed here" in batch.stdout
    assert "local-file-5b2e" not in batch.stdout + batch.stderr
