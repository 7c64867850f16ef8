"""`GET /healthz`: for load balancers and orchestrators, open without a token. It says the process's version,
database dialect and queue (not who or where it is: that is for those with a token), and answers 503 while its
database does not (within PING_SECONDS)."""

from __future__ import annotations

import asyncio
import functools
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .state import state_of

PING_SECONDS = 5.0


@functools.cache
def engine_version() -> str:
    try:
        return version("sop-engine")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


async def healthz(request: Request) -> JSONResponse:
    state = state_of(request)
    body = {
        "version": engine_version(),
        "database": state.store.dialect,
        "queue": state.pool.queue,
        "executes": state.pool.concurrency,  # runs at once; 0: serves the API, the page and the feed only
    }
    try:
        await asyncio.wait_for(state.db.ping(), PING_SECONDS)
    except (SQLAlchemyError, TimeoutError):  # gone, refused, or its pool exhausted
        return JSONResponse({"status": "unavailable", **body, "error": "the database does not answer"}, 503)
    return JSONResponse({"status": "ok", **body})


routes = [Route("/healthz", healthz, methods=["GET"])]
