"""Runs: start one, list them, read one with its steps, events and audit trail, control it, its files."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import PurePosixPath
from typing import IO, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sop_engine import settings, telemetry
from sop_engine.artifacts import Artifacts, UnsafeName, shown_url, split_relative
from sop_engine.dead_letters import error_kind
from sop_engine.document import DocumentError, resolve_inputs
from sop_engine.states import RunStatus
from sop_engine.trace_files import TRACE_NAME

from ..access import may_control, name_of, require_control, user_of
from ..db import off_loop
from ..errors import ApiError, Invalid, NotFound
from ..responses import Json
from ..state import state_of
from .dead_letters import FILTERS, query_filter
from .endpoints import Query, endpoint
from .reading import body_model, json_body, model, query_int
from .serialize import PRIORITIES, AuditOut, EventListOut, RunListOut, RunOut, StepOut, Viewer, run_json, step_json

KEY = r"[A-Za-z0-9_.\[\]-]{1,512}"
log = logging.getLogger("sop_engine.web")


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_id: str = Field(max_length=200)
    inputs: dict[str, Any] = {}
    priority: Literal["high", "normal", "low"] = "normal"
    version: int | None = Field(None, ge=1, le=2**62)
    breakpoints: list[Any] = Field([], max_length=1000)


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: dict[str, Any] = Field(default_factory=dict)


class BreakpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: bool = True


async def _view(request: Request, run: Any, steps: bool = True) -> dict[str, Any]:
    """The run as the caller sees it: with the controls allowed to them now, and its restorations."""
    state = state_of(request)
    viewer = Viewer(may_control(user_of(request), run.created_by), state.controls.reaches(run))
    rows = await state.db.steps(run.id) if steps else None
    shown = run_json(run, rows, viewer, await state.db.restorations(run.id))
    shown["progress"] = await state.db.progress(run.id)
    return shown


async def _run(request: Request) -> Any:
    run_id = request.path_params["run_id"]
    run = await state_of(request).db.run(run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


@endpoint("POST", "/runs", "Queue a run of an SOP", RunOut, body=RunRequest, status=201, role="operator")
@telemetry.request_span("POST /api/runs")
async def create_run(request: Request) -> Response:
    state = state_of(request)
    body = await body_model(request, RunRequest)
    row = await state.db.document(body.sop_id, body.version)
    if row is None:
        raise NotFound(f"no SOP {body.sop_id}" + (f" version {body.version}" if body.version else ""))
    loaded = await off_loop(state.pool.document, row.id)
    try:
        inputs = resolve_inputs(loaded.sop, body.inputs)
    except DocumentError as exc:
        raise Invalid("the inputs do not fit the SOP", problems=[p.as_dict() for p in exc.problems]) from None
    breakpoints = [str(b) for b in body.breakpoints]
    created = await state.runner.create_run(
        loaded, inputs, PRIORITIES[body.priority], breakpoints=breakpoints, created_by=name_of(request)
    )
    state.pool.wake()
    return Json(await _view(request, await state.db.run(created.id) or created), status_code=201)


@endpoint(
    "GET",
    "/runs",
    "Runs, newest first",
    RunListOut,
    query=(
        Query("status", enum=tuple(RunStatus)),
        Query("created_by"),
        *FILTERS,
        Query("limit", "integer", "at most 500", minimum=1, maximum=500),
        Query("offset", "integer", minimum=0),
    ),
)
async def list_runs(request: Request) -> Response:
    limit = query_int(request, "limit", 50, low=1, high=500)
    offset = query_int(request, "offset", 0)
    db = state_of(request).db
    runs, total = await db.find_runs(query_filter(request), limit, offset)
    failed = await db.failed_steps([r.id for r in runs if r.status == RunStatus.FAILED])
    user = user_of(request)
    shown = [run_json(r, viewer=Viewer(may_control(user, r.created_by))) for r in runs]
    for run in shown:  # what kind of error failed it (sop_engine.dead_letters.error_kind)
        if run["status"] == RunStatus.FAILED:
            run["error_kind"] = error_kind(failed.get(run["id"], (None, None))[1])
    return Json({"runs": shown, "total": total, "limit": limit, "offset": offset})


@endpoint("GET", "/runs/{run_id}", "A run with its steps", RunOut)
async def get_run(request: Request) -> Response:
    return Json(await _view(request, await _run(request)))


@endpoint(
    "GET",
    "/runs/{run_id}/events",
    "A run's events after a sequence number",
    EventListOut,
    query=(Query("since", "integer", minimum=0), Query("limit", "integer", minimum=1, maximum=10_000)),
)
async def run_events(request: Request) -> Response:
    run = await _run(request)
    since = query_int(request, "since", 0)
    limit = query_int(request, "limit", 10_000, low=1, high=10_000)
    rows = await state_of(request).db.events(run.id, since, limit)
    events = [{"run_id": e.run_id, "seq": e.seq, "type": e.type, "data": e.data, "at": e.at.isoformat()} for e in rows]
    return Json({"events": events})


@endpoint("GET", "/runs/{run_id}/audit", "Who did what to a run", AuditOut)
async def run_audit(request: Request) -> Response:
    run = await _run(request)
    rows = await state_of(request).db.audit(run.id)
    audit = [
        {"at": r.at.isoformat(), "who": r.who, "action": r.action, "target": r.target, "detail": r.detail} for r in rows
    ]
    return Json({"audit": audit})


@endpoint(
    "POST",
    "/runs/{run_id}/steps/{key}/{action}",
    "A step control: skip, retry, rerun, breakpoint ({on}), submit ({values})",
    RunOut,
    body_types=("application/json",),
    path_enums={"action": ("skip", "retry", "rerun", "breakpoint", "submit")},
    role="operator",
)
async def step_control(request: Request) -> Response:
    state = state_of(request)
    run = await _run(request)
    key, action = request.path_params["key"], request.path_params["action"]
    if action not in ("skip", "retry", "rerun", "breakpoint", "submit"):
        raise NotFound(f"no step control {action}: use skip, retry, rerun, breakpoint or submit")
    require_control(request, f"run {run.id}", getattr(run, "created_by", None))
    body = await json_body(request, empty={})
    loaded = await off_loop(state.pool.document, run.document_id)
    controls, who = state.controls, name_of(request)
    if action == "skip":
        await controls.skip(run.id, key, who)
    elif action == "retry":
        await controls.retry(run.id, key, who, loaded)
    elif action == "rerun":
        await controls.rerun(run.id, key, who, loaded)
    elif action == "breakpoint":
        await controls.breakpoint(run.id, key, model(BreakpointRequest, body).on, who, loaded)
    else:
        await controls.submit(run.id, key, model(SubmitRequest, body).values, who, loaded)
    return Json(await _view(request, await state.db.run(run.id)))


@endpoint(
    "POST",
    "/runs/{run_id}/{action}",
    "A run control: pause, resume, step, cancel, rollback",
    RunOut,
    path_enums={"action": ("pause", "resume", "step", "cancel", "rollback")},
    role="operator",
)
async def run_control(request: Request) -> Response:
    state = state_of(request)
    run = await _run(request)
    action = request.path_params["action"]
    if action not in ("pause", "resume", "step", "cancel", "rollback"):
        raise NotFound(f"no run control {action}: use pause, resume, step, cancel or rollback")
    require_control(request, f"run {run.id}", getattr(run, "created_by", None))
    who = name_of(request)
    if action == "pause":
        await state.controls.pause(run.id, who)
    elif action == "cancel":
        await state.controls.cancel(run.id, who)
    elif action == "rollback":
        await state.controls.rollback(run.id, who)
    else:
        await state.controls.resume(run.id, who, action)
    return Json(await _view(request, await state.db.run(run.id), steps=False))


INLINE = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
CHUNK = 64 * 1024  # what one read from the artifact store gives the response


class ArtifactsUnavailable(ApiError):
    """503: the artifact store (a shared folder, S3) did not answer; nothing is wrong with the request."""

    status = 503


def _opened(store: Artifacts, relative: str) -> tuple[IO[bytes], int, str] | None:
    """The run's file `<run id>/<name>` opened, with its size and name; None when there is no such file (or the
    name could reach outside a run's folder)."""
    try:
        run_id, name = split_relative(relative)
        size = store.size(run_id, name)
        return None if size is None else (store.open(run_id, name), size, name)
    except (UnsafeName, FileNotFoundError):
        return None


