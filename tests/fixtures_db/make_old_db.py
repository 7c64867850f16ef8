"""Made sop-0.1.0.db, the database of the release before migrations, with that release's own code:

    git worktree add --detach /tmp/old-sop 8495fdb
    PYTHONPATH=/tmp/old-sop python tests/fixtures_db/make_old_db.py tests/fixtures_db/sop-0.1.0.db

Kept for the record: it runs against the old code only."""

from __future__ import annotations

import sys
from datetime import timedelta

from sop_engine.document import load_sop
from sop_engine.events import utcnow
from sop_engine.store import Store
from sop_engine.tables import BatchItemRow, BatchRow, RunRow

SOP = """\
sop: 1
id: greet
name: Greet someone
inputs:
  who: {type: string, default: world}
outputs: [greeting]
steps:
  - id: open
    action: navigate
    url: "http://127.0.0.1:8765/todo.html"
  - id: read
    action: extract
    selector: h1
    outputs: {greeting: text}
"""


def main(path: str) -> None:
    store = Store(f"sqlite:///{path}")
    document = store.save_document(load_sop(SOP))
    run = store.create_run(document, {"who": "Ada"}, "queued")
    store.record(run.id, "run.created", {"status": "queued", "sop_id": "greet", "inputs": {"who": "Ada"}})
    store.claim_next_run("worker-1")
    started = utcnow()
    store.record(
        run.id,
        "run.updated",
        {"status": "running"},
        run={"status": "running", "started_at": started},
        new_steps=[
            {"key": "open", "step_id": "open", "action": "navigate", "status": "pending"},
            {"key": "read", "step_id": "read", "action": "extract", "status": "pending"},
        ],
    )
    for key, outputs in (("open", None), ("read", {"greeting": "Hello, Ada"})):
        store.record(
            run.id,
            "step.updated",
            {"key": key, "status": "running"},
            step=(key, {"status": "running", "attempts": 1, "started_at": utcnow()}),
        )
        store.record(
            run.id,
            "step.updated",
            {"key": key, "status": "completed"},
            step=(key, {"status": "completed", "outputs": outputs, "finished_at": utcnow()}),
            checkpoint={"key": key, "tabs": "sealed-tabs", "storage": "sealed-storage"} if key == "open" else None,
        )
    store.record(run.id, "run.paused", {"status": "paused"}, audit={"who": "alice", "action": "pause"})
    store.record(run.id, "run.resumed", {"status": "running"}, audit={"who": "alice", "action": "resume"})
    store.record(
        run.id,
        "run.updated",
        {"status": "completed", "outputs": {"greeting": "Hello, Ada"}},
        run={"status": "completed", "outputs": {"greeting": "Hello, Ada"}, "finished_at": utcnow()},
    )
    batch = BatchRow(
        id="batch-1",
        document_id=document.id,
        sop_id="greet",
        sop_version=1,
        source="people.csv",
        concurrency=2,
        rows=2,
        created_at=utcnow() + timedelta(seconds=1),
    )
    queued = RunRow(
        id="run-of-row-1",
        document_id=document.id,
        sop_id="greet",
        sop_version=1,
        status="queued",
        inputs={"who": "Bob"},
        batch_id="batch-1",
        row_number=1,
        created_at=batch.created_at,
    )
    items = [
        BatchItemRow(batch_id="batch-1", row_number=1, run_id=queued.id),
        BatchItemRow(batch_id="batch-1", row_number=2, invalid="who: missing"),
    ]
    store.create_batch(batch, [queued], items)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
