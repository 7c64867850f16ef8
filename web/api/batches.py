"""Batches: one SOP over the rows of a data file (JSON rows, or a CSV/JSON/JSONL upload)."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from sop_engine import settings, telemetry
from sop_engine.batch import ROW_STATUSES, results_csv, results_jsonl
from sop_engine.datafile import DataFile, check_columns, column_mapping, data_of_objects, fit_rows, parse_data
from sop_engine.document import DocumentError

from ..access import name_of, require_control
from ..db import off_loop
from ..errors import BadRequest, Invalid, NotFound, Refused
from ..responses import Json
from ..state import ServerState, state_of
from .endpoints import Query, endpoint
from .reading import (
    checked,
    file_name,
    json_body,
    known_encoding,
    model,
    parse_json,
    query_int,
    query_text,
    text_of,
    upload,
)
from .serialize import PRIORITIES, BatchCreatedOut, BatchDetailOut, BatchListOut, BatchOut, RetriedOut


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_id: str = Field(max_length=200)
    rows: list[dict[str, Any]] = Field(min_length=1)
    inputs: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    concurrency: int = Field(4, ge=1, le=64)
    priority: Literal["high", "normal", "low"] = "normal"
    version: int | None = Field(None, ge=1, le=2**62)
    strict_columns: bool = False  # columns that match no input refuse the batch, not only warn
    encoding: str | None = Field(None, max_length=100)  # an uploaded file's, when not UTF-8 (JSON rows are text)


def _bounded(rows: list[Any]) -> list[Any]:
    """A batch makes a run per row, all in one transaction: more rows than the server takes are refused."""
    most = settings.current().batch_max_rows
    if len(rows) > most:
        raise Invalid(f"the batch has {len(rows)} rows; this server takes at most {most} (SOP_BATCH_MAX_ROWS)")
    return rows


async def _batch_request(request: Request) -> tuple[BatchRequest, DataFile]:
    """The request, and its rows as a data file named by its source: a CSV upload's columns are its header, JSON
    rows' their keys."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = await json_body(request)
        if isinstance(body, dict) and isinstance(body.get("rows"), list):
            _bounded(body["rows"])
        batch = model(BatchRequest, body)
        known_encoding(batch.encoding)  # JSON rows are text already: only checked
        return batch, data_of_objects(batch.rows, "rows")
    raw, sent, form = await upload(request)
    name = file_name(sent)
    encoding = known_encoding(str(form.get("encoding") or "")) if form.get("encoding") else None
    mapping = _mapping(str(form.get("mapping") or ""))
    hint = "" if encoding else "; name its encoding with the form field 'encoding'"
    text = await off_loop(text_of, raw, name, encoding, hint)
    try:
        table = await off_loop(parse_data, text, name)
    except DocumentError as exc:
        raise Invalid("the data file is not valid", problems=_problems(exc)) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    checked(_bounded(table.rows), "the data file")
    named = ("sop_id", "concurrency", "priority", "version", "strict_columns", "encoding")
    fields = {k: form[k] for k in named if form.get(k)}
    inputs = parse_json(str(form["inputs"]), "the form field 'inputs'") if form.get("inputs") else {}
    return model(BatchRequest, {**fields, "rows": table.rows, "mapping": mapping, "inputs": inputs}), table


def _mapping(text: str) -> dict[str, str]:
    """The form field `mapping`, `col=input,…`, read as the command line reads its --map values."""
    try:
        return column_mapping([p.strip() for p in text.split(",") if p.strip()], "mapping")
    except DocumentError as exc:
        said = str(exc.problems[0]) if len(exc.problems) == 1 else "the mapping takes col=input,…"
        raise Invalid(said, problems=_problems(exc)) from None


def _problems(exc: DocumentError) -> list[dict[str, str]]:
    return [p.as_dict() for p in exc.problems]


