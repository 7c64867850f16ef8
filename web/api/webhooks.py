"""Webhooks: add (its secret shown once), list, remove, test; and a run's deliveries with every attempt."""

from __future__ import annotations

import socket
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from sop_engine.events import utcnow
from sop_engine.policy import PolicyError
from sop_engine.tables import WebhookDeliveryRow, WebhookRow
from sop_engine.vault import Vault
from sop_engine.webhooks import EVENTS, SERVER, URL_MAX, BadWebhookUrl, check_url_shape, new_id, new_secret

from ..access import name_of
from ..db import off_loop
from ..errors import Invalid, NotFound
from ..responses import Json
from ..state import state_of
from .endpoints import endpoint
from .reading import body_model

Event = Literal["run.completed", "run.failed", "run.cancelled", "run.escalated", "batch.finished"]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=URL_MAX)
    scope: str = Field(SERVER, min_length=1, max_length=200)  # "server", or an SOP id
    events: list[Event] = Field(default_factory=lambda: list(EVENTS), min_length=1, max_length=len(EVENTS))


class WebhookOut(BaseModel):
    id: str
    url: str
    scope: str
    events: list[str]
    enabled: bool
    created_at: str
    created_by: str | None
    failures: int
    last_status: str | None
    last_attempt_at: str | None
    secret: str | None = None  # only in the answer that created it


class WebhookListOut(BaseModel):
    webhooks: list[WebhookOut]


class DeletedOut(BaseModel):
    deleted: str


class TestOut(BaseModel):
    delivery: str


class AttemptOut(BaseModel):
    attempt: int
    at: str
    code: int | None
    error: str | None
    ms: float


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    next_attempt_at: str | None
    last_code: int | None
    last_error: str | None
    created_at: str
    finished_at: str | None
    log: list[AttemptOut]
    body: Any


class DeliveryListOut(BaseModel):
    deliveries: list[DeliveryOut]


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def webhook_json(row: WebhookRow, secret: str | None = None) -> dict[str, Any]:
    shown = {
        "id": row.id,
        "url": row.url,
        "scope": row.scope,
        "events": list(row.events),
        "enabled": row.enabled,
        "created_at": _iso(row.created_at),
        "created_by": row.created_by,
        "failures": row.failures,
        "last_status": row.last_status,
        "last_attempt_at": _iso(row.last_attempt_at),
    }
    if secret is not None:
        shown["secret"] = secret
    return shown


def delivery_json(row: WebhookDeliveryRow) -> dict[str, Any]:
    import json

    return {
        "id": row.id,
        "webhook_id": row.webhook_id,
        "event": row.event,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == "pending" else None,
        "last_code": row.last_code,
        "last_error": row.last_error,
        "created_at": _iso(row.created_at),
        "finished_at": _iso(row.finished_at),
        "log": list(row.log),
        "body": json.loads(row.body),
    }


async def _allowed(request: Request, url: str) -> None:
    """The egress policy of http steps, as at send time: deny lists on the name and literal addresses, and
    with an allow list, the addresses the name resolves to."""
    policy = state_of(request).runner.policy
    try:
        policy.check_url(url)
        if policy.allow:
            await policy.check_request(url)
    except PolicyError as exc:
        raise Invalid(f"the egress policy refuses this URL: {exc.message}") from None
    except (socket.gaierror, OSError):
        raise Invalid("the URL's host does not resolve, and an egress allow list is set") from None


@endpoint(
    "POST",
    "/webhooks",
    "Add a webhook (its secret is shown once)",
    WebhookOut,
    body=WebhookRequest,
    status=201,
    role="admin",
)
async def create_webhook(request: Request) -> Response:
    body = await body_model(request, WebhookRequest)
    try:
        url = check_url_shape(body.url)
    except BadWebhookUrl as exc:
        raise Invalid(str(exc)) from None
    await _allowed(request, url)
    state = state_of(request)
    if body.scope != SERVER and await state.db.document(body.scope) is None:
        raise Invalid(f"the scope is neither {SERVER!r} nor the id of a stored SOP: {body.scope[:80]!r}")
    secret = new_secret()
    sealed = await off_loop(lambda: Vault().seal({"secret": secret}))
    row = WebhookRow(
        id=new_id("wh"),
        url=url,
        scope=body.scope,
        events=list(dict.fromkeys(body.events)),
        secret=sealed,
        created_at=utcnow(),
        created_by=name_of(request),
    )
    await state.db.create_webhook(row)
    return Json(webhook_json(row, secret), status_code=201)


@endpoint("GET", "/webhooks", "Webhooks, with each one's failure streak (no secrets)", WebhookListOut, role="admin")
async def list_webhooks(request: Request) -> Response:
    rows = await state_of(request).db.webhooks()
    return Json({"webhooks": [webhook_json(r) for r in rows]})


@endpoint("DELETE", "/webhooks/{webhook_id}", "Remove a webhook", DeletedOut, role="admin")
async def delete_webhook(request: Request) -> Response:
    webhook_id = request.path_params["webhook_id"]
    if not await state_of(request).db.delete_webhook(webhook_id):
        raise NotFound(f"no webhook {webhook_id[:80]}")
    return Json({"deleted": webhook_id})


@endpoint("POST", "/webhooks/{webhook_id}/test", "Send a ping to a webhook", TestOut, status=202, role="admin")
async def test_webhook(request: Request) -> Response:
    webhook_id = request.path_params["webhook_id"]
    delivery = await state_of(request).db.notify_test(webhook_id)
    if delivery is None:
        raise NotFound(f"no webhook {webhook_id[:80]}")
    return Json({"delivery": delivery}, status_code=202)


@endpoint("GET", "/runs/{run_id}/deliveries", "A run's webhook deliveries, with every attempt", DeliveryListOut)
async def run_deliveries(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    state = state_of(request)
    if await state.db.run(run_id) is None:
        raise NotFound(f"no run {run_id[:80]}")
    rows = await state.db.deliveries(run_id=run_id)
    return Json({"deliveries": [delivery_json(r) for r in rows]})
