"""Dead letters: failed runs grouped by their error, bulk actions on runs, and the server-level audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from sop_engine import telemetry
from sop_engine.dead_letters import BULK_MAX, ERROR_KINDS, RunFilter
from sop_engine.states import RunStatus

from ..access import require, user_of
from ..auth import Role
from ..bulk import BulkAction, failed_groups, shown_groups
from ..errors import Invalid, NotFound
from ..responses import Json
from ..state import state_of
from .endpoints import Query, endpoint
from .reading import body_model, query_int, query_text
from .serialize import _Out

NAME_MAX = 200  # characters of a SOP id, a batch id or a user name in a filter

FILTERS = (
    Query("sop_id"),
    Query("error_kind", enum=ERROR_KINDS),
    Query("batch_id"),
    Query("since", description="ISO 8601 time: runs that ended at or after it"),
    Query("until", description="ISO 8601 time: runs that ended at or before it"),
)


def _moment(raw: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (UTC when it names no offset), or a 422 naming the parameter."""
    if raw is None or raw == "":
        return None
    try:
        moment = datetime.fromisoformat(raw) if len(raw) <= 40 else None
        moment = moment and (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC))
    except (ValueError, OverflowError):  # not a time; or one whose UTC falls outside the years 1–9999
        moment = None
    if moment is None:
        raise Invalid(f"{name} must be an ISO 8601 time, like 2026-01-31T12:00:00Z", problems=[_where(name)])
    return moment


def _where(name: str, message: str = "not a valid value") -> dict[str, str]:
    return {"where": name, "message": message}


def _name(value: str | None, name: str) -> str | None:
    if value is not None and not (1 <= len(value) <= NAME_MAX and value.isprintable()):
        raise Invalid(f"{name} must be 1 to {NAME_MAX} printable characters", problems=[_where(name)])
    return value


def run_filter(values: dict[str, Any], status: str | None = None) -> RunFilter:
    """The filters of a search of runs, checked: unknown error kinds, bad times, a `since` after `until` and
    names too long are a 422 naming the field."""
    kind = values.get("error_kind") or None
    if kind is not None and kind not in ERROR_KINDS:
        raise Invalid(f"error_kind must be one of {', '.join(ERROR_KINDS)}", problems=[_where("error_kind")])
    since, until = _moment(values.get("since"), "since"), _moment(values.get("until"), "until")
    if since and until and since > until:
        raise Invalid("since is after until", problems=[_where("since", "after until")])
    return RunFilter(
        status=status,
        sop_id=_name(values.get("sop_id"), "sop_id"),
        created_by=_name(values.get("created_by"), "created_by"),
        error_kind=kind,
        batch_id=_name(values.get("batch_id"), "batch_id"),
        since=since,
        until=until,
    )


def query_filter(request: Request) -> RunFilter:
    """The filters of GET /api/runs and /api/dead-letters, from the query string."""
    names = ("sop_id", "created_by", "error_kind", "batch_id", "since", "until")
    values = {name: query_text(request, name) for name in names}
    return run_filter(values, query_text(request, "status", tuple(RunStatus)))


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_id: str | None = Field(None, max_length=NAME_MAX)
    error_kind: str | None = Field(None, max_length=50)
    batch_id: str | None = Field(None, max_length=NAME_MAX)
    since: str | None = Field(None, max_length=40)
    until: str | None = Field(None, max_length=40)


