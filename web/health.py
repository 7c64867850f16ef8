"""`GET /healthz`: for load balancers and orchestrators, open without a token. It says the process's version,
database dialect and queue, and answers 503 while its database does not."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .state import state_of


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
        "process": state.pool.name,
    }
    try:
        await state.db.ping()
    except DBAPIError:
        return JSONResponse({"status": "unavailable", **body, "error": "the database does not answer"}, 503)
    status = "draining" if state.pool.draining else "ok"
    return JSONResponse({"status": status, **body}, 503 if state.pool.draining else 200)


routes = [Route("/healthz", healthz, methods=["GET"])]
