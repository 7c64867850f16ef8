"""The artifact store (artifacts.py): names that could leave a run's folder are refused; a run's screenshots and
downloads go to S3 (moto's server on loopback) when SOP_ARTIFACTS_URL says so, are read back and uploaded from
there, served by the server from there, and pruned there."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sop_engine.artifacts import Artifacts, UnsafeName, checked_part, shown_url, split_relative
from sop_engine.document import load_sop
from sop_engine.runner import Runner
from sop_engine.states import RunStatus
from tests.conftest import ROOT, ServerProcess, free_port, post_sop, start_run, wait_run

BUCKET = "sop-artifacts"
ORDERS = (ROOT / "fixtures" / "sites" / "files" / "orders.csv").read_bytes()
DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}


# names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "..\\x", "a\x00b", "a\nb"])
def test_a_name_that_could_leave_the_runs_folder_is_refused(name: str):
    with pytest.raises(UnsafeName):
        checked_part(name)


def test_plain_names_pass():
    assert checked_part("shot-screenshot.png") == "shot-screenshot.png"
    assert checked_part("add_1_.type-café.png") == "add_1_.type-café.png"
    assert split_relative("abc123/shot.png") == ("abc123", "shot.png")


@pytest.mark.parametrize("relative", ["abc", "abc/", "/abc/x", "abc/../x", "abc/x/y", "../abc/x", "abc/./x", ""])
def test_a_relative_path_is_exactly_run_and_name(relative: str):
    with pytest.raises(UnsafeName):
        split_relative(relative)


def test_the_store_round_trip_and_its_bounds():
    store = Artifacts(f"memory://unit-{os.getpid()}")
    where = store.keep("run1", "a.txt", b"hello world")
    assert where == f"memory://{store.root}/run1/a.txt"
    assert store.artifact_at("run1", where) == "a.txt"
    assert store.artifact_at("run2", where) is None
    assert store.size("run1", "a.txt") == 11 and store.size("run1", "nope.txt") is None
    assert store.read("run1", "a.txt", 5) == b"hello"
    with store.open("run1", "a.txt") as handle:
        assert handle.read() == b"hello world"
    assert store.has_run("run1") and store.delete_run("run1")
    assert not store.has_run("run1") and not store.delete_run("run1")
    with pytest.raises(UnsafeName):
        store.keep("run1", "../a.txt", b"x")


def test_a_link_out_of_a_local_runs_folder_is_refused(tmp_path: Path):
    store = Artifacts(str(tmp_path / "artifacts"))
    outside = tmp_path / "private.txt"
    outside.write_text("not yours")
    where = store.keep("run1", "shot.png", b"\x89PNG")
    assert Path(where) == tmp_path / "artifacts" / "run1" / "shot.png"
    assert store.artifact_at("run1", str(tmp_path / "artifacts" / "run1" / ".." / "run1" / "shot.png")) == "shot.png"
    (tmp_path / "artifacts" / "run1" / "link.txt").symlink_to(outside)
    with pytest.raises(UnsafeName):
        store.read("run1", "link.txt", 100)


def test_credentials_are_never_shown():
    assert shown_url("ftp://user:pw@files.example.com:2121/x") == "ftp://files.example.com:2121/x"
    assert shown_url("s3://bucket/prefix") == "s3://bucket/prefix"
    assert "pw" not in repr(Artifacts("memory://shown", {}))


# S3 on loopback --------------------------------------------------------------------------------


class S3:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        creds = {
            "aws_access_key_id": DUMMY["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": DUMMY["AWS_SECRET_ACCESS_KEY"],
        }
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds)

    def keys(self, prefix: str) -> dict[str, bytes]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}

    def env(self, prefix: str) -> dict[str, str]:
        """What points a process at this S3: the standard AWS variables, no project option."""
        return {"SOP_ARTIFACTS_URL": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT_URL": self.endpoint, **DUMMY}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    made = S3(f"http://127.0.0.1:{port}")
    made.client.create_bucket(Bucket=BUCKET)
    yield made
    server.stop()


@pytest.fixture
def on_s3(s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3:
    for name, value in s3.env("runs").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))  # nothing from the host's ~/.aws
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return s3


async def test_a_runs_screenshot_and_downloads_go_to_s3_and_come_back(
    run_sop, store, data_dir: Path, on_s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # to see that the local copies go
    outcome = await run_sop(
        """
sop: 1
id: to-s3
outputs: [shot, csv, rows, again, chosen]
defaults: {timeout: 10s}
steps:
  - {id: open, action: navigate, url: "$SITE/download.html"}
  - {id: shot, action: screenshot, outputs: {shot: path}}
  - {id: csv, action: download, selector: "#csv", outputs: {csv: path}}
  - {id: notes, action: download, url: "$SITE/files/notes.txt"}
  - {id: rows, action: read_file, path: csv-orders.csv, format: csv, outputs: {rows: count}}
  - {id: again, action: read_file, path: "{{ csv }}", inputs: [csv], outputs: {again: size}}
  - {id: send, action: upload, selector: "#file", files: "{{ csv }}", inputs: [csv]}
  - {id: shown, action: extract, selector: "#chosen:not(:empty)", outputs: {chosen: text}}
