"""Webhooks, the pure part: which changes notify, the body sent, its signature, the wait before the next
attempt, and the shape a webhook's URL must have. The outbox is written by the gate (store.journal), read
and sent by web.hooks.Dispatcher."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

from tenacity import RetryCallState, wait_exponential_jitter

from .states import RunStatus

EVENTS = ("run.completed", "run.failed", "run.cancelled", "run.escalated", "batch.finished")
RUN_EVENTS = {
    RunStatus.COMPLETED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
    RunStatus.PAUSED: "run.escalated",  # only when it waits for a decision on a failed step
}
SERVER = "server"  # the scope of a webhook told of every SOP's runs
URL_MAX = 2048
REPLAY_WINDOW = 300  # seconds a receiver should accept a timestamp either side of its clock (documented)
LEASE = timedelta(seconds=60)  # a claimed delivery is due again after this, if its sender died meanwhile
ERROR_MAX = 300  # characters of an attempt's error kept


class BadWebhookUrl(ValueError):
    """A webhook URL that no policy could make right: too long, not http(s), with credentials, no host."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>` with the webhook's secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(delivery_id: str, event: str, secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "sop-engine-webhooks",
        "X-SOP-Event": event,
        "X-SOP-Delivery": delivery_id,
        "X-SOP-Timestamp": str(timestamp),
        "X-SOP-Signature": signature(secret, timestamp, body),
    }


def run_event(status: RunStatus, waiting: dict[str, Any] | None) -> str | None:
    """The event a run's move to `status` notifies, if any: a pause only when it waits on a failed step."""
    if status == RunStatus.PAUSED and (waiting or {}).get("kind") != "failed":
        return None
    return RUN_EVENTS.get(status)


def run_body(delivery_id: str, event: str, run: Any, at: Any, origin: str | None) -> str:
    """The JSON body of a run's notification: what the run's row holds, which the runner masked before the
    gate wrote it (no secret input in clear)."""
    base = origin or ""
    body = {
        "delivery": delivery_id,
        "event": event,
        "at": at.isoformat(),
        "run": {
            "id": run.id,
            "sop_id": run.sop_id,
            "sop_version": run.sop_version,
            "status": run.status,
            "outputs": run.outputs,
            "error": run.error,
            "waiting": run.waiting if event == "run.escalated" else None,
            "batch_id": run.batch_id,
        },
        "links": {"run": f"{base}/runs/{run.id}", "api": f"{base}/api/runs/{run.id}"},
    }
    return json.dumps(body, separators=(",", ":"), default=str)


def batch_body(delivery_id: str, batch: Any, counts: dict[str, int], at: Any, origin: str | None) -> str:
    base = origin or ""
    body = {
        "delivery": delivery_id,
        "event": "batch.finished",
        "at": at.isoformat(),
        "batch": {
            "id": batch.id,
            "sop_id": batch.sop_id,
            "sop_version": batch.sop_version,
            "status": batch.status,
            "rows": batch.rows,
            "counts": counts,
        },
        "links": {"batch": f"{base}/batches/{batch.id}", "api": f"{base}/api/batches/{batch.id}"},
    }
    return json.dumps(body, separators=(",", ":"), default=str)


def next_wait(attempt: int, first_ms: int, most_ms: int) -> timedelta:
    """How long after its `attempt`-th failed attempt a delivery is due again: tenacity's exponential wait
    with jitter (first, 2×first, 4×first… up to the most, plus up to `first` of jitter), kept in the outbox
    as a time rather than slept."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    first, most = first_ms / 1000, most_ms / 1000
    wait = wait_exponential_jitter(initial=first, max=most, jitter=first)
    return timedelta(seconds=min(wait(state), most))


def check_url_shape(url: Any) -> str:
    """The URL as it will be called, or BadWebhookUrl saying what is wrong with it."""
    import httpx

    if not isinstance(url, str) or not url.strip():
        raise BadWebhookUrl("the URL is empty")
    url = url.strip()
    if len(url) > URL_MAX:
        raise BadWebhookUrl(f"the URL is longer than {URL_MAX} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise BadWebhookUrl("the URL holds spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise BadWebhookUrl(f"the URL is not valid: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise BadWebhookUrl("only http: and https: URLs may be called")
    if parsed.userinfo:
        raise BadWebhookUrl("the URL holds credentials (user:password@); put them in no URL")
    if not parsed.host:
        raise BadWebhookUrl("the URL has no host")
    if parsed.fragment:
        raise BadWebhookUrl("the URL has a #fragment, which is never sent")
    return url
