"""Dead letters through the API of a real server, with real Chromium against a loopback site that is broken
until the test fixes it: failed runs grouped by error, filters, bulk retry, rerun and delete, the server's
audit log (which outlives deleted runs), role checks and 422s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sop_engine.dead_letters import error_kind, group_key, normalised
from tests.conftest import BOB, CAROL, VIC, both_databases, post_sop, start_run, wait_run
from tests.dead_site import HOSTILE_SOP, DeadSite, serve_dead_site

pytestmark = both_databases


@pytest.fixture
def dead_site():
    yield from serve_dead_site()


def failed_runs(api, site: DeadSite, n: int, token_api=None) -> tuple[str, list[str]]:
    sop_id = post_sop(token_api or api, site.sop(), prefix="dead")
    runs = [start_run(token_api or api, sop_id) for _ in range(n)]
    for run_id in runs:
        wait_run(api, run_id, "failed", timeout=60)
    return sop_id, runs


def test_messages_that_differ_in_numbers_ids_and_urls_group_together():
    one = "step order failed: no element matches '#go' after 3001 ms (page: http://127.0.0.1:4501/shop?key=***)"
    two = "step order failed: no element matches '#go' after 3004 ms (page: http://127.0.0.1:4999/shop?key=***)"
    assert group_key(one) == group_key(two) != group_key(one.replace("#go", "#stop"))
    assert normalised("run 5f0c1e2a9b8d4c3e2f1a0b9c8d7e6f5a took 12.5 s") == "run <id> took <n> s"
    assert error_kind({"kind": "timeout", "message": "x"}) == "timeout"
    assert error_kind(None) == error_kind({"kind": "made-up"}) == "other"


def test_a_group_retried_in_bulk_completes_once_the_site_is_fixed(api, dead_site):
    sop_id, runs = failed_runs(api, dead_site, 3)
    found = api.get("/api/dead-letters", params={"sop_id": sop_id}).json()
    assert len(found["groups"]) == 1, found
    group = found["groups"][0]
    assert group["count"] == 3 and sorted(group["runs"]) == sorted(runs)
    assert group["kinds"] == ["element_not_found"] and group["sops"] == [sop_id]
    assert "#go" in group["message"] and "opal-key-5150" not in str(found)  # the secret in the URL is masked

    dead_site.fixed = True
    body = {"action": "retry", "group": group["key"], "filters": {"sop_id": sop_id}}
    done = api.post("/api/runs/bulk", json=body)
    assert done.status_code == 200, done.text
    assert done.json()["done"] == 3 and done.json()["refused"] == 0
    for run_id in runs:
        assert wait_run(api, run_id, "completed", timeout=60)["outputs"] == {"said": "ordered"}
    assert api.get("/api/dead-letters", params={"sop_id": sop_id}).json()["groups"] == []

    audit = api.get("/api/audit", params={"sop_id": sop_id, "action": "retry"}).json()
    assert sorted(line["run_id"] for line in audit["audit"]) == sorted(runs)
    assert {(line["target"], line["outcome"], line["who"]) for line in audit["audit"]} == {("order", "done", "admin")}
    # the per-run audit trail is written as before
    assert [a["action"] for a in api.get(f"/api/runs/{runs[0]}/audit").json()["audit"]] == ["retry"]


def test_rerun_makes_new_runs_with_the_same_inputs_secrets_included(api, dead_site):
    sop_id, runs = failed_runs(api, dead_site, 2)
    dead_site.fixed = True
    dead_site.keys.clear()
    reply = api.post("/api/runs/bulk", json={"action": "rerun", "runs": runs}).json()
    assert [r["outcome"] for r in reply["results"]] == ["done", "done"]
    new = [r["new_run"] for r in reply["results"]]
    assert set(new).isdisjoint(runs)
    for run_id in new:
        run = wait_run(api, run_id, "completed", timeout=60)
        assert run["inputs"] == {"key": "***"} and run["outputs"] == {"said": "ordered"}
    assert dead_site.keys == ["opal-key-5150", "opal-key-5150"]  # the sealed secret, opened for the new runs
    for old in runs:  # the old runs stay failed, and say which run replaced them
        assert api.get(f"/api/runs/{old}").json()["status"] == "failed"
    lines = api.get("/api/audit", params={"sop_id": sop_id, "action": "rerun"}).json()["audit"]
    assert sorted(line["detail"]["new_run"] for line in lines) == sorted(new)


def test_delete_removes_the_runs_and_their_audit_lines_stay(api, server, dead_site):
    sop_id, runs = failed_runs(api, dead_site, 2)
    with server.client(BOB) as operator:  # deleting is for admins
        assert operator.post("/api/runs/bulk", json={"action": "delete", "runs": runs}).status_code == 403
    reply = api.post("/api/runs/bulk", json={"action": "delete", "runs": [*runs, "f" * 32]}).json()
    assert [r["outcome"] for r in reply["results"]] == ["done", "done", "refused"]
    assert reply["results"][2]["reason"] == "no such run"
    for run_id in runs:
        assert api.get(f"/api/runs/{run_id}").status_code == 404
        lines = api.get("/api/audit", params={"run_id": run_id}).json()["audit"]
        assert [(line["action"], line["outcome"], line["sop_id"]) for line in lines] == [("delete", "done", sop_id)]
        assert lines[0]["detail"]["status"] == "failed" and "#go" in lines[0]["detail"]["error"]
    assert api.get("/api/runs", params={"sop_id": sop_id}).json()["total"] == 0
    refused = api.get("/api/audit", params={"run_id": "f" * 32}).json()["audit"]
    assert refused[0]["outcome"] == "refused" and refused[0]["detail"]["reason"] == "no such run"


def test_filters_on_runs_and_dead_letters(api, dead_site):
    sop_id, runs = failed_runs(api, dead_site, 2)
    listed = api.get("/api/runs", params={"sop_id": sop_id, "status": "failed"}).json()
    assert listed["total"] == 2 and {r["error_kind"] for r in listed["runs"]} == {"element_not_found"}
    by_kind = {"sop_id": sop_id, "error_kind": "element_not_found"}
    assert api.get("/api/runs", params=by_kind).json()["total"] == 2
    assert api.get("/api/runs", params={**by_kind, "error_kind": "timeout"}).json()["total"] == 0
    assert api.get("/api/runs", params={"sop_id": sop_id, "error_kind": "other"}).json()["total"] == 0
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert api.get("/api/runs", params={"sop_id": sop_id, "since": future}).json()["total"] == 0
    assert api.get("/api/runs", params={"sop_id": sop_id, "since": past, "until": future}).json()["total"] == 2
    assert api.get("/api/dead-letters", params={"sop_id": sop_id, "until": past}).json()["groups"] == []
    assert api.get("/api/dead-letters", params={"sop_id": sop_id, "batch_id": "none"}).json()["groups"] == []
    paged = api.get("/api/runs", params={"sop_id": sop_id, "limit": 1, "offset": 1}).json()
    assert paged["total"] == 2 and len(paged["runs"]) == 1


def test_groups_come_largest_first_each_with_its_kind(api, dead_site):
    start = datetime.now(UTC).isoformat()  # the tests run one at a time: what fails from now on is this test's
    shop, _ = failed_runs(api, dead_site, 2)
    hostile = post_sop(api, dead_site.sop(HOSTILE_SOP), prefix="dead")
    wait_run(api, start_run(api, hostile), "failed", timeout=60)
    groups = api.get("/api/dead-letters", params={"since": start}).json()["groups"]
    assert [(g["count"], g["sops"], g["kinds"]) for g in groups] == [
        (2, [shop], ["element_not_found"]),
        (1, [hostile], ["assertion"]),
    ]
    by_kind = api.get("/api/dead-letters", params={"since": start, "error_kind": "assertion"}).json()["groups"]
    assert [g["sops"] for g in by_kind] == [[hostile]]


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/runs", {"since": "yesterday"}),
        ("/api/runs", {"until": "2026-13-45"}),
        ("/api/runs", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
        ("/api/runs", {"error_kind": "<script>"}),
        ("/api/dead-letters", {"since": "9" * 5000}),
        ("/api/dead-letters", {"sop_id": "x" * 201}),
        ("/api/audit", {"outcome": "maybe"}),
    ],
)
def test_bad_filters_are_a_422_naming_them(api, path, params):
    reply = api.get(path, params=params)
    assert reply.status_code == 422, reply.text
    assert next(iter(params)) in reply.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"action": "retry", "runs": ["a"] * 501},
        {"action": "retry", "runs": []},
        {"action": "retry", "runs": ["../../etc"]},
        {"action": "retry"},
        {"action": "retry", "runs": ["a"], "group": "0123456789abcdef"},
        {"action": "explode", "runs": ["a"]},
        {"action": "retry", "group": "not-a-key"},
        {"action": "retry", "group": "0123456789abcdef", "filters": {"since": "soon"}},
        {"action": "retry", "group": "0123456789abcdef", "filters": {"error_kind": "bad"}},
    ],
)
def test_bad_bulk_requests_are_a_422(api, body):
    reply = api.post("/api/runs/bulk", json=body)
    assert reply.status_code == 422, reply.text


def test_roles_a_viewer_cannot_act_and_an_operator_only_on_its_own_runs(api, server, dead_site):
    with server.client(CAROL) as carol:
        _, carols = failed_runs(api, dead_site, 1, token_api=carol)
    with server.client(VIC) as viewer:
        assert viewer.post("/api/runs/bulk", json={"action": "retry", "runs": carols}).status_code == 403
        assert viewer.get("/api/audit").status_code == 403
        assert viewer.get("/api/dead-letters").status_code == 200
    with server.client(BOB) as bob:
        reply = bob.post("/api/runs/bulk", json={"action": "retry", "runs": carols}).json()
        assert reply["results"][0]["outcome"] == "refused" and "carol" in reply["results"][0]["reason"]
        assert bob.get("/api/audit").status_code == 403
    assert api.get(f"/api/runs/{carols[0]}").json()["status"] == "failed"  # nothing changed
    line = api.get("/api/audit", params={"run_id": carols[0]}).json()["audit"][0]
    assert (line["who"], line["action"], line["outcome"]) == ("bob", "retry", "refused")
    # a group that is not there
    assert api.post("/api/runs/bulk", json={"action": "retry", "group": "0" * 16}).status_code == 404


def test_a_run_still_going_is_refused_by_retry_and_delete(api, gate):
    sop_id = post_sop(api, f'sop: 1\nid: SOP_ID\nsteps:\n  - {{id: one, action: http, url: "{gate.url}"}}\n')
    run_id = start_run(api, sop_id)
    assert gate.called.wait(60)
    for action in ("retry", "delete"):
        result = api.post("/api/runs/bulk", json={"action": action, "runs": [run_id]}).json()["results"][0]
        assert result["outcome"] == "refused" and "running" in result["reason"]
    gate.open.set()
    wait_run(api, run_id, "completed")
