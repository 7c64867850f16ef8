"""The web page's routes: Jinja2 templates, filled in and kept live by plain JavaScript."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from sop_engine import settings
from sop_engine.breakers import state_json
from sop_engine.dead_letters import ERROR_KINDS
from sop_engine.webhooks import EVENTS

from .access import may_control
from .api import document_json
from .api.schedules import firing_json, schedule_json
from .auth import COOKIE, can
from .config import asset_dir
from .db import off_loop
from .state import state_of

templates = Jinja2Templates(directory=str(asset_dir("templates")))


def _page(request: Request, name: str, status: int = 200, **context: object) -> Response:
    user = getattr(request.state, "user", None)
    return templates.TemplateResponse(request, name, {"who": user.name if user else None, **context}, status)


def _missing(request: Request, what: str) -> Response:
    return _page(request, "missing.html", 404, what=what)


async def sops_page(request: Request) -> Response:
    rows = await state_of(request).db.documents()
    return _page(request, "sops.html", sops=[document_json(r) for r in rows])


async def sop_page(request: Request) -> Response:
    state = state_of(request)
    row = await state.db.document(request.path_params["sop_id"])
    if row is None:
        return _missing(request, f"SOP {request.path_params['sop_id']}")
    return _page(request, "sop.html", sop=document_json(row, await off_loop(state.pool.document, row.id)))


async def runs_page(request: Request) -> Response:
    return _page(request, "runs.html")


async def run_page(request: Request) -> Response:
    run = await state_of(request).db.run(request.path_params["run_id"])
    if run is None:
        return _missing(request, f"run {request.path_params['run_id']}")
    return _page(request, "run.html", run_id=run.id, sop_id=run.sop_id)


async def dead_letters_page(request: Request) -> Response:
    return _page(request, "dead_letters.html", kinds=ERROR_KINDS)


async def batches_page(request: Request) -> Response:
    state = state_of(request)

    def summaries() -> list[dict[str, object]]:
        return [state.batches.summary(b.id) for b in state.store.batches()]

    return _page(request, "batches.html", batches=await off_loop(summaries))


async def batch_page(request: Request) -> Response:
    state = state_of(request)
    batch_id = request.path_params["batch_id"]
    if await state.db.batch(batch_id) is None:
        return _missing(request, f"batch {batch_id}")
    return _page(request, "batch.html", batch=await off_loop(state.batches.summary, batch_id))


async def schedules_page(request: Request) -> Response:
    state = state_of(request)
    user = getattr(request.state, "user", None)

    def shown() -> list[dict[str, object]]:
        return [
            {
                **schedule_json(row, 3, user is not None and may_control(user, row.created_by)),
                "firings": [firing_json(f) for f in state.store.firings(row.id, 5)],
            }
            for row in state.store.schedules()
        ]

    sops = [row.sop_id for row in await state.db.documents()]
    return _page(request, "schedules.html", schedules=await off_loop(shown), sops=sops)


async def webhooks_page(request: Request) -> Response:
    user = getattr(request.state, "user", None)
    return _page(request, "webhooks.html", admin=user is not None and can(user.role, "admin"), events=EVENTS)


async def breakers_page(request: Request) -> Response:
    state = state_of(request)
    found = [state_json(b) for b in await state.db.breakers()]
    return _page(request, "breakers.html", breakers=found, limits=state.runner.breakers.limits)


def _signed_in(request: Request, token: str) -> Response:
    target = request.query_params.get("next", "/")
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"  # only a page of this server: never an open redirect
    response = RedirectResponse(target, status_code=303)
    hours = settings.current().session_hours
    response.set_cookie(COOKIE, token, max_age=hours * 3600, httponly=True, samesite="strict", path="/")
    return response


async def login(request: Request) -> Response:
    """POST the token from the form, or open the URL `serve` printed once: either sets an HttpOnly cookie that
    expires; the page then replaces the URL in the browser's history, so the token is not kept there."""
    tokens = request.app.state.tokens
    if request.method == "POST":
        token = str((await request.form(max_files=0, max_fields=5)).get("token", ""))
    else:
        token = request.query_params.get("token", "")
    known = bool(token) and len(token) < 512 and await off_loop(tokens.user, token) is not None
    if known and request.method == "POST":
        return _signed_in(request, token)
    next_page = request.query_params.get("next")
    # a GET with the token: the page takes it out of the URL, then posts it, but only when the person opened
    # the URL themselves (typed, pasted, a bookmark: Sec-Fetch-Site none), never when another site sent the
    # browser here, which would sign the person in as someone else (login CSRF)
    if known and request.headers.get("sec-fetch-site", "none") in ("none", "same-origin"):
        return _page(request, "login.html", token=token, next=next_page)
    return _page(request, "login.html", failed=bool(token), next=next_page)


async def favicon(request: Request) -> Response:
    return Response(status_code=204)


routes = [
    Route("/favicon.ico", favicon),
    Route("/", sops_page),
    Route("/sops/{sop_id}", sop_page),
    Route("/runs", runs_page),
    Route("/runs/{run_id}", run_page),
    Route("/dead-letters", dead_letters_page),
    Route("/batches", batches_page),
    Route("/batches/{batch_id}", batch_page),
    Route("/schedules", schedules_page),
    Route("/webhooks", webhooks_page),
    Route("/breakers", breakers_page),
    Route("/login", login, methods=["GET", "POST"]),
]
