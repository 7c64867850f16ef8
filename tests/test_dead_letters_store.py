"""The store's side of dead letters, on both databases: filters (the error kind read from the failed step's
JSON), deleting only ended runs with every row of theirs, and the server-level log that outlives them."""

from __future__ import annotations

from datetime import timedelta

from sop_engine.dead_letters import RunFilter
from sop_engine.document import load_sop
from sop_engine.events import utcnow
from sop_engine.store import Store
from tests.conftest import both_databases

pytestmark = both_databases

DOC = """
sop: 1
id: shop
steps:
  - {id: open, action: navigate, url: "https://example.test/"}
  - {id: order, action: click, selector: "#go"}
"""


def a_run(store: Store, status: str, kind: str | None = None, **extra) -> str:
    document = store.save_document(load_sop(DOC))
    run = store.create_run(document, {}, status, finished_at=utcnow() if status == "failed" else None, **extra)
    rows = [{"key": "open", "step_id": "open", "action": "navigate", "status": "completed"}]
    if kind is not None:
        error = {"kind": kind, "message": f"{kind} on #go"}
        rows.append({"key": "order", "step_id": "order", "action": "click", "status": "failed", "error": error})
    store.record(run.id, "steps.added", {}, new_steps=rows)
    return run.id


def test_filters_read_the_failed_steps_error_kind(store: Store):
    timeout, element, queued = (
        a_run(store, "failed", "timeout"),
        a_run(store, "failed", "element_not_found"),
        a_run(store, "queued"),
    )
    found = lambda **f: {r.id for r in store.find_runs(RunFilter(**f), 50, 0)[0]}  # noqa: E731
    assert found(error_kind="timeout") == {timeout}
    assert found(error_kind="element_not_found", status="failed") == {element}
    assert found(error_kind="other") == {queued}
    assert found(status="failed", since=utcnow() - timedelta(minutes=5)) == {timeout, element}
    assert found(status="failed", until=utcnow() - timedelta(minutes=5)) == set()
    assert store.find_runs(RunFilter(sop_id="shop"), 1, 0)[1] == 3
    assert {k: e["kind"] for k, (_, e) in store.failed_steps([timeout, element, queued]).items()} == {
        timeout: "timeout",
        element: "element_not_found",
    }


def test_only_an_ended_run_is_deleted_with_its_rows_and_its_audit_line_stays(store: Store):
    going, ended = a_run(store, "queued"), a_run(store, "failed", "timeout")
    line = {"who": "alice", "action": "delete", "detail": {"status": "failed"}}
    assert store.delete_ended_run(going, line) == "the run is queued: only a run that ended may be deleted"
    assert store.run(going) is not None and store.steps(going)
    assert store.delete_ended_run(ended, line) is None
    assert store.run(ended) is None and store.steps(ended) == [] and store.events(ended) == []
    assert store.delete_ended_run(ended, line) == "no such run"
    rows, total = store.server_audit(run_id=ended)
    assert total == 1 and (rows[0].who, rows[0].action, rows[0].sop_id, rows[0].outcome) == (
        "alice",
        "delete",
        "shop",
        "done",
    )
    assert store.server_audit(run_id=going) == ([], 0)  # a refusal is the caller's to write


def test_a_control_is_in_both_audit_logs_in_one_transaction(store: Store):
    run_id = a_run(store, "failed", "timeout")
    audit = {"who": "bob", "action": "skip", "target": "order", "detail": {"control": "skip"}}
    store.record(run_id, "control", {"control": "skip"}, audit=audit)
    assert [a.action for a in store.audit(run_id)] == ["skip"]
    rows, _ = store.server_audit(who="bob", run_id=run_id)
    assert [(r.action, r.target, r.sop_id) for r in rows] == [("skip", "order", "shop")]
