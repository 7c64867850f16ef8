"""Batches end to end: a real `sop-engine batch` process over a CSV, killed and resumed, failed rows retried."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sop_engine.store import Store
from tests.conftest import SECRET_KEY, SOPS, both_databases, fixture_sop, wait_for

PLANS = ["free", "pro", "team"]
FAILING = {7, 23, 42}  # a plan the form does not have: the run fails
INVALID = {15: "vip", 31: "name"}  # a cell that does not fit the declared inputs


def write_rows(path: Path, count: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer", "plan", "newsletter"])
        for n in range(1, count + 1):
            name = "" if INVALID.get(n) == "name" else f"Person {n}"
            plan = "gold" if n in FAILING else PLANS[n % 3]
            newsletter = "maybe" if INVALID.get(n) == "vip" else ("yes" if n % 2 else "no")
            writer.writerow([name, plan, newsletter])


def batch_cli(*args: str, cwd: Path, wait: bool = True, timeout: float = 120):
    env = {**os.environ, "SOP_DATA_DIR": str(cwd / "data"), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("SOP_DATABASE_URL", None)
    if (cwd / DATABASE_FILE).exists():  # the test's PostgreSQL database
        env.update(SOP_DATABASE_URL=(cwd / DATABASE_FILE).read_text(), SOP_SECRET_KEY=SECRET_KEY)
    command = [sys.executable, "-m", "sop_engine", "batch", *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


DATABASE_FILE = "database-url"  # in a test's folder: the batches of its commands go to that database


@pytest.fixture
def workdir(tmp_path: Path, site: str, database_url: str | None) -> Path:
    if database_url:
        (tmp_path / DATABASE_FILE).write_text(database_url)
    (tmp_path / "signup.yaml").write_text(fixture_sop("signup-batch.yaml", site))
    write_rows(tmp_path / "rows.csv", 60)
    return tmp_path


def workdir_store(workdir: Path) -> Store:
    """The store the test's commands write to: its PostgreSQL database, or their SQLite file once made."""
    if (workdir / DATABASE_FILE).exists():
        return Store((workdir / DATABASE_FILE).read_text())
    database = workdir / "data" / "sop.db"
    wait_for(database.exists, timeout=30)
    return Store(f"sqlite:///{database}")


def check_row(line: dict, n: int) -> None:
    assert line["row"] == n
    if n in INVALID:
        assert line["status"] == "invalid" and line["run_id"] is None
        assert ("input 'newsletter': must be boolean" if INVALID[n] == "vip" else "input 'name': is required") in line[
            "error"
        ]
    elif n in FAILING:
        assert line["status"] == "failed"
        assert "no option 'gold' (it has: free, pro, team)" in line["error"]
    else:
        assert line["status"] == "completed", line
        assert line["outputs"] == {"submitted_name": f"Person {n}", "submitted_plan": PLANS[n % 3]}


def test_a_batch_of_60_rows_with_failing_and_invalid_rows(workdir: Path):
    result = batch_cli(
        "signup.yaml",
        "--data",
        "rows.csv",
        "--map",
        "customer=name",
        "--concurrency",
        "4",
        "--out",
        "results.jsonl",
        cwd=workdir,
    )
    assert result.returncode == 1, result.stderr  # some rows did not complete
    lines = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 60
    for n, line in enumerate(lines, 1):
        check_row(line, n)
    assert "row 7: failed" in result.stdout and "row 15: invalid" in result.stdout  # the summary lists them


