"""Schedules: an SOP run on a cron expression or an interval, with fixed inputs; their next times and firings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from sop_engine.document import DocumentError
from sop_engine.events import utcnow
from sop_engine.scheduler import timetable_of
from sop_engine.tables import ScheduleFiringRow, ScheduleRow
from sop_engine.timetable import CRON_MAX, INTERVAL_MAX, ZONE_MAX, BadTimetable, utc

from ..access import may_control, name_of, require_control, user_of
from ..db import off_loop
from ..errors import Invalid, NotFound
from ..responses import Json
from ..state import state_of
from .endpoints import Query, endpoint
from .reading import body_model, query_int

NEXT_MAX = 50  # next fire times a listing may ask for


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sop_id: str = Field(max_length=200)
    version: int | None = Field(None, ge=1, le=2**62)  # None: the latest version when it fires
    cron: str | None = Field(None, max_length=CRON_MAX)
    interval_seconds: int | None = Field(None, ge=1, le=INTERVAL_MAX)
    timezone: str = Field("UTC", max_length=ZONE_MAX)
    inputs: dict[str, Any] = {}
    overlap: Literal["skip", "queue"] = "skip"
    catch_up: Literal["once", "none"] = "once"
    enabled: bool = True


class SchedulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


class FiringOut(BaseModel):
    fire_at: str
    outcome: str  # fired, skipped, missed, failed
    run_id: str | None
    detail: str | None


class ScheduleOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    sop_id: str
    version: int | None
    cron: str | None
    interval_seconds: int | None
    timezone: str
    inputs: dict[str, Any]  # secret ones as ***
    overlap: str
    catch_up: str
    enabled: bool
    created_by: str | None
    created_at: str
    last_fire_at: str | None
    next_fire_at: str | None
    next_times: list[str]  # the next ones after now (none while disabled)
    may_control: bool
    firings: list[FiringOut] | None = None  # the latest, newest first (one schedule only)


class ScheduleListOut(BaseModel):
    schedules: list[ScheduleOut]


def _iso(moment: Any) -> str | None:
    return utc(moment).isoformat() if moment is not None else None


def schedule_json(row: ScheduleRow, upcoming: int, controls: bool) -> dict[str, Any]:
    table = timetable_of(row)
    since = max(utcnow(), utc(row.last_fire_at or row.created_at))
    next_times = table.upcoming(since, upcoming) if row.enabled else []
    return {
        "id": row.id,
        "sop_id": row.sop_id,
        "version": row.version,
        "cron": row.cron,
        "interval_seconds": row.interval_seconds,
        "timezone": row.timezone,
        "inputs": row.inputs,
        "overlap": row.overlap,
        "catch_up": row.catch_up,
        "enabled": row.enabled,
        "created_by": row.created_by,
        "created_at": _iso(row.created_at),
        "last_fire_at": _iso(row.last_fire_at),
        "next_fire_at": _iso(row.next_fire_at) if row.enabled else None,
        "next_times": [t.isoformat() for t in next_times],
        "may_control": controls,
    }


def firing_json(row: ScheduleFiringRow) -> dict[str, Any]:
    return {"fire_at": _iso(row.fire_at), "outcome": row.outcome, "run_id": row.run_id, "detail": row.detail}


async def _schedule(request: Request) -> ScheduleRow:
    schedule_id = request.path_params["schedule_id"]
    row = await state_of(request).db.schedule(schedule_id) if len(schedule_id) <= 64 else None
    if row is None:
        raise NotFound(f"no schedule {schedule_id[:64]}")
    return row


@endpoint("POST", "/schedules", "Schedule an SOP", ScheduleOut, body=ScheduleRequest, status=201, role="operator")
async def create_schedule(request: Request) -> Response:
    state = state_of(request)
    body = await body_model(request, ScheduleRequest)
    try:
        row = await off_loop(
            state.scheduler.create,
            body.sop_id,
            utcnow(),
            version=body.version,
            cron=body.cron,
            interval=body.interval_seconds,
            zone=body.timezone,
            inputs=body.inputs,
            overlap=body.overlap,
            catch_up=body.catch_up,
            created_by=name_of(request),
        )
    except BadTimetable as exc:
        raise Invalid(str(exc), problems=[{"where": "timetable", "message": str(exc)}]) from None
    except LookupError as exc:
        where = "version" if body.version else "sop_id"
        raise Invalid(str(exc), problems=[{"where": where, "message": str(exc)}]) from None
    except DocumentError as exc:
        raise Invalid("the inputs do not fit the SOP", problems=[p.as_dict() for p in exc.problems]) from None
    if not body.enabled:
        await state.db.enable_schedule(row.id, False, utcnow(), None)
        row = await _schedule_by_id(request, row.id)
    return Json(await off_loop(schedule_json, row, 5, True), status_code=201)


async def _schedule_by_id(request: Request, schedule_id: str) -> ScheduleRow:
    row = await state_of(request).db.schedule(schedule_id)
    if row is None:
        raise NotFound(f"no schedule {schedule_id}")
    return row


@endpoint(
    "GET",
    "/schedules",
    "Schedules, with their next fire times",
    ScheduleListOut,
    query=(Query("next", "integer", "how many next fire times (default 5)", minimum=0, maximum=NEXT_MAX),),
)
async def list_schedules(request: Request) -> Response:
    upcoming = query_int(request, "next", 5, low=0, high=NEXT_MAX)
    user = user_of(request)
    rows = await state_of(request).db.schedules()
    shown = await off_loop(lambda: [schedule_json(r, upcoming, may_control(user, r.created_by)) for r in rows])
    return Json({"schedules": shown})


@endpoint(
    "GET",
    "/schedules/{schedule_id}",
    "A schedule with its next fire times and latest firings",
    ScheduleOut,
    query=(
        Query("next", "integer", "how many next fire times (default 5)", minimum=0, maximum=NEXT_MAX),
        Query("firings", "integer", "how many latest firings (default 20)", minimum=0, maximum=500),
    ),
)
async def get_schedule(request: Request) -> Response:
    row = await _schedule(request)
    upcoming = query_int(request, "next", 5, low=0, high=NEXT_MAX)
    count = query_int(request, "firings", 20, low=0, high=500)
    shown = await off_loop(schedule_json, row, upcoming, may_control(user_of(request), row.created_by))
    shown["firings"] = [firing_json(f) for f in await state_of(request).db.firings(row.id, count)]
    return Json(shown)


@endpoint(
    "PATCH",
    "/schedules/{schedule_id}",
    "Turn a schedule on or off",
    ScheduleOut,
    body=SchedulePatch,
    role="operator",
)
async def patch_schedule(request: Request) -> Response:
    state = state_of(request)
    row = await _schedule(request)
    require_control(request, f"schedule {row.id}", row.created_by)
    body = await body_model(request, SchedulePatch)
    now = utcnow()
    following = await off_loop(lambda: timetable_of(row).upcoming(now, 1))
    await state.db.enable_schedule(row.id, body.enabled, now, following[0] if following else None)
    row = await _schedule_by_id(request, row.id)
    return Json(await off_loop(schedule_json, row, 5, True))


@endpoint("DELETE", "/schedules/{schedule_id}", "Delete a schedule (its runs stay)", None, status=204, role="operator")
async def delete_schedule(request: Request) -> Response:
    row = await _schedule(request)
    require_control(request, f"schedule {row.id}", row.created_by)
    await state_of(request).db.delete_schedule(row.id)
    return Response(status_code=204)
