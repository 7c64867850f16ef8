"""The examples a server stores at start: as written, with URLs relative to the server (`/demo/todo.html`), so
a start on another port stores no new version and a run goes to the server it runs in."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SOPS, ServerProcess, post_sop, start_run, wait_run

EXAMPLES = sorted(path.stem for path in SOPS.glob("*.yaml"))


def started(data: Path, not_on: int | None = None) -> ServerProcess:
    server = ServerProcess(data, concurrency=1)
    while server.port == not_on:  # the port may come round again: this test needs another one
        server = ServerProcess(data, concurrency=1)
    return server.start()


def check_examples(server: ServerProcess) -> None:
    with server.client() as api:
        for sop_id in EXAMPLES:
            detail = api.get(f"/api/sops/{sop_id}").json()
            assert [v["version"] for v in detail["versions"]] == [1], sop_id
        run = wait_run(api, start_run(api, "todo-add"), "completed")  # on this server's /demo/: no other is up
        assert run["outputs"] == {"left": 3, "labels": ["milk", "eggs", "bread"]}


def test_examples_are_stored_once_and_run_on_any_port(tmp_path: Path):
    data = tmp_path / "data"
    first = started(data)
    try:
        check_examples(first)
    finally:
        first.stop()
    second = started(data, not_on=first.port)
    try:
        check_examples(second)
    finally:
        second.stop()


def test_the_same_document_twice_is_one_version(api):
    text = """
sop: 1
id: SOP_ID
steps:
  - {id: a, action: log, message: same}
"""
    sop_id = post_sop(api, text, prefix="twice")
    again = api.post("/api/sops", content=text.replace("SOP_ID", sop_id))
    assert (again.status_code, again.json()["version"]) == (200, 1)
    assert [v["version"] for v in api.get(f"/api/sops/{sop_id}").json()["versions"]] == [1]