def test_csv_results_and_json_summary(workdir: Path):
    write_rows(workdir / "few.csv", 6)
    result = batch_cli(
        "signup.yaml", "--data", "few.csv", "--map", "customer=name", "--out", "results.csv", "--json", cwd=workdir
    )
    report = json.loads(result.stdout)
    assert report["batch"]["counts"]["completed"] == 6 and result.returncode == 0
    rows = list(csv.DictReader((workdir / "results.csv").open()))
    assert [r["row"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[0]["submitted_name"] == "Person 1" and rows[0]["status"] == "completed"


def test_invalid_document_or_data_exits_2(workdir: Path):
    (workdir / "broken.json").write_text("[1, 2")
    assert batch_cli("signup.yaml", "--data", "broken.json", cwd=workdir).returncode == 2
    assert (
        batch_cli(str(SOPS / "todo-add.yaml").replace("todo-add", "nope"), "--data", "rows.csv", cwd=workdir).returncode
        == 2
    )
    unknown = batch_cli("signup.yaml", "--data", "rows.csv", "--map", "customer=fullname", cwd=workdir)
    assert unknown.returncode == 2 and "fullname" in unknown.stderr
    assert batch_cli("--resume", "no-such-batch", cwd=workdir).returncode == 2


@both_databases  # the server's batches run on both in test_web_batches; this is the command line's crash
@pytest.mark.timeout(300)  # 60 rows through Chromium twice over, on a loaded machine
def test_killed_batch_resumes_with_every_row_completed_exactly_once(workdir: Path):
    write_rows(workdir / "clean.csv", 60)
    rows = [r for r in csv.DictReader((workdir / "clean.csv").open())]
    for n, row in enumerate(rows, 1):  # every row valid and passing, so "completed" is the only right end
        row["plan"] = PLANS[n % 3]
        row["customer"] = f"Person {n}"
        row["newsletter"] = "no"
    with (workdir / "clean.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["customer", "plan", "newsletter"])
        writer.writeheader()
        writer.writerows(rows)
    process = batch_cli(
        "signup.yaml", "--data", "clean.csv", "--map", "customer=name", "--concurrency", "4", cwd=workdir, wait=False
    )
    store = workdir_store(workdir)
    try:

        def some_done() -> bool:
            batches = store.batches()
            return bool(batches) and store.batch_counts(batches[0].id).get("completed", 0) >= 12

        wait_for(some_done, timeout=60)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        batch_id = store.batches()[0].id
        counts = store.batch_counts(batch_id)
        assert counts.get("completed", 0) < 60, "the batch finished before it could be killed"
        in_flight = {run.id for run in store.runs_with_status("running", batch_id)}
        result = batch_cli("--resume", batch_id, "--out", "results.jsonl", cwd=workdir)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [json.loads(line) for line in (workdir / "results.jsonl").read_text().splitlines()]
        assert [line["row"] for line in lines] == list(range(1, 61))
        assert all(line["status"] == "completed" for line in lines)
        rebuilt = [line for line in lines if line["restored"]]  # rows in flight past a browser step
        assert {line["run_id"] for line in rebuilt} <= in_flight
        assert ("had their browser rebuilt from a checkpoint" in " ".join(result.stdout.split())) == bool(rebuilt)
        for item, run in store.batch_items(batch_id):
            assert item.attempts == 1 and run is not None and run.status == "completed"
            assert run.outputs == {
                "submitted_name": f"Person {item.row_number}",
                "submitted_plan": PLANS[item.row_number % 3],
            }
            steps = store.steps(run.id)
            assert [s.status for s in steps] == ["completed"] * 5 + ["skipped"] or all(
                s.status in ("completed", "skipped") for s in steps
            )
            seqs = [e.seq for e in store.events(run.id)]
            assert seqs == list(range(1, len(seqs) + 1))
    finally:
        store.close()
        if process.poll() is None:
            process.kill()


def test_retry_failed_runs_only_the_failed_rows(workdir: Path):
    write_rows(workdir / "some.csv", 9)  # row 7 fails
    first = batch_cli("signup.yaml", "--data", "some.csv", "--map", "customer=name", "--json", cwd=workdir)
    report = json.loads(first.stdout)
    assert first.returncode == 1 and report["batch"]["counts"]["failed"] == 1
    batch_id = report["batch"]["id"]
    again = batch_cli("--retry-failed", batch_id, "--json", cwd=workdir)
    retried = json.loads(again.stdout)
    assert retried["results"][6]["status"] == "failed"  # still no such plan: fails again, on its own
    assert retried["results"][6]["run_id"] != report["results"][6]["run_id"]
    assert [r["run_id"] for i, r in enumerate(retried["results"]) if i != 6] == [
        r["run_id"] for i, r in enumerate(report["results"]) if i != 6
    ]
    store = workdir_store(workdir)
    try:
        [(item, _)] = [(i, r) for i, r in store.batch_items(batch_id) if i.row_number == 7]
        assert item.attempts == 2
    finally:
        store.close()