class BulkRequest(BaseModel):
    """Runs by id, or a group of failed runs by its key (as GET /api/dead-letters found it with `filters`)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "rerun", "delete"]
    runs: list[str] | None = Field(None, min_length=1, max_length=BULK_MAX)
    group: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")
    filters: Filters = Field(default_factory=Filters)

    @model_validator(mode="after")
    def _one_target(self) -> BulkRequest:
        if (self.runs is None) == (self.group is None):
            raise ValueError("name either runs (a list of run ids) or a group (its key)")
        for run_id in self.runs or ():
            if not (isinstance(run_id, str) and run_id.isascii() and 1 <= len(run_id) <= 64):
                raise ValueError("each run id is 1 to 64 letters, digits, _ or -")
            if not run_id.replace("_", "").replace("-", "").isalnum():
                raise ValueError("each run id is 1 to 64 letters, digits, _ or -")
        return self


class GroupsOut(_Out):
    groups: list[dict[str, Any]]  # key, message, example, kinds, sops, count, first_seen, last_seen, runs
    scanned: int
    truncated: bool


class BulkOut(_Out):
    action: str
    results: list[dict[str, Any]]  # run_id, outcome (done, refused), reason, new_run
    done: int
    refused: int
    left: int  # runs of the group beyond this request's BULK_MAX


class ServerAuditOut(_Out):
    audit: list[dict[str, Any]]  # id, at, who, action, run_id, sop_id, target, outcome, detail
    total: int
    limit: int
    offset: int


@endpoint("GET", "/dead-letters", "Failed runs grouped by their error message", GroupsOut, query=FILTERS)
async def dead_letters(request: Request) -> Response:
    found = await failed_groups(state_of(request), query_filter(request))
    return Json(shown_groups(found))


@endpoint(
    "POST",
    "/runs/bulk",
    f"Retry, rerun or delete many runs (at most {BULK_MAX}): by ids, or a group of failed runs",
    BulkOut,
    body=BulkRequest,
    role="operator",
)
@telemetry.request_span("POST /api/runs/bulk")
async def bulk(request: Request) -> Response:
    body = await body_model(request, BulkRequest)
    if body.action == "delete":
        require(request, Role.ADMIN)
    left = 0
    if body.group is not None:
        wanted = run_filter(body.filters.model_dump())
        found = await failed_groups(state_of(request), wanted)
        group = next((g for g in found["groups"] if g["key"] == body.group), None)
        if group is None:
            raise NotFound(f"no group {body.group} among the failed runs that fit the filters")
        run_ids, left = group["all_runs"][:BULK_MAX], max(0, group["count"] - BULK_MAX)
    else:
        run_ids = list(dict.fromkeys(body.runs or ()))
    outcomes = await BulkAction(state_of(request), user_of(request), body.action).apply(run_ids)
    done = sum(o.done for o in outcomes)
    results = [o.as_dict() for o in outcomes]
    refused = len(outcomes) - done
    return Json({"action": body.action, "results": results, "done": done, "refused": refused, "left": left})


@endpoint(
    "GET",
    "/audit",
    "The server-level audit log, newest first: every control and bulk action, deleted runs' too",
    ServerAuditOut,
    query=(
        Query("who"),
        Query("action"),
        Query("run_id"),
        Query("sop_id"),
        Query("outcome", enum=("done", "refused")),
        Query("since", description="ISO 8601 time"),
        Query("until", description="ISO 8601 time"),
        Query("limit", "integer", "at most 500", minimum=1, maximum=500),
        Query("offset", "integer", minimum=0),
    ),
    role="admin",
)
async def server_audit(request: Request) -> Response:
    limit = query_int(request, "limit", 100, low=1, high=500)
    offset = query_int(request, "offset", 0)
    equal = {n: _name(query_text(request, n), n) for n in ("who", "action", "run_id", "sop_id")}
    outcome = query_text(request, "outcome")
    if outcome is not None and outcome not in ("done", "refused"):
        raise Invalid("outcome must be done or refused", problems=[_where("outcome")])
    since = _moment(query_text(request, "since"), "since")
    until = _moment(query_text(request, "until"), "until")
    rows, total = await state_of(request).db.server_audit(
        limit, offset, since=since, until=until, outcome=outcome, **equal
    )
    audit = [
        {
            "id": r.id,
            "at": r.at.isoformat(),
            "who": r.who,
            "action": r.action,
            "run_id": r.run_id,
            "sop_id": r.sop_id,
            "target": r.target,
            "outcome": r.outcome,
            "detail": r.detail,
        }
        for r in rows
    ]
    return Json({"audit": audit, "total": total, "limit": limit, "offset": offset})
