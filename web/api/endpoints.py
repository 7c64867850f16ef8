"""The API's one table of endpoints: the routes are made from it, and so is /api/openapi.json, so a route
cannot exist without being described (and fuzzed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..access import require

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Query:
    name: str
    kind: str = "string"  # an OpenAPI type: string, integer, boolean
    description: str = ""
    enum: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below /api, with {names}; {name:path} for a path that may hold slashes
    handler: Handler
    summary: str
    response: type[BaseModel] | None  # None: not JSON (a file, a CSV)
    body: type[BaseModel] | None = None  # a JSON body of this model
    body_types: tuple[str, ...] = ()  # other bodies accepted (YAML, multipart), described as text/binary
    status: int = 200
    query: tuple[Query, ...] = ()
    errors: tuple[int, ...] = (400, 401, 403, 404, 409, 413, 415, 422, 503)
    path_enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    role: str = "viewer"  # the least role that may call it; ownership is checked by the handler


ENDPOINTS: list[Endpoint] = []


def endpoint(method: str, path: str, summary: str, response: type[BaseModel] | None, **more: Any) -> Any:
    def register(handler: Handler) -> Handler:
        ENDPOINTS.append(Endpoint(method, path, handler, summary, response, **more))
        return handler

    return register


def routes() -> list[Route]:
    """Starlette routes, one per path, with the methods that path has."""
    by_path: dict[str, dict[str, Handler]] = {}
    for point in ENDPOINTS:
        by_path.setdefault(point.path, {})[point.method] = _guarded(point)
    found = []
    for path, methods in by_path.items():
        found.append(Route(path, _dispatch(methods), methods=list(methods)))
    return found


def _guarded(point: Endpoint) -> Handler:
    async def handler(request: Request) -> Response:
        require(request, point.role)
        return await point.handler(request)

    return handler


def _dispatch(methods: dict[str, Handler]) -> Handler:
    if len(methods) == 1:
        return next(iter(methods.values()))

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await methods[method](request)

    return dispatch
