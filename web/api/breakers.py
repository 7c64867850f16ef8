"""Circuit breakers per target host: read them (a viewer may), close one by hand (an operator may)."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from sop_engine.breakers import HOST_KEY, state_json
from sop_engine.events import utcnow

from ..access import name_of
from ..errors import NotFound
from ..responses import Json
from ..state import state_of
from .endpoints import endpoint

log = logging.getLogger("sop_engine.web")


class BreakerOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    host: str
    state: str  # closed, open, half_open
    failures: int
    window_start: str | None
    opened_until: str | None
    trial_until: str | None
    last_error: str | None
    opens: int
    updated_at: str | None


class BreakerListOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    breakers: list[BreakerOut]


@endpoint("GET", "/breakers", "Every target host's circuit breaker", BreakerListOut)
async def list_breakers(request: Request) -> Response:
    found = await state_of(request).db.breakers()
    return Json({"breakers": [state_json(b) for b in found]})


@endpoint(
    "POST",
    "/breakers/{host}/reset",
    "Close a host's circuit breaker by hand, its failures at zero",
    BreakerOut,
    role="operator",
)
async def reset_breaker(request: Request) -> Response:
    state = state_of(request)
    host = request.path_params["host"]
    found = await state.db.reset_breaker(host, utcnow()) if HOST_KEY.fullmatch(host) else None
    if found is None:  # a name no breaker can have is not sent to the database (a NUL, a megabyte)
        raise NotFound(f"no circuit breaker for {host[:300]!r}")
    state.runner.breakers.forget(host)  # this process's runs read it again; the others ask the database
    log.info("circuit breaker for %s closed by %s", host, name_of(request))
    return Json(state_json(found))
