"""The OpenAPI 3.1 document of the JSON API, made from the endpoint table and its pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from ..responses import Json
from .endpoints import ENDPOINTS, Endpoint, endpoint
from .serialize import ErrorOut

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Cannot be read",
    401: "No valid token",
    403: "Not allowed for this user",
    404: "Not found",
    409: "Does not fit the current state",
    413: "Body too large",
    415: "Content type not accepted",
    422: "Does not fit",
    503: "Database unavailable: try again after Retry-After",
}


def _models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {"ErrorOut": ErrorOut}
    for point in ENDPOINTS:
        for kind in (point.response, point.body):
            if kind is not None:
                found[kind.__name__] = kind
    return list(found.values())


def _ref(kind: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _parameters(point: Endpoint) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in _PARAM.findall(point.path):
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if name in point.path_enums:
            schema = {"type": "string", "enum": list(point.path_enums[name])}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    for query in point.query:
        schema = {"type": query.kind}
        if query.enum:
            schema["enum"] = list(query.enum)
        if query.minimum is not None:
            schema["minimum"] = query.minimum
        if query.maximum is not None:
            schema["maximum"] = query.maximum
        parameters.append({"name": query.name, "in": "query", "required": False, "schema": schema})
    return parameters


def _request_body(point: Endpoint) -> dict[str, Any] | None:
    content: dict[str, Any] = {}
    if point.body is not None:
        content["application/json"] = {"schema": _ref(point.body)}
    for kind in point.body_types:
        if kind == "application/json":
            content.setdefault(kind, {"schema": {"type": "object"}})
        elif kind == "multipart/form-data":
            file = {"type": "string", "format": "binary"}
            content[kind] = {"schema": {"type": "object", "properties": {"file": file}}}
        else:
            content[kind] = {"schema": {"type": "string"}}
    return {"required": point.body is not None, "content": content} if content else None


def _operation(point: Endpoint) -> dict[str, Any]:
    success: dict[str, Any] = {"description": _REASONS.get(point.status, "OK")}
    if point.response is not None:
        success["content"] = {"application/json": {"schema": _ref(point.response)}}
    responses = {str(point.status): success}
    for status in point.errors:
        error = {"application/json": {"schema": _ref(ErrorOut)}}
        responses[str(status)] = {"description": _REASONS[status], "content": error}
    operation: dict[str, Any] = {
        "operationId": point.handler.__name__,
        "summary": point.summary,
        "parameters": _parameters(point),
        "responses": responses,
        "x-role": point.role,
    }
    body = _request_body(point)
    if body is not None:
        operation["requestBody"] = body
    return operation


def document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(kind, "validation") for kind in _models()], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for point in ENDPOINTS:
        path = "/api" + _PARAM.sub(r"{\1}", point.path)
        paths.setdefault(path, {})[point.method.lower()] = _operation(point)
    return {
        "openapi": "3.1.0",
        "info": {"title": "SOP engine API", "version": "1"},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": paths,
    }


@endpoint("GET", "/openapi.json", "This document", None)
async def openapi(request: Request) -> Response:
    return Json(document())