async def _chunks(handle: IO[bytes], body: bool) -> AsyncIterator[bytes]:
    """The file's bytes, a chunk at a time; none for a HEAD request."""
    try:
        while body and (chunk := await off_loop(handle.read, CHUNK)):
            yield chunk
    finally:
        await off_loop(handle.close)


@endpoint("GET", "/artifacts/{path:path}", "A file a run made (screenshot, download)", None)
async def artifact(request: Request) -> Response:
    """Served as a download, never as a page of this server: a saved HTML file cannot act in its origin. Streamed
    from the artifact store in chunks, each read in a thread."""
    try:
        found = await off_loop(_opened, Artifacts.configured(), request.path_params["path"])
    except Exception as exc:  # the store, not the request; its message is not quoted: it may say too much
        where = shown_url(settings.current().artifacts_url)
        log.warning("the artifact store %s did not answer: %s", where, type(exc).__name__)
        raise ArtifactsUnavailable("the artifact store is unavailable for now: try again shortly") from None
    if found is None:
        raise NotFound("no such artifact")
    handle, size, name = found
    disposition = "inline" if PurePosixPath(name).suffix.lower() in INLINE else "attachment"
    quoted = quote(name)
    filename = f'filename="{name}"' if quoted == name else f"filename*=utf-8''{quoted}"
    return StreamingResponse(
        _chunks(handle, body=request.method != "HEAD"),
        media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f"{disposition}; {filename}",
            "Content-Security-Policy": "sandbox",  # nosniff is on every response (web/guard.py)
        },
    )