@endpoint(
    "POST",
    "/batches",
    "Start a batch: a run per row",
    BatchCreatedOut,
    body=BatchRequest,
    body_types=("multipart/form-data",),
    status=201,
    role="operator",
)
@telemetry.request_span("POST /api/batches")
async def create_batch(request: Request) -> Response:
    state = state_of(request)
    body, table = await _batch_request(request)
    row = await state.db.document(body.sop_id, body.version)
    if row is None:
        raise NotFound(f"no SOP {body.sop_id}")
    loaded = await off_loop(state.pool.document, row.id)
    try:
        warnings = check_columns(loaded.sop, table, body.mapping, body.inputs, body.strict_columns)
    except DocumentError as exc:
        raise Invalid("the rows do not fit the SOP", problems=_problems(exc)) from None
    rows = await off_loop(fit_rows, loaded.sop, table, body.mapping, body.inputs)
    batch = await off_loop(
        state.batches.create,
        loaded,
        rows,
        table.name,
        body.concurrency,
        PRIORITIES[body.priority],
        created_by=name_of(request),
    )
    state.pool.wake()
    return Json({**await off_loop(state.batches.summary, batch.id), "warnings": warnings}, status_code=201)


async def _batch(request: Request) -> tuple[ServerState, Any]:
    state = state_of(request)
    batch_id = request.path_params["batch_id"]
    batch = await state.db.batch(batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    return state, batch


@endpoint("GET", "/batches", "The latest batches", BatchListOut)
async def list_batches(request: Request) -> Response:
    state = state_of(request)

    def summaries() -> list[dict[str, Any]]:
        return [state.batches.summary(b.id) for b in state.store.batches()]

    return Json({"batches": await off_loop(summaries)})


@endpoint(
    "GET",
    "/batches/{batch_id}",
    "A batch with a page of its rows",
    BatchDetailOut,
    query=(
        Query("status", enum=ROW_STATUSES),
        Query("limit", "integer", minimum=1, maximum=1000),
        Query("offset", "integer", minimum=0),
    ),
)
async def get_batch(request: Request) -> Response:
    state, batch = await _batch(request)
    limit = query_int(request, "limit", 100, low=1, high=1000)
    offset = query_int(request, "offset", 0)
    status = query_text(request, "status", ROW_STATUSES) if request.query_params.get("status") else None
    # the summary first: rows read after it are as new at least, so a batch said done shows its rows done
    summary = await off_loop(state.batches.summary, batch.id)
    lines = await off_loop(state.batches.results, batch.id)
    if status:
        lines = [line for line in lines if line["status"] == status]
    page = lines[offset : offset + limit]
    return Json({**summary, "total": len(lines), "limit": limit, "offset": offset, "rows_page": page})


@endpoint("POST", "/batches/{batch_id}/retry-failed", "A new run for every failed row", RetriedOut, role="operator")
@telemetry.request_span("POST /api/batches/{batch_id}/retry-failed")
async def batch_retry_failed(request: Request) -> Response:
    state, batch = await _batch(request)
    require_control(request, f"batch {batch.id}", getattr(batch, "created_by", None))
    retried = await off_loop(state.batches.retry_failed, batch.id)
    if not retried:
        raise Refused("no row of this batch failed")
    state.pool.wake()
    return Json({"retried": retried, **await off_loop(state.batches.summary, batch.id)})


@endpoint("POST", "/batches/{batch_id}/cancel", "Cancel the rows still to go", BatchOut, role="operator")
async def batch_cancel(request: Request) -> Response:
    state, batch = await _batch(request)
    require_control(request, f"batch {batch.id}", getattr(batch, "created_by", None))
    summary = await off_loop(state.batches.summary, batch.id)
    if summary["status"] != "running":
        raise Refused(f"the batch is {summary['status']}")
    await off_loop(state.batches.cancel, batch.id)
    for status in ("running", "paused"):
        for run in await state.db.runs_with_status(status, batch.id):
            with contextlib.suppress(Refused):  # it ended meanwhile
                await state.controls.cancel(run.id, name_of(request))  # here, or in the process that holds it
    return Json(await off_loop(state.batches.summary, batch.id))


@endpoint(
    "GET",
    "/batches/{batch_id}/results",
    "Every row's result, as JSON lines or CSV",
    None,
    query=(Query("format", enum=("jsonl", "csv")),),
)
async def batch_results(request: Request) -> Response:
    state, batch = await _batch(request)
    kind = query_text(request, "format", ("jsonl", "csv")) or "jsonl"
    lines = await off_loop(state.batches.results, batch.id)
    if kind == "csv":
        outputs = (await off_loop(state.pool.document, batch.document_id)).sop.outputs
        body, media = results_csv(lines, outputs), "text/csv"
    else:
        body, media = results_jsonl(lines), "application/x-ndjson"
    return Response(
        body.encode("utf-8", "backslashreplace"),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="batch-{batch.id}.{kind}"'},
    )
