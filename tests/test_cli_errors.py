"""The command line refuses what cannot run with exit code 2 and says why: a data file whose columns do not fit
the SOP, a broken CSV, bytes in another encoding, a document that is not UTF-8; with --json as one JSON object
on stdout. Each test runs the real `sop-engine` in a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SOPS, fixture_sop

SIGNUP = str(SOPS / "signup-batch.yaml")


def sop_engine(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOP_DATA_DIR": str(cwd / "data"), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SOP_DATABASE_URL", None)
    command = [sys.executable, "-m", "sop_engine", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def refusal(result: subprocess.CompletedProcess[str]) -> dict:
    """The one JSON object a refused --json command prints, and nothing else."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    said = json.loads(result.stdout)
    assert set(said) == {"error", "problems"} and "Traceback" not in result.stderr
    return said


def test_columns_that_supply_no_required_input_refuse_the_batch_before_it_is_made(tmp_path: Path):
    (tmp_path / "d.csv").write_text("fullname,plan\nAda,pro\n")
    result = sop_engine("batch", SIGNUP, "d.csv", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    said = "input 'name' is required but no column supplies it; columns that match no input: fullname"
    assert said in result.stderr and "completed" not in result.stdout
    assert not (tmp_path / "data").exists()  # no store opened: no batch, no run
    as_json = refusal(sop_engine("batch", SIGNUP, "--data", "d.csv", "--json", cwd=tmp_path))
    assert as_json == {"error": "d.csv does not fit the SOP", "problems": [{"where": "d.csv", "message": said}]}


def test_an_unclosed_quote_names_its_line(tmp_path: Path):
    (tmp_path / "d.csv").write_text('name,plan\n"Ada\nLovelace",pro\nBob,"pro\n')
    said = refusal(sop_engine("batch", SIGNUP, "d.csv", "--json", cwd=tmp_path))
    assert said["problems"] == [{"where": "d.csv line 4", "message": "a quote opens here and is never closed"}]


def test_a_data_file_in_another_encoding_is_named_with_the_byte_unless_its_encoding_is_given(tmp_path: Path):
    (tmp_path / "d.csv").write_bytes("name,plan\nJos\u00e9,pro\n".encode("cp1252"))
    plain = sop_engine("batch", SIGNUP, "d.csv", cwd=tmp_path)
    assert plain.returncode == 2
    assert "d.csv: is not utf-8 text: the byte 0xe9 at offset 13 does not decode" in plain.stderr
    assert "--encoding" in plain.stderr and "Traceback" not in plain.stderr
    unknown = refusal(sop_engine("batch", SIGNUP, "d.csv", "--encoding", "klingon", "--json", cwd=tmp_path))
    assert unknown["problems"] == [{"where": "--encoding", "message": "unknown encoding 'klingon'"}]


def test_a_batch_reads_the_encoding_it_is_given_and_warns_of_columns_that_match_no_input(tmp_path: Path, site: str):
    (tmp_path / "signup.yaml").write_text(fixture_sop("signup-batch.yaml", site))
    (tmp_path / "d.csv").write_bytes("name,plan,colour\nJos\u00e9,pro,red\n".encode("cp1252"))
    strict = sop_engine("batch", "signup.yaml", "d.csv", "--encoding", "cp1252", "--strict-columns", cwd=tmp_path)
    assert strict.returncode == 2 and "d.csv: columns that match no input: colour" in strict.stderr
    stricter = sop_engine("batch", "signup.yaml", "d.csv", "--encoding", "cp1252", "--strict", cwd=tmp_path)
    assert stricter.returncode == 2 and "d.csv: columns that match no input: colour" in stricter.stderr
    result = sop_engine("batch", "signup.yaml", "d.csv", "--encoding", "cp1252", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: d.csv: columns that match no input: colour" in result.stderr
    [line] = json.loads(result.stdout)["results"]
    assert line["outputs"] == {"submitted_name": "Jos\u00e9", "submitted_plan": "pro"}


def test_a_ragged_row_is_invalid_naming_its_line(tmp_path: Path, site: str):
    (tmp_path / "signup.yaml").write_text(fixture_sop("signup-batch.yaml", site))
    (tmp_path / "d.csv").write_text('name,plan\n"Ada\nLovelace",pro\nBob\n')
    result = sop_engine("batch", "signup.yaml", "d.csv", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = json.loads(result.stdout)["results"]
    assert [line["status"] for line in lines] == ["completed", "invalid"]
    assert lines[1]["error"] == "line 4: 1 cells, but the header has 2 columns"


@pytest.mark.parametrize("command", ["validate", "run", "batch"])
def test_a_document_that_is_not_utf8_is_refused_naming_the_byte(command: str, tmp_path: Path):
    (tmp_path / "bad.yaml").write_bytes(b"sop: 1\nid: x\nname: Caf\xe9\nsteps: [{id: a, action: log, message: hi}]\n")
    (tmp_path / "d.csv").write_text("x\n1\n")
    args = [command, "bad.yaml", *(["d.csv"] if command == "batch" else [])]
    result = sop_engine(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "bad.yaml: is not utf-8 text: the byte 0xe9 at offset 22 does not decode" in result.stderr
    said = refusal(sop_engine(*args, "--json", cwd=tmp_path))
    assert said["error"] == "bad.yaml is not a valid SOP" and said["problems"][0]["where"] == "bad.yaml"


def test_columns_that_would_both_supply_an_input_refuse_the_data_file(tmp_path: Path):
    (tmp_path / "d.csv").write_text("fullname,name\nA,B\n")
    said = refusal(sop_engine("batch", SIGNUP, "d.csv", "--map", "fullname=name", "--json", cwd=tmp_path))
    conflict = "input 'name' would come from two columns: fullname (mapped), name"
    assert said == {"error": "d.csv does not fit the SOP", "problems": [{"where": "d.csv", "message": conflict}]}
    (tmp_path / "e.csv").write_text("a,b\nA,B\n")
    plain = sop_engine("batch", SIGNUP, "e.csv", "--map", "a=name", "--map", "b=name", cwd=tmp_path)
    assert plain.returncode == 2 and "input 'name' would come from two columns: a (mapped), b (mapped)" in plain.stderr
    assert not (tmp_path / "data").exists()  # no store opened: no batch, no run


def test_a_json_lines_error_names_its_line(tmp_path: Path):
    (tmp_path / "j.jsonl").write_text('{"name": "A"}\nnot json\n')
    said = refusal(sop_engine("batch", SIGNUP, "j.jsonl", "--json", cwd=tmp_path))
    assert said["problems"] == [{"where": "j.jsonl line 2", "message": "not valid JSON: Expecting value at column 1"}]


def test_a_data_file_given_twice_is_a_problem_naming_both(tmp_path: Path):
    said = refusal(sop_engine("batch", SIGNUP, "d.csv", "--data", "e.csv", "--json", cwd=tmp_path))
    said_once = "give the data file once, as the second argument or as --data (not d.csv and e.csv)"
    assert said["problems"] == [{"where": "--data", "message": said_once}]


@pytest.mark.parametrize(
    ("args", "error", "problem"),
    [
        (["validate", "nope.yaml"], "nope.yaml is not a valid SOP", "cannot read: No such file or directory"),
        (["run", "dup.yaml"], "dup.yaml is not a valid SOP", "the id 'a' is used by 2 steps; ids must be unique"),
        (["run", SIGNUP], "The inputs do not fit the SOP", "is required (string)"),
        (["run", SIGNUP, "--input", "nameAda"], "--input 'nameAda': write NAME=VALUE", "write NAME=VALUE"),
        (["run", SIGNUP, "-i", "name=A", "--base-url", "ftp://x"], "--base-url: must be an http(s) URL", "ftp"),
        (["batch", SIGNUP, "--data", "none.csv"], "--data none.csv: No such file or directory", "No such file"),
        (["batch", SIGNUP, "d.csv", "--map", "x"], "--map 'x': write COLUMN=INPUT", "COLUMN=INPUT"),
        (["batch", "--resume", "no-such-batch"], "no batch no-such-batch in", "no batch no-such-batch in"),
        (["batch", SIGNUP, "d.csv", "--concurrency", "0"], "--concurrency: must be at least 1", "at least 1"),
        (["batch"], "give an SOP file and its data file", "give an SOP file"),
        (["run"], "give an SOP file, or --resume RUN_ID", "give an SOP file"),
    ],
)
def test_with_json_every_refusal_is_one_json_object(args: list[str], error: str, problem: str, tmp_path: Path):
    (tmp_path / "dup.yaml").write_text(
        "sop: 1\nid: dup\nsteps:\n  - {id: a, action: log, message: x}\n  - {id: a, action: log, message: y}\n"
    )
    (tmp_path / "d.csv").write_text("name\nAda\n")
    said = refusal(sop_engine(*args, "--json", cwd=tmp_path))
    assert said["error"].startswith(error)
    assert said["problems"] and all(p.keys() == {"where", "message"} for p in said["problems"])
    assert problem in " ".join(p["message"] for p in said["problems"]) or not problem


def test_validate_reports_a_duplicate_id_and_an_unknown_action_together(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(
        "sop: 1\nid: bad\nsteps:\n  - {id: a, action: log, message: x}\n  - {id: a, action: log, message: y}\n"
        "  - {id: b, action: clik, selector: '#go'}\n"
    )
    said = refusal(sop_engine("validate", "bad.yaml", "--json", cwd=tmp_path))
    assert {"where": "step 'a'", "message": "the id 'a' is used by 2 steps; ids must be unique"} in said["problems"]
    assert any("unknown action 'clik'" in p["message"] for p in said["problems"])
    ok = sop_engine("validate", SIGNUP, "--json", cwd=tmp_path)
    assert (ok.returncode, json.loads(ok.stdout)) == (0, {"ok": True, "sop_id": "signup-batch"})


def test_browser_args_reach_chromium(tmp_path: Path):
    (tmp_path / "agent.yaml").write_text(
        "sop: 1\nid: agent\noutputs: [agent]\nsteps:\n"
        "  - {id: read, action: evaluate, script: '() => navigator.userAgent',\n"
        "     outputs: {agent: '{{ result.value }}'}}\n"
    )
    plain = sop_engine("run", "agent.yaml", "--json", cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert json.loads(plain.stdout)["outputs"]["agent"] != "SopProbe/1"
    flagged = sop_engine("run", "agent.yaml", "--json", "--browser-arg=--user-agent=SopProbe/1", cwd=tmp_path)
    assert flagged.returncode == 0, flagged.stdout + flagged.stderr
    assert json.loads(flagged.stdout)["outputs"] == {"agent": "SopProbe/1"}
    (tmp_path / "rows.jsonl").write_text("{}\n")
    batch = sop_engine(
        "batch", "agent.yaml", "rows.jsonl", "--json", "--browser-arg=--user-agent=SopProbe/2", cwd=tmp_path
    )
    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert json.loads(batch.stdout)["results"][0]["outputs"] == {"agent": "SopProbe/2"}