# one step instance, for the run page's step panel ----------------------------------------------------

STEP_ENDS = ("completed", "failed", "skipped", "blocked", "cancelled")


class StepDetailOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    step: StepOut
    attempts: list[dict[str, Any]]  # number, status, started_at, ended_at, error
    log: list[dict[str, Any]]  # at, level, message
    fields: Any = None  # its rendered fields, as its last result told them (secrets masked)
    screenshots: list[str]  # every picture it took, of every attempt
    typical_ms: float | None  # median duration of this step over the SOP's latest completed runs


def step_attempts(events: list[Any]) -> list[dict[str, Any]]:
    """Each attempt of a step instance, from its events: a start (step.updated running), a retry under its
    policy (step.retried: the attempt failed, the next one starts after the wait) or its result."""
    attempts: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for event in events:
        data, at = event.data, event.at
        if event.type == "step.updated" and data.get("status") == "running":
            number = data.get("attempt") or len(attempts) + 1
            current = {"number": number, "status": "running", "started_at": at.isoformat(), "ended_at": None}
            current["error"] = None
            attempts.append(current)
        elif event.type == "step.retried" and current is not None:
            current.update(status="failed", ended_at=at.isoformat(), error=data.get("error"))
            again = at + timedelta(seconds=float(data.get("wait_s") or 0))
            number = int(data.get("attempt") or current["number"]) + 1
            current = {"number": number, "status": "running", "started_at": again.isoformat(), "ended_at": None}
            current["error"] = None
            attempts.append(current)
        elif event.type == "step.updated" and data.get("status") in STEP_ENDS and current is not None:
            current.update(status=data["status"], ended_at=at.isoformat(), error=data.get("error"))
            current = None
    return attempts


def _step_detail(row: Any, events: list[Any]) -> dict[str, Any]:
    """What the step's events say beyond its row: attempts, log lines, rendered fields, every picture."""
    fields, pictures = None, {}
    for event in events:
        if event.type == "step.updated" and event.data.get("status") in ("completed", "failed"):
            fields = event.data.get("fields", fields)
            pictures.update(dict.fromkeys(event.data.get("artifacts") or ()))
    pictures.update(dict.fromkeys(row.artifacts))
    log = [
        {"at": e.at.isoformat(), "level": e.data.get("level"), "message": e.data.get("message")}
        for e in events
        if e.type == "log"
    ]
    screenshots = [f"/api/artifacts/{p}" for p in pictures if PurePosixPath(str(p)).suffix.lower() in INLINE]
    return {"attempts": step_attempts(events), "log": log, "fields": fields, "screenshots": screenshots}


@endpoint("GET", "/runs/{run_id}/steps/{key}", "One step of a run: attempts, log, fields, pictures", StepDetailOut)
async def get_step(request: Request) -> Response:
    state = state_of(request)
    run = await _run(request)
    key = request.path_params["key"]
    row = await state.db.step(run.id, key) if len(key) <= 512 else None
    if row is None:
        raise NotFound(f"no step {key} in run {run.id}")
    viewer = Viewer(may_control(user_of(request), run.created_by), state.controls.reaches(run))
    events = await state.db.step_events(run.id, key)
    detail = {"step": step_json(row, run, viewer), **_step_detail(row, events)}
    detail["typical_ms"] = await state.db.typical_duration(run.sop_id, row.step_id)
    return Json(detail)


@endpoint("GET", "/runs/{run_id}/trace", "A run's Playwright trace (for playwright show-trace or the viewer)", None)
async def run_trace(request: Request) -> Response:
    """The zip kept by the run's last execution that recorded one (sop_engine.trace_files), masked; streamed
    from the artifact store."""
    run = await _run(request)
    if not run.trace or run.trace.get("status") != "saved":
        raise NotFound(f"run {run.id} has no trace" + (f": {run.trace['reason']}" if run.trace else ""))
    try:
        found = await off_loop(_opened, Artifacts.configured(), f"{run.id}/{TRACE_NAME}")
    except Exception as exc:  # the store, not the request; its message is not quoted: it may say too much
        log.warning("the artifact store did not answer: %s", type(exc).__name__)
        raise ArtifactsUnavailable("the artifact store is unavailable for now: try again shortly") from None
    if found is None:
        raise NotFound(f"run {run.id} has no trace file")
    handle, size, _ = found
    return StreamingResponse(
        _chunks(handle, body=request.method != "HEAD"),
        media_type="application/zip",
        headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="trace-{run.id}.zip"'},
    )
