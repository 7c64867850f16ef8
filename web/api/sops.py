"""SOP documents: upload (YAML, JSON or a multipart file), list, read a version."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sop_engine.document import DocumentError, LoadedSop, load_sop
from sop_engine.text import has_unencodable

from ..access import name_of, require_owner_of_sop
from ..db import off_loop
from ..errors import BadRequest, Invalid, NotFound
from ..guard import DOCUMENT_TYPES
from ..responses import Json
from ..state import state_of
from .endpoints import Query, endpoint
from .reading import file_name, query_int, text_of, upload
from .serialize import SopDetailOut, SopListOut, SopOut, document_json


async def _document_text(request: Request) -> str:
    """The document's text: UTF-8, a byte-order mark dropped; other bytes are a 422 naming the first."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        raw, name, _ = await upload(request)
        return text_of(raw, file_name(name, "the file"))
    return text_of(await request.body(), "the body")


def _load(text: str) -> LoadedSop:
    """Parse and check a document (bounded in depth, size and template work), in a worker thread."""
    try:
        loaded = load_sop(text)
    except DocumentError as exc:
        raise Invalid("the document is not a valid SOP", problems=[p.as_dict() for p in exc.problems]) from None
    # warnings=False: a typed field may hold its template (count: "{{ n }}") until its step runs
    where = has_unencodable(loaded.sop.model_dump(mode="python", warnings=False))
    if where is not None:
        raise Invalid(f"the document holds text that is not valid Unicode ({where})")
    return loaded


@endpoint(
    "POST",
    "/sops",
    "Store an SOP document (a new version when its text changed)",
    SopDetailOut,
    body_types=DOCUMENT_TYPES,
    status=201,
    role="operator",
)
async def create_sop(request: Request) -> Response:
    text = await _document_text(request)
    if not text.strip():
        raise BadRequest("the body is empty: send a YAML or JSON SOP document")
    loaded = await off_loop(_load, text)
    state = state_of(request)
    sop_id = loaded.sop.id
    require_owner_of_sop(request, sop_id, await state.db.document_creator(sop_id))
    before = await state.db.document(sop_id)
    row = await state.db.save_document(loaded, created_by=name_of(request))
    created = before is None or before.version != row.version
    return Json(document_json(row, loaded), status_code=201 if created else 200)


@endpoint("GET", "/sops", "The latest version of every SOP", SopListOut)
async def list_sops(request: Request) -> Response:
    rows = await state_of(request).db.documents()
    return Json({"sops": [document_json(row) for row in rows]})


@endpoint(
    "GET",
    "/sops/{sop_id}",
    "One SOP: its inputs, outputs, steps and versions",
    SopDetailOut,
    query=(Query("version", "integer", "a version; the latest when left out", minimum=1),),
)
async def get_sop(request: Request) -> Response:
    state = state_of(request)
    sop_id = request.path_params["sop_id"]
    version = query_int(request, "version", 0, low=1) or None
    row = await state.db.document(sop_id, version)
    if row is None:
        raise NotFound(f"no SOP {sop_id}" + (f" version {version}" if version else ""))
    data = document_json(row, await off_loop(state.pool.document, row.id))
    data["versions"] = [
        {"version": v.version, "created_at": v.created_at.isoformat(), "content_hash": v.content_hash}
        for v in await state.db.versions(sop_id)
    ]
    return Json(data)


__all__ = ["SopOut"]
