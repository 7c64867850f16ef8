"""The JSON API under /api: SOPs, runs, events, controls, artifacts."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from sop_engine.batch import results_csv, results_jsonl
from sop_engine.datafile import parse_rows, row_inputs
from sop_engine.document import DocumentError, LoadedSop, load_sop, resolve_inputs
from sop_engine.runner import artifacts_root
from sop_engine.states import RunStatus
from sop_engine.steps import Step
from sop_engine.tables import RunRow, SopDocumentRow, StepRunRow

from .controls import NotFound, Refused
from .state import ServerState

PRIORITIES = {"high": 0, "normal": 1, "low": 2}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_id: str
    inputs: dict[str, Any] = {}
    priority: Literal["high", "normal", "low"] = "normal"
    version: int | None = None
    breakpoints: list[str] = []


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(default_factory=dict)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def state_of(request: Request) -> ServerState:
    return request.app.state.server


def who(request: Request) -> str:
    return request.state.who


# serialisation --------------------------------------------------------------------------------


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
    data = {
        "id": row.sop_id,
        "version": row.version,
        "name": row.name,
        "content_hash": row.content_hash,
        "created_at": row.created_at.isoformat(),
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


def step_json(row: StepRunRow) -> dict[str, Any]:
    duration = row.duration_ms
    return {
        "key": row.key,
        "step_id": row.step_id,
        "parent": row.parent_key,
        "action": row.action,
        "status": row.status,
        "attempts": row.attempts,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "duration_ms": duration,
        "inputs": row.inputs,
        "outputs": row.outputs,
        "error": row.error,
        "reason": row.reason,
        "artifacts": [f"/api/artifacts/{path}" for path in row.artifacts],
    }


def run_json(run: RunRow, steps: list[StepRunRow] | None = None) -> dict[str, Any]:
    data = {
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
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    if steps is not None:
        data["steps"] = [step_json(s) for s in steps]
    return data


# SOPs -----------------------------------------------------------------------------------------


async def _document_text(request: Request) -> str:
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValueError("send the document as the form field 'file'")
        return (await upload.read()).decode("utf-8")
    return (await request.body()).decode("utf-8")


async def create_sop(request: Request) -> Response:
    try:
        text = await _document_text(request)
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, str(exc))
    if not text.strip():
        return error(400, "the body is empty: send a YAML or JSON SOP document")
    try:
        loaded = load_sop(text)
    except DocumentError as exc:
        return error(422, "the document is not a valid SOP", problems=[p.as_dict() for p in exc.problems])
    state = state_of(request)
    before = state.store.document(loaded.sop.id)
    row = state.store.save_document(loaded)
    created = before is None or before.version != row.version
    return JSONResponse(document_json(row, loaded), status_code=201 if created else 200)


async def list_sops(request: Request) -> Response:
    return JSONResponse({"sops": [document_json(row) for row in state_of(request).store.documents()]})


async def get_sop(request: Request) -> Response:
    state = state_of(request)
    sop_id = request.path_params["sop_id"]
    version = request.query_params.get("version")
    row = state.store.document(sop_id, int(version) if version and version.isdigit() else None)
    if row is None:
        return error(404, f"no SOP {sop_id}" + (f" version {version}" if version else ""))
    data = document_json(row, state.pool.document(row.id))
    data["versions"] = [
        {"version": v.version, "created_at": v.created_at.isoformat(), "content_hash": v.content_hash}
        for v in state.store.versions(sop_id)
    ]
    return JSONResponse(data)


# runs -----------------------------------------------------------------------------------------


async def create_run(request: Request) -> Response:
    state = state_of(request)
    try:
        body = RunRequest.model_validate(await request.json())
    except json.JSONDecodeError:
        return error(400, "the body is not JSON")
    except ValidationError as exc:
        problems = [{"where": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        return error(422, "the request does not fit", problems=problems)
    row = state.store.document(body.sop_id, body.version)
    if row is None:
        return error(404, f"no SOP {body.sop_id}" + (f" version {body.version}" if body.version else ""))
    loaded = state.pool.document(row.id)
    try:
        inputs = resolve_inputs(loaded.sop, body.inputs)
    except DocumentError as exc:
        return error(422, "the inputs do not fit the SOP", problems=[p.as_dict() for p in exc.problems])
    created = await state.runner.create_run(loaded, inputs, PRIORITIES[body.priority], breakpoints=body.breakpoints)
    state.pool.wake()
    return JSONResponse(run_json(state.store.run(created.id) or created, []), status_code=201)


async def list_runs(request: Request) -> Response:
    query = request.query_params
    status = query.get("status")
    if status is not None and status not in set(RunStatus):
        return error(400, f"status must be one of {', '.join(RunStatus)}")
    try:
        limit = min(int(query.get("limit", 50)), 500)
        offset = int(query.get("offset", 0))
    except ValueError:
        return error(400, "limit and offset are whole numbers")
    runs, total = state_of(request).store.runs(status, query.get("sop_id"), limit, offset)
    return JSONResponse({"runs": [run_json(r) for r in runs], "total": total, "limit": limit, "offset": offset})


async def get_run(request: Request) -> Response:
    store = state_of(request).store
    run = store.run(request.path_params["run_id"])
    if run is None:
        return error(404, f"no run {request.path_params['run_id']}")
    return JSONResponse(run_json(run, store.steps(run.id)))


async def run_events(request: Request) -> Response:
    store = state_of(request).store
    run_id = request.path_params["run_id"]
    if store.run(run_id) is None:
        return error(404, f"no run {run_id}")
    try:
        since = int(request.query_params.get("since", 0))
    except ValueError:
        return error(400, "since is a sequence number")
    events = [
        {"run_id": e.run_id, "seq": e.seq, "type": e.type, "data": e.data, "at": e.at.isoformat()}
        for e in store.events(run_id, since)
    ]
    return JSONResponse({"events": events})


async def run_audit(request: Request) -> Response:
    rows = state_of(request).store.audit(request.path_params["run_id"])
    return JSONResponse(
        {
            "audit": [
                {"at": r.at.isoformat(), "who": r.who, "action": r.action, "target": r.target, "detail": r.detail}
                for r in rows
            ]
        }
    )


async def run_control(request: Request) -> Response:
    state = state_of(request)
    run_id, action = request.path_params["run_id"], request.path_params["action"]
    try:
        if action == "pause":
            await state.controls.pause(run_id, who(request))
        elif action in ("resume", "step"):
            await state.controls.resume(run_id, who(request), action)
        elif action == "cancel":
            await state.controls.cancel(run_id, who(request))
        else:
            return error(404, f"no run control {action}: use pause, resume, step or cancel")
    except NotFound as exc:
        return error(404, str(exc))
    except Refused as exc:
        return error(409, str(exc))
    return JSONResponse(run_json(state.store.run(run_id)))  # type: ignore[arg-type]


async def step_control(request: Request) -> Response:
    state = state_of(request)
    run_id, key, action = (request.path_params[k] for k in ("run_id", "key", "action"))
    run = state.store.run(run_id)
    if run is None:
        return error(404, f"no run {run_id}")
    loaded = state.pool.document(run.document_id)
    controls = state.controls
    try:
        body = await request.json() if await request.body() else {}
        if action == "skip":
            await controls.skip(run_id, key, who(request))
        elif action == "retry":
            await controls.retry(run_id, key, who(request), loaded)
        elif action == "rerun":
            await controls.rerun(run_id, key, who(request), loaded)
        elif action == "breakpoint":
            await controls.breakpoint(run_id, key, bool(body.get("on", True)), who(request), loaded)
        elif action == "submit":
            values = SubmitRequest.model_validate(body).values
            await controls.submit(run_id, key, values, who(request), loaded)
        else:
            return error(404, f"no step control {action}: use skip, retry, rerun, breakpoint or submit")
    except json.JSONDecodeError:
        return error(400, "the body is not JSON")
    except NotFound as exc:
        return error(404, str(exc))
    except Refused as exc:
        return error(409, str(exc))
    except (ValueError, ValidationError) as exc:
        return error(422, str(exc))
    return JSONResponse(run_json(state.store.run(run_id), state.store.steps(run_id)))  # type: ignore[arg-type]


async def artifact(request: Request) -> Response:
    root = artifacts_root().resolve()
    path = (root / request.path_params["path"]).resolve()
    if not path.is_relative_to(root) or len(path.relative_to(root).parts) != 2 or not path.is_file():
        return error(404, "no such artifact")
    return FileResponse(path)


routes = [
    Route("/sops", create_sop, methods=["POST"]),
    Route("/sops", list_sops, methods=["GET"]),
    Route("/sops/{sop_id}", get_sop, methods=["GET"]),
    Route("/runs", create_run, methods=["POST"]),
    Route("/runs", list_runs, methods=["GET"]),
    Route("/runs/{run_id}", get_run, methods=["GET"]),
    Route("/runs/{run_id}/events", run_events, methods=["GET"]),
    Route("/runs/{run_id}/audit", run_audit, methods=["GET"]),
    Route("/runs/{run_id}/steps/{key}/{action}", step_control, methods=["POST"]),
    Route("/runs/{run_id}/{action}", run_control, methods=["POST"]),
    Route("/artifacts/{path:path}", artifact, methods=["GET"]),
]


# batches --------------------------------------------------------------------------------------


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_id: str
    rows: list[dict[str, Any]] = Field(min_length=1)
    inputs: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    concurrency: int = Field(4, ge=1, le=64)
    priority: Literal["high", "normal", "low"] = "normal"
    version: int | None = None


async def _batch_request(request: Request) -> BatchRequest:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ValueError("send the data file as the form field 'file'")
        rows = parse_rows((await upload.read()).decode("utf-8"), upload.filename or "")
        mapping = dict(p.split("=", 1) for p in str(form.get("mapping", "")).split(",") if "=" in p)
        fields = {k: form[k] for k in ("sop_id", "concurrency", "priority", "version") if form.get(k)}
        inputs = json.loads(str(form["inputs"])) if form.get("inputs") else {}
        return BatchRequest.model_validate({**fields, "rows": rows, "mapping": mapping, "inputs": inputs})
    return BatchRequest.model_validate(await request.json())


async def create_batch(request: Request) -> Response:
    state = state_of(request)
    try:
        body = await _batch_request(request)
    except json.JSONDecodeError:
        return error(400, "the body is not JSON")
    except ValidationError as exc:
        problems = [{"where": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        return error(422, "the request does not fit", problems=problems)
    except DocumentError as exc:
        return error(422, "the data file is not valid", problems=[p.as_dict() for p in exc.problems])
    except (ValueError, UnicodeDecodeError) as exc:
        return error(400, str(exc))
    row = state.store.document(body.sop_id, body.version)
    if row is None:
        return error(404, f"no SOP {body.sop_id}")
    loaded = state.pool.document(row.id)
    unknown = sorted(set(body.mapping.values()) - set(loaded.sop.inputs))
    if unknown:
        return error(422, f"mapping names {', '.join(unknown)}, which the SOP does not declare as inputs")
    rows = [row_inputs(loaded.sop, n, cells, body.mapping, body.inputs) for n, cells in enumerate(body.rows, 1)]
    batch = state.batches.create(loaded, rows, "upload", body.concurrency, PRIORITIES[body.priority])
    state.pool.wake()
    return JSONResponse(state.batches.summary(batch.id), status_code=201)


def _batch_or_404(request: Request) -> tuple[ServerState, str] | Response:
    state = state_of(request)
    batch_id = request.path_params["batch_id"]
    if state.store.batch(batch_id) is None:
        return error(404, f"no batch {batch_id}")
    return state, batch_id


async def list_batches(request: Request) -> Response:
    state = state_of(request)
    return JSONResponse({"batches": [state.batches.summary(b.id) for b in state.store.batches()]})


async def get_batch(request: Request) -> Response:
    found = _batch_or_404(request)
    if isinstance(found, Response):
        return found
    state, batch_id = found
    query = request.query_params
    try:
        limit = min(int(query.get("limit", 100)), 1000)
        offset = int(query.get("offset", 0))
    except ValueError:
        return error(400, "limit and offset are whole numbers")
    lines = state.batches.results(batch_id)
    if query.get("status"):
        lines = [line for line in lines if line["status"] == query["status"]]
    return JSONResponse(
        {
            **state.batches.summary(batch_id),
            "total": len(lines),
            "limit": limit,
            "offset": offset,
            "rows_page": lines[offset : offset + limit],
        }
    )


async def batch_retry_failed(request: Request) -> Response:
    found = _batch_or_404(request)
    if isinstance(found, Response):
        return found
    state, batch_id = found
    retried = state.batches.retry_failed(batch_id)
    if not retried:
        return error(409, "no row of this batch failed")
    state.pool.wake()
    return JSONResponse({"retried": retried, **state.batches.summary(batch_id)})


async def batch_cancel(request: Request) -> Response:
    found = _batch_or_404(request)
    if isinstance(found, Response):
        return found
    state, batch_id = found
    summary = state.batches.summary(batch_id)
    if summary["status"] != "running":
        return error(409, f"the batch is {summary['status']}")
    state.batches.cancel(batch_id)
    for run in state.store.runs_with_status("running", batch_id) + state.store.runs_with_status("paused", batch_id):
        await state.pool.cancel(run.id)
    return JSONResponse(state.batches.summary(batch_id))


async def batch_results(request: Request) -> Response:
    found = _batch_or_404(request)
    if isinstance(found, Response):
        return found
    state, batch_id = found
    lines = state.batches.results(batch_id)
    kind = request.query_params.get("format", "jsonl")
    if kind == "csv":
        outputs = state.pool.document(state.store.batch(batch_id).document_id).sop.outputs  # type: ignore[union-attr]
        return Response(
            results_csv(lines, outputs),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.csv"'},
        )
    if kind != "jsonl":
        return error(400, "format is csv or jsonl")
    return Response(
        results_jsonl(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch_id}.jsonl"'},
    )


routes += [
    Route("/batches", create_batch, methods=["POST"]),
    Route("/batches", list_batches, methods=["GET"]),
    Route("/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/batches/{batch_id}/retry-failed", batch_retry_failed, methods=["POST"]),
    Route("/batches/{batch_id}/cancel", batch_cancel, methods=["POST"]),
    Route("/batches/{batch_id}/results", batch_results, methods=["GET"]),
]
