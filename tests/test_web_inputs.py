"""Broken and hostile requests to a real server get a 4xx that names the problem, never a 500; a bad value
stored once never breaks a list afterwards; Socket.IO handlers answer bad payloads with an error ack."""

from __future__ import annotations

import pytest
import socketio

from tests.conftest import TOKEN, post_sop, start_run, wait_run

ECHO = """
sop: 1
id: SOP_ID
inputs:
  items: {type: list, default: []}
steps:
  - {id: a, action: sleep, duration: 1ms}
"""


def test_each_known_cause_of_a_500_is_now_a_4xx(api):
    sop_id = post_sop(api, ECHO)
    run_id = start_run(api, sop_id)
    wait_run(api, run_id, "completed")
    json_type = {"content-type": "application/json"}
    cases = [
        ("POST", "/api/runs", {"content": b'{"sop_id": "\xff\xfe"}', "headers": json_type}, 400),
        ("POST", "/api/runs", {"json": {"sop_id": sop_id, "version": 2**63}}, 422),
        ("GET", f"/api/sops/{sop_id}?version={2**63}", {}, 400),
        ("GET", f"/api/sops/{sop_id}?version=\u00b2", {}, 400),
        ("GET", f"/api/runs/{run_id}/events?since={2**63}", {}, 400),
        ("GET", f"/api/runs?limit={2**63}", {}, 400),
        ("GET", f"/api/runs?offset={2**63}", {}, 400),
        ("GET", "/api/runs?limit=-1", {}, 400),
        ("POST", "/api/runs", {"content": b"[" * 100_000 + b"]" * 100_000, "headers": json_type}, 422),
        ("POST", "/api/sops", {"content": "sop: 1\nsteps: " + "[" * 10_000 + "]" * 10_000}, 422),
        ("POST", f"/api/runs/{run_id}/steps/a/breakpoint", {"json": [1, 2]}, 422),
        ("GET", f"/api/artifacts/{run_id}/a%00b", {}, 404),
        (
            "POST",
            "/api/runs",
            {"content": b'{"sop_id": "x", "inputs": {"items": ["\\ud800"]}}', "headers": json_type},
            422,
        ),
    ]
    for method, path, options, expected in cases:
        reply = api.request(method, path, **options)
        assert reply.status_code == expected, (method, path[:80], reply.status_code, reply.text[:300])
        assert reply.json()["error"], path
    assert api.get("/api/runs").status_code == 200  # nothing broken afterwards


def test_a_lone_surrogate_is_refused_and_nothing_is_stored(api):
    sop_id = post_sop(api, ECHO)
    before = api.get("/api/runs", params={"sop_id": sop_id}).json()["total"]
    reply = api.post(
        "/api/runs",
        content=b'{"sop_id": "%s", "inputs": {"items": ["\\ud800"]}}' % sop_id.encode(),
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 422 and "Unicode" in reply.json()["error"]
    assert api.get("/api/runs", params={"sop_id": sop_id}).json()["total"] == before
    yaml_escape = ECHO.replace("SOP_ID", "surrogate-doc").replace("default: []", 'default: ["\\ud800"]')
    assert api.post("/api/sops", content=yaml_escape).status_code == 422


async def test_socket_payloads_are_checked(server, api):
    run_id = start_run(api, post_sop(api, ECHO))
    wait_run(api, run_id, "completed")
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url, auth={"token": TOKEN}, transports=["websocket"], wait_timeout=5)
    try:
        for payload in (None, [], "x", {"run_id": run_id, "since": 10**30}, {"run_id": 5}, {"since": 1}, {"x": 1}):
            args = () if payload is None else (payload,)
            ack = await client.call("subscribe", *args, timeout=10)
            assert ack["ok"] is False and ack["error"], payload
        good = await client.call("subscribe", {"run_id": run_id, "since": 0}, timeout=10)
        assert good["ok"] is True and good["replayed"] >= 1
        assert (await client.call("unsubscribe", {"bad": 1}, timeout=10))["ok"] is False
    finally:
        await client.disconnect()


def test_a_batch_over_the_row_limit_is_refused_before_any_run_is_made(api):
    text = "sop: 1\nid: SOP_ID\ninputs:\n  s: {type: string}\nsteps:\n  - {id: a, action: log, message: hi}\n"
    sop_id = post_sop(api, text)
    rows = "s\n" + "a\n" * 10_001
    reply = api.post("/api/batches", data={"sop_id": sop_id}, files={"file": ("rows.csv", rows, "text/csv")})
    assert reply.status_code == 422 and "at most 10000" in reply.json()["error"]
    as_json = api.post("/api/batches", json={"sop_id": sop_id, "rows": [{"s": "a"}] * 10_001})
    assert as_json.status_code == 422
    assert api.get("/api/runs", params={"sop_id": sop_id}).json()["total"] == 0


async def test_a_token_that_is_not_text_is_refused_cleanly(server, api):
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, auth={"token": "\ud800"}, transports=["websocket"], wait_timeout=5)
    assert "UnicodeEncodeError" not in server.log.read_text()
    assert api.get("/api/sops").status_code == 200


def test_a_document_that_is_not_utf8_is_a_422_naming_the_byte(api):
    text = "sop: 1\nid: latin-doc\nname: Caf\u00e9\nsteps: [{id: a, action: log, message: hi}]\n"
    reply = api.post("/api/sops", content=text.encode("latin-1"))
    assert reply.status_code == 422, reply.text
    [problem] = reply.json()["problems"]
    assert problem["where"] == "the body"
    assert problem["message"].startswith("is not utf-8 text: the byte 0xe9 at offset 30 does not decode")
    uploaded = api.post("/api/sops", files={"file": ("latin.yaml", text.encode("latin-1"), "text/yaml")})
    assert uploaded.status_code == 422 and uploaded.json()["problems"][0]["where"] == "latin.yaml"
    with_bom = b"\xef\xbb\xbf" + text.replace("Caf\u00e9", "Cafe").encode()
    assert api.post("/api/sops", content=with_bom).status_code == 201


def test_a_template_in_a_typed_field_logs_no_serializer_warning(api, server):
    seen = len(server.log.read_text())
    text = (
        "sop: 1\nid: typed-template\ninputs: {n: {type: integer, default: 1}}\n"
        "steps:\n  - {id: a, action: assert, selector: li, count: '{{ n }}', inputs: [n]}\n"
    )
    assert api.post("/api/sops", content=text).status_code in (200, 201)
    assert "PydanticSerializationUnexpectedValue" not in server.log.read_text()[seen:]
