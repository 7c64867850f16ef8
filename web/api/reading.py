"""Reading what a client sent: bodies and query parameters, bounded and checked, or a 4xx that says why.
The request body's size is bounded before it reaches here (web/guard.py)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from sop_engine.decoding import Undecodable, decode
from sop_engine.limits import LimitError, load_json
from sop_engine.text import has_unencodable

from ..errors import BadRequest, Invalid

Model = TypeVar("Model", bound=BaseModel)
BIGGEST = 2**62  # larger numbers in a query are refused before they reach the database (a 64-bit integer)


def problems_of(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"where": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def decoded(data: bytes, what: str = "the body") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 text (byte {exc.start})") from None


def checked(value: Any, what: str = "the body") -> Any:
    """A parsed value with only text that can be stored and sent back. Its size is bounded by the body's
    (web/guard.py) and its depth by load_json; each input's own bounds are applied by resolve_inputs."""
    where = has_unencodable(value, what)
    if where is not None:
        raise Invalid(f"{where}: text that is not valid Unicode is refused")
    return value


def parse_json(text: str, what: str = "the body") -> Any:
    try:
        value = load_json(text, what)
    except LimitError as exc:
        raise Invalid(str(exc)) from None
    except ValueError as exc:
        if "cannot be encoded" in str(exc):  # JSON, but its text is not valid Unicode (a lone surrogate)
            raise Invalid(f"{what} holds text that is not valid Unicode: {exc}") from None
        raise BadRequest(f"{what} is not JSON: {exc}") from None
    return checked(value, what)


async def json_body(request: Request, *, empty: Any = ...) -> Any:
    raw = await request.body()
    if not raw.strip() and empty is not ...:
        return empty
    return parse_json(decoded(raw))


def model(kind: type[Model], value: Any, what: str = "the request") -> Model:
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        raise Invalid(f"{what} does not fit", problems=problems_of(exc)) from None


async def body_model(request: Request, kind: type[Model], *, empty: Any = ...) -> Model:
    return model(kind, await json_body(request, empty=empty))


async def upload(request: Request, field: str = "file") -> tuple[bytes, str, FormData]:
    """(bytes, file name, the whole form) of a multipart upload; the name as sent, for problems to name."""
    form = await request.form(max_files=1, max_fields=20)
    upload = form.get(field)
    if not isinstance(upload, UploadFile):
        raise BadRequest(f"send the file as the form field '{field}'")
    return await upload.read(), upload.filename or "", form


def file_name(sent: str, default: str = "upload") -> str:
    """An uploaded file's name as it may be stored and shown: the name only (no folders, whichever their
    separator), no control characters, valid text, at most 200 characters (its ending kept)."""
    name = re.split(r"[\\/]", sent)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" or c == " ").strip()
    name = name.encode("utf-8", "replace").decode("utf-8")[-200:].strip()
    return name if name not in ("", ".", "..") else default


def text_of(raw: bytes, where: str, encoding: str | None = None, hint: str = "") -> str:
    """A file's or a document's bytes as text (sop_engine.decoding: UTF-8 unless `encoding` names another, a
    byte-order mark dropped): bytes that are not text in it are a 422 naming `where` and the first such byte,
    as the command line names them."""
    try:
        return decode(raw, encoding)
    except Undecodable as exc:
        raise Invalid(f"{where}: {exc}", problems=[{"where": where, "message": f"{exc}{hint}"}]) from None


def known_encoding(name: str | None, where: str = "encoding") -> str | None:
    """`name` when it names a text encoding (None for UTF-8); else a 422 naming it."""
    if name:
        try:
            decode(b"", name)
        except Undecodable as exc:
            raise Invalid(f"{where}: {exc}", problems=[{"where": where, "message": str(exc)}]) from None
    return name or None


def query_int(request: Request, name: str, default: int, low: int = 0, high: int = BIGGEST) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.lstrip("-").isdigit()) or len(raw) > 19:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return value


def query_text(request: Request, name: str, choices: tuple[str, ...] | None = None) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    checked(raw, f"query parameter {name}")
    if choices is not None and raw not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return raw
