"""What a route raises, and the one place that turns it into a response (Starlette's exception_handlers).

Routes never build error responses themselves: `raise NotFound(...)`, `raise Refused(...)`, and so on."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sop_engine.states import TransitionError

from .responses import Json

log = logging.getLogger("sop_engine.web")
RETRY_AFTER = 5  # seconds a client waits before it tries a write again while the database is unavailable


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(ApiError):
    """400: the request cannot be read (not JSON, not UTF-8, a parameter out of range)."""


class Forbidden(ApiError):
    """403: the caller is known, but their role or ownership does not allow this."""

    status = 403


class NotFound(ApiError):
    status = 404


class Refused(ApiError):
    """409: the control does not fit the run's or step's state; nothing changed."""

    status = 409


class HolderUnavailable(ApiError):
    """503: the process holding the run did not answer in time, or cannot apply the control now."""

    status = 503


class TooLarge(ApiError):
    status = 413


class Invalid(ApiError):
    """422: readable, but it does not fit (a document, inputs, a request body)."""

    status = 422


def error_response(status: int, message: str, **extra: Any) -> Json:
    return Json({"error": message, **extra}, status_code=status)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, **exc.extra)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    response = error_response(exc.status_code, exc.detail)
    response.headers.update(exc.headers or {})
    return response


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database is locked or gone for now: the client may try again; nothing was changed."""
    log.warning("database unavailable during %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
    return Json(
        {"error": "the database is unavailable for now: try again shortly"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER)},
    )


async def refused_by_the_gate(request: Request, exc: Exception) -> Response:
    """The store's gate refused a status change (the table forbids it, or another writer came first)."""
    return error_response(409, str(exc))


handlers: dict[Any, Any] = {
    ApiError: api_error,
    TransitionError: refused_by_the_gate,
    HTTPException: http_error,
    OperationalError: database_unavailable,
    DBAPIError: database_unavailable,
}
