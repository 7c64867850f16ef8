"""Through a real server process: an SOP cannot read the server's files, cannot drive the server's own API,
and reaches only what the egress policy allows (a denied loopback address stands in for a private one)."""

from __future__ import annotations

from tests.conftest import post_sop, start_run, wait_run

READ_FILE = """
sop: 1
id: SOP_ID
outputs: [text]
steps:
  - {id: open, action: navigate, url: "URL"}
  - {id: read, action: evaluate, script: "() => document.body.innerText", outputs: {text: value}}
"""


def test_an_sop_cannot_read_the_servers_files(api):
    for url in ("fi\\tle:///etc/passwd", "fi\\nle:///etc/passwd", "view-source:file:///etc/passwd", "chrome://version"):
        run_id = start_run(api, post_sop(api, READ_FILE.replace("URL", url)))
        run = wait_run(api, run_id, "failed")
        opened = run["steps"][0]
        assert (opened["status"], opened["error"]["kind"]) == ("failed", "policy"), (url, opened)
        assert "root:" not in api.get(f"/api/runs/{run_id}/events").text


def test_an_sop_cannot_drive_the_server_it_runs_in(api, server):
    text = f"""
sop: 1
id: SOP_ID
steps:
  - {{id: runs, action: http, url: "{server.url}/api/runs"}}
"""
    run = wait_run(api, start_run(api, post_sop(api, text)), "failed")
    assert run["steps"][0]["error"]["kind"] == "policy"
    assert "/api/runs" in run["steps"][0]["error"]["message"]
    demo = f"""
sop: 1
id: SOP_ID
steps:
  - {{id: page, action: navigate, url: "{server.url}/demo/todo.html"}}
"""
    assert wait_run(api, start_run(api, post_sop(api, demo)), "completed")["status"] == "completed"
