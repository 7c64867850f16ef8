"""The JSON API of a real server process: SOPs, runs, events, auth, secrets, artifacts."""

from __future__ import annotations

import httpx

from tests.conftest import ALICE, SOPS, both_databases, post_sop, start_run, wait_run

SLEEPY = """
sop: 1
id: SOP_ID
inputs:
  n: {type: integer, default: 2}
outputs: [double]
steps:
  - {id: a, action: sleep, duration: 50ms}
  - {id: b, action: set, inputs: [n], values: {double: "{{ n * 2 }}"}}
"""

pytestmark = both_databases


def test_every_api_route_needs_a_token(server):
    for path in ("/api/sops", "/api/runs", "/api/runs/x", "/api/runs/x/events"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers=server.auth("wrong")).status_code == 401
    assert httpx.post(server.url + "/api/runs", json={}).status_code == 401
    assert httpx.get(server.url + "/api/sops", headers=server.auth(ALICE)).status_code == 200


def test_pages_redirect_to_login_and_the_login_url_sets_a_cookie(server):
    page = httpx.get(server.url + "/runs")
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert httpx.get(server.url + "/static/app.js").status_code == 200
    assert httpx.get(server.url + "/static/vendor/socket.io.min.js").status_code == 200
    assert httpx.get(server.url + "/demo/todo.html").status_code == 200
    with httpx.Client(base_url=server.url) as browser_like:
        assert browser_like.get("/login?token=wrong").status_code == 200
        assert "sop_token" not in browser_like.cookies
        signed = browser_like.post("/login", data={"token": "test-token"}, follow_redirects=True)
        assert signed.status_code == 200 and "SOPs" in signed.text
        assert browser_like.get("/api/sops").status_code == 200  # the cookie is enough


def test_login_only_redirects_to_pages_of_this_server(server):
    for target, expected in (("/runs", "/runs"), ("https://evil.example/", "/"), ("//evil.example/x", "/")):
        reply = httpx.post(f"{server.url}/login", params={"next": target}, data={"token": "test-token"})
        assert (reply.status_code, reply.headers["location"]) == (303, expected)


def test_posting_a_document_stores_versions(api):
    text = SLEEPY.replace("SOP_ID", "versioned-sop")
    first = api.post("/api/sops", content=text)
    assert first.status_code == 201 and first.json()["version"] == 1
    assert api.post("/api/sops", content=text).json()["version"] == 1  # the same text: the same version
    second = api.post("/api/sops", content=text.replace("50ms", "60ms"))
    assert (second.status_code, second.json()["version"]) == (201, 2)
    detail = api.get("/api/sops/versioned-sop").json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert [s["id"] for s in detail["steps"]] == ["a", "b"]
    assert detail["inputs"]["n"] == {
        "type": "integer",
        "secret": False,
        "required": False,
        "default": 2,
        "description": None,
    }
    assert api.get("/api/sops/versioned-sop?version=1").json()["version"] == 1
    assert "versioned-sop" in [s["id"] for s in api.get("/api/sops").json()["sops"]]


def test_a_document_can_be_uploaded_as_a_file(api):
    text = SLEEPY.replace("SOP_ID", "uploaded-sop")
    reply = api.post("/api/sops", files={"file": ("sop.yaml", text, "application/yaml")})
    assert reply.status_code == 201 and reply.json()["id"] == "uploaded-sop"


def test_an_invalid_document_gets_422_with_every_problem(api):
    text = (SOPS / "todo-add.yaml").read_text().replace("{{ item }}", "{{ itme }}").replace("key: Enter", "")
    reply = api.post("/api/sops", content=text)
    assert reply.status_code == 422
    problems = reply.json()["problems"]
    assert {"where": "step 'enter' (steps[1].steps[1]), field 'key'", "message": "is required"} in problems
    assert api.post("/api/sops", content="").status_code == 400
    assert api.post("/api/sops", content="sop: [").status_code == 422


def test_a_run_goes_through_the_queue_and_reports_every_step(api):
    sop_id = post_sop(api, SLEEPY)
    run_id = start_run(api, sop_id, {"n": 21})
    run = wait_run(api, run_id, "completed")
    assert run["outputs"] == {"double": 42}
    assert [(s["key"], s["status"], s["attempts"]) for s in run["steps"]] == [
        ("a", "completed", 1),
        ("b", "completed", 1),
    ]
    assert run["steps"][1]["outputs"] == {"double": 42} and run["steps"][0]["duration_ms"] >= 50
    events = api.get(f"/api/runs/{run_id}/events").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, run["seq"] + 1))
    assert api.get(f"/api/runs/{run_id}/events?since={run['seq'] - 1}").json()["events"][0]["type"] == "run.updated"
    listed = api.get("/api/runs", params={"sop_id": sop_id, "status": "completed"}).json()
    assert [r["id"] for r in listed["runs"]] == [run_id] and listed["total"] == 1


def test_bad_run_requests_get_4xx_with_the_reason(api):
    sop_id = post_sop(api, SLEEPY)
    assert api.post("/api/runs", json={"sop_id": "no-such-sop"}).status_code == 404
    bad_input = api.post("/api/runs", json={"sop_id": sop_id, "inputs": {"n": "two"}})
    assert bad_input.status_code == 422
    assert bad_input.json()["problems"] == [{"where": "input 'n'", "message": 'must be integer, got "two"'}]
    assert api.post("/api/runs", json={"sop_id": sop_id, "priority": "urgent"}).status_code == 422
    assert api.post("/api/runs", content="{not json", headers={"content-type": "application/json"}).status_code == 400
    assert api.get("/api/runs", params={"status": "sleeping"}).status_code == 400
    assert api.get("/api/runs/nope").status_code == 404


def test_secrets_never_leave_in_clear(api, server):
    sop_id = post_sop(
        api,
        """
sop: 1
id: SOP_ID
inputs:
  password: {type: string, secret: true}
outputs: [echoed]
steps:
  - {id: use, action: set, inputs: [password], values: {echoed: "pw={{ password }}"}}
  - {id: say, action: log, inputs: [password], message: "the password is {{ password }}"}
""",
    )
    run_id = start_run(api, sop_id, {"password": "hunter2-secret"})
    run = wait_run(api, run_id, "completed")
    assert run["inputs"] == {"password": "***"}
    assert run["outputs"] == {"echoed": "***"}  # it read the secret: secret as a whole
    everything = api.get(f"/api/runs/{run_id}").text + api.get(f"/api/runs/{run_id}/events").text
    assert "hunter2-secret" not in everything and "***" in everything
    for path in server.data.glob("sop.db*"):
        assert b"hunter2-secret" not in path.read_bytes()


def test_artifacts_are_served_only_from_inside_the_artifact_folder(api):
    shot_sop = post_sop(
        api,
        """
sop: 1
id: SOP_ID
inputs: {base: {}}
steps:
  - {id: open, action: navigate, url: "{{ base }}/demo/table.html", inputs: [base]}
  - {id: missing, action: click, selector: "#nope", timeout: 200ms}
""",
    )
    failed = wait_run(api, start_run(api, shot_sop, {"base": str(api.base_url)}), "failed")
    [url] = failed["steps"][1]["artifacts"]
    image = api.get(url)
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    for sneaky in ("/api/artifacts/../sop.db", "/api/artifacts/%2e%2e/sop.db", "/api/artifacts/x/../../sop.db"):
        assert api.get(sneaky).status_code == 404
