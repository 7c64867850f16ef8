"""What the API answers: the rows as JSON, and the models that describe them in the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from sop_engine.controls import run_controls, step_controls
from sop_engine.document import LoadedSop
from sop_engine.states import RunStatus
from sop_engine.steps import Step
from sop_engine.tables import RunRow, SopDocumentRow, StepRunRow

PRIORITIES = {"high": 0, "normal": 1, "low": 2}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def step_tree(steps: list[Step]) -> list[dict[str, Any]]:
    tree = []
    for step in steps:
        node: dict[str, Any] = {"id": step.id, "action": step.action, "name": step.name}
        kids = step.children()
        if kids:
            node["steps"] = step_tree(kids[0])
            if len(kids) > 1:
                node["else"] = step_tree(kids[1])
        tree.append(node)
    return tree


def document_json(row: SopDocumentRow, loaded: LoadedSop | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.sop_id,
        "version": row.version,
        "name": row.name,
        "content_hash": row.content_hash,
        "created_at": row.created_at.isoformat(),
        "created_by": getattr(row, "created_by", None),
    }
    if loaded is not None:
        sop = loaded.sop
        data["description"] = sop.description
        data["inputs"] = {
            n: {
                "type": s.type,
                "secret": s.secret,
                "required": s.required,
                "default": None if s.required or s.secret else s.default,
                "description": s.description,
            }
            for n, s in sop.inputs.items()
        }
        data["outputs"] = sop.outputs
        data["steps"] = step_tree(sop.steps)
    return data


@dataclass(frozen=True)
class Viewer:
    """Who looks at a run, for its `controls`: whether they may control it, and whether a worker of this
    server executes it now (only such a run can be paused)."""

    may_control: bool
    live: bool = False


def run_controls_for(run: RunRow, viewer: Viewer | None) -> list[str]:
    if viewer is None or not viewer.may_control:
        return []
    found = run_controls(run.status, run.waiting, run.rollback)
    if run.status == RunStatus.RUNNING and not viewer.live:  # another process executes it: it can be cancelled
        found = [c for c in found if c != "pause"]
    return found


def step_json(row: StepRunRow, run: RunRow | None = None, viewer: Viewer | None = None) -> dict[str, Any]:
    allowed = []
    if run is not None and viewer is not None and viewer.may_control:
        allowed = step_controls(row.status, row.key, run.status, run.waiting, run.rollback)
    return {
        "key": row.key,
        "step_id": row.step_id,
        "parent": row.parent_key,
        "action": row.action,
        "status": row.status,
        "attempts": row.attempts,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "duration_ms": row.duration_ms,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "error": row.error,
        "reason": row.reason,
        "artifacts": [f"/api/artifacts/{path}" for path in row.artifacts],
        "cost": row.cost,
        "controls": allowed,
    }


def trace_json(run: RunRow) -> dict[str, Any] | None:
    """The run's Playwright trace as the API shows it: where to download and view it, or why there is none.
    `viewer`: Playwright's own trace viewer, served by this server, opening the download (root-relative: the
    viewer's service worker fetches it from this origin, with the page's cookie)."""
    if not run.trace:
        return None
    shown: dict[str, Any] = {
        "status": run.trace.get("status"),
        "reason": run.trace.get("reason"),
        "bytes": run.trace.get("bytes"),
        "scrubbed": run.trace.get("scrubbed"),
        "dropped_images": run.trace.get("dropped_images", 0),
    }
    if shown["status"] == "saved":
        shown["download"] = download = f"/api/runs/{run.id}/trace"
        shown["viewer"] = f"/trace-viewer/index.html?trace={quote(download, safe='')}"
    return shown


def run_json(
    run: RunRow,
    steps: list[StepRunRow] | None = None,
    viewer: Viewer | None = None,
    restored: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`viewer`: whose `controls` to list (none without); `restored`: when the run's browser was rebuilt
    from a checkpoint, and what that could not bring back."""
    data: dict[str, Any] = {
        "id": run.id,
        "sop_id": run.sop_id,
        "sop_version": run.sop_version,
        "status": run.status,
        "priority": PRIORITY_NAMES.get(run.priority, "normal"),
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "waiting": run.waiting,
        "breakpoints": run.breakpoints,
        "seq": run.last_seq,
        "created_by": getattr(run, "created_by", None),
        "batch_id": run.batch_id,
        "created_at": run.created_at.isoformat(),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "worker": run.worker,
        "cost": run.cost,
        "trace": trace_json(run),
        "rollback": run.rollback,
        "controls": run_controls_for(run, viewer),
        "restored": restored or [],
    }
    if steps is not None:
        data["steps"] = [step_json(s, run, viewer) for s in steps]
    return data


# response models: the OpenAPI document's description of the dicts above --------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorOut(_Out):
    error: str
    problems: list[dict[str, str]] | None = None


class SopOut(_Out):
    id: str
    version: int
    name: str | None
    content_hash: str
    created_at: str
    created_by: str | None


class SopDetailOut(SopOut):
    description: str | None = None
    inputs: dict[str, dict[str, Any]] = {}
    outputs: list[str] = []
    steps: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []


class SopListOut(_Out):
    sops: list[SopOut]


class StepOut(_Out):
    key: str
    step_id: str
    parent: str | None
    action: str
    status: str
    attempts: int
    duration_ms: float | None
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    reason: str | None
    artifacts: list[str]
    cost: dict[str, Any] | None = None
    controls: list[str]


class RunOut(_Out):
    id: str
    sop_id: str
    sop_version: int
    status: str
    priority: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: str | None
    waiting: dict[str, Any] | None
    breakpoints: list[str]
    seq: int
    created_by: str | None
    created_at: str
    controls: list[str]
    restored: list[dict[str, Any]]
    progress: dict[str, Any] | None = None
    worker: str | None = None
    cost: dict[str, Any] | None = None  # what the run cost (sop_engine.cost)
    trace: dict[str, Any] | None = None  # its Playwright trace: where to get it, or why there is none
    rollback: dict[str, Any] | None = None  # its rollback: requested, running, or done with its counts
    steps: list[StepOut] | None = None


class RunListOut(_Out):
    runs: list[RunOut]
    total: int
    limit: int
    offset: int


class EventOut(_Out):
    run_id: str
    seq: int
    type: str
    data: dict[str, Any]
    at: str


class EventListOut(_Out):
    events: list[EventOut]


class AuditOut(_Out):
    audit: list[dict[str, Any]]


class BatchOut(_Out):
    id: str
    sop_id: str
    status: str
    rows: int
    counts: dict[str, int]
    cost: dict[str, Any] | None = None  # its runs' costs summed (sop_engine.cost)


class BatchCreatedOut(BatchOut):
    warnings: list[str]  # columns that match no input, mapped columns the file does not have


class BatchListOut(_Out):
    batches: list[BatchOut]


class BatchDetailOut(BatchOut):
    total: int
    limit: int
    offset: int
    rows_page: list[dict[str, Any]]


class RetriedOut(BatchOut):
    retried: list[int]