"""
    )
    assert outcome.status == RunStatus.COMPLETED, outcome.error
    run_id = outcome.run_id
    objects = on_s3.keys(f"runs/{run_id}/")
    assert set(objects) == {f"runs/{run_id}/{n}" for n in ("shot-screenshot.png", "csv-orders.csv", "notes-notes.txt")}
    assert objects[f"runs/{run_id}/shot-screenshot.png"][:4] == b"\x89PNG"
    assert objects[f"runs/{run_id}/csv-orders.csv"] == ORDERS
    out = outcome.outputs
    assert out["shot"] == f"s3://{BUCKET}/runs/{run_id}/shot-screenshot.png"
    assert out["csv"] == f"s3://{BUCKET}/runs/{run_id}/csv-orders.csv"
    assert (out["rows"], out["again"]) == (4, len(ORDERS))
    assert out["chosen"] == "csv-orders.csv Order,Customer,Total,Status"
    rows = {r.key: r for r in store.steps(run_id)}
    assert rows["shot"].artifacts == [f"{run_id}/shot-screenshot.png"]
    assert not (data_dir / "artifacts").exists()
    assert list(scratch.iterdir()) == []


async def test_a_file_not_in_the_runs_s3_folder_is_not_read(run_sop, store, on_s3: S3):
    on_s3.client.put_object(Bucket=BUCKET, Key="runs/someone-else/secret.txt", Body=b"not yours")
    for path, said in (
        ("missing.txt", "no such file in the run's artifacts: 'missing.txt'"),
        (f"s3://{BUCKET}/runs/someone-else/secret.txt", "is not in the run's artifacts folder"),
        ("../someone-else/secret.txt", "is not in the run's artifacts folder"),
    ):
        outcome = await run_sop(f'sop: 1\nid: peek\nsteps:\n  - {{id: read, action: read_file, path: "{path}"}}\n')
        assert outcome.status == RunStatus.FAILED
        [row] = store.steps(outcome.run_id)
        assert said in row.error["message"]


async def test_prune_deletes_a_runs_files_in_s3(store, data_dir: Path, on_s3: S3):
    loaded = load_sop("sop: 1\nid: old\nsteps:\n  - {id: s, action: set, values: {x: 1}}\n")
    runner = Runner(store, None)  # no browser: the run sets a value
    row = await runner.create_run(loaded, {})
    run_id = (await runner.execute(row.id, loaded, {})).run_id
    on_s3.client.put_object(Bucket=BUCKET, Key=f"runs/{run_id}/shot.png", Body=b"\x89PNG")
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sop_engine", "prune", "--older-than", "0m"],
        cwd=data_dir.parent,
        env={**os.environ, "NO_COLOR": "1"},  # SOP_DATA_DIR, SOP_ARTIFACTS_URL and the AWS variables of this test
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "deleted the artifacts of 1 run(s)" in done.stdout
    assert on_s3.keys(f"runs/{run_id}/") == {}


# the server ------------------------------------------------------------------------------------


def test_the_server_streams_a_runs_screenshot_from_s3(s3: S3, tmp_path: Path, site: str):
    options = {"endpoint_url": s3.endpoint, "key": DUMMY["AWS_ACCESS_KEY_ID"], "secret": DUMMY["AWS_SECRET_ACCESS_KEY"]}
    env: dict[str, Any] = {  # the endpoint and keys as the store's own options, this time
        "SOP_ARTIFACTS_URL": f"s3://{BUCKET}/served",
        "SOP_ARTIFACTS_OPTIONS": json.dumps(options),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    server = ServerProcess(tmp_path / "data", concurrency=1, env=env).start()
    try:
        with server.client() as api:
            sop_id = post_sop(
                api,
                f"""
sop: 1
id: SOP_ID
steps:
  - {{id: open, action: navigate, url: "{site}download.html"}}
  - {{id: shot, action: screenshot, file: page.png}}
  - {{id: csv, action: download, selector: "#csv"}}
""",
            )
            run = wait_run(api, start_run(api, sop_id), "completed")
            run_id = run["id"]
            steps = {s["key"]: s for s in run["steps"]}
            [url] = steps["shot"]["artifacts"]
            assert url == f"/api/artifacts/{run_id}/shot-page.png"
            picture = api.get(url)
            stored = s3.keys(f"served/{run_id}/")
            assert picture.status_code == 200
            assert picture.content == stored[f"served/{run_id}/shot-page.png"]
            assert picture.headers["content-type"] == "image/png"
            assert picture.headers["content-disposition"] == 'inline; filename="shot-page.png"'
            assert picture.headers["content-security-policy"] == "sandbox"
            head = api.head(url)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == str(len(picture.content))
            csv = api.get(f"/api/artifacts/{run_id}/csv-orders.csv")
            assert csv.content == ORDERS and csv.headers["content-disposition"].startswith("attachment")
            for bad in (
                f"{run_id}/nope.png",
                f"{run_id}/..%2f..%2fsop.db",
                f"{run_id}/a%00b",
                f"{run_id}/a%5Cb",
                "%2e%2e/sop.db",
                f"{run_id}",
                f"{run_id}/shot-page.png/x",
            ):
                assert api.get(f"/api/artifacts/{bad}").status_code == 404, bad
        assert not (tmp_path / "data" / "artifacts").exists()
        assert options["secret"] not in server.log.read_text()
    finally:
        server.stop()
