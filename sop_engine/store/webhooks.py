"""Webhooks and their outbox. The gate (journal) writes a delivery in the transaction of the change it tells
of (`notify_run`, `notify_batch`), so that a crash cannot lose one; every process with a dispatcher claims
due deliveries with a conditional update (two processes never send the same one at once) and records each
attempt with its outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, insert, or_, select, update

from .. import settings
from ..events import utcnow
from ..states import RunStatus
from ..tables import BatchItemRow, BatchRow, RunRow, WebhookDeliveryRow, WebhookRow
from ..webhooks import LEASE, SERVER, batch_body, new_id, run_body, run_event
from .database import Database

log = logging.getLogger("sop_engine.webhooks")
HOOKS, OUTBOX = WebhookRow.__table__, WebhookDeliveryRow.__table__  # type: ignore[attr-defined]
RUNS, BATCHES = RunRow.__table__, BatchRow.__table__  # type: ignore[attr-defined]
LEFT = ("queued", "running", "paused")


@dataclass(frozen=True)
class Due:
    """A delivery claimed for sending, with what sending it needs."""

    id: str
    event: str
    body: str
    attempts: int  # made before this one
    created_at: datetime
    webhook_id: str
    url: str
    secret: str  # sealed


def _due(now: datetime) -> Any:
    return and_(OUTBOX.c.status == "pending", OUTBOX.c.next_attempt_at <= now)


def _subscribed(conn: Any, scope: str, event: str) -> list[str]:
    rows = conn.execute(
        select(HOOKS.c.id, HOOKS.c.events).where(HOOKS.c.enabled.is_(True), HOOKS.c.scope.in_((SERVER, scope)))
    )
    return [row.id for row in rows if event in (row.events or [])]


def _enqueue(conn: Any, hooks: list[str], event: str, at: datetime, body_of: Any, **ids: Any) -> None:
    rows = []
    for hook in hooks:
        delivery = new_id("dlv")
        rows.append(
            {
                "id": delivery,
                "webhook_id": hook,
                "event": event,
                "body": body_of(delivery),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": at,
                "log": [],
                "created_at": at,
                **ids,
            }
        )
    if rows:
        conn.execute(insert(OUTBOX), rows)


def notify_run(conn: Any, run_id: str, status: RunStatus, at: datetime) -> None:
    """In the gate's transaction, after a run moved to `status`: a delivery for each webhook that follows it,
    and the run's batch finished when this was its last run going."""
    if status not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED):
        return
    run = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    if run is None:
        return
    event = run_event(status, run.waiting)
    if event is not None:
        hooks = _subscribed(conn, run.sop_id, event)
        origin = settings.current().public_origin
        _enqueue(conn, hooks, event, at, lambda d: run_body(d, event, run, at, origin), run_id=run_id)
    if run.batch_id is not None and status != RunStatus.PAUSED:
        finish_batch(conn, run.batch_id, at)


def finish_batch(conn: Any, batch_id: str, at: datetime) -> None:
    """The batch completed, if it was running and none of its runs is left to go (a conditional update: of
    two runs ending at once, one finishes it), with its batch.finished deliveries."""
    # the batch's row locked first (PostgreSQL; SQLite's writers take turns already): of two of its last runs
    # ending at once, the second waits here for the first to commit, and then sees it ended, so one of them
    # finishes the batch rather than neither
    conn.execute(select(BATCHES.c.id).where(BATCHES.c.id == batch_id).with_for_update())
    going = exists().where(RUNS.c.batch_id == batch_id, RUNS.c.status.in_(LEFT))
    done = conn.execute(
        update(BATCHES)
        .where(BATCHES.c.id == batch_id, BATCHES.c.status == "running", ~going)
        .values(status="completed", finished_at=at)
    )
    if done.rowcount:
        notify_batch(conn, batch_id, at)


def notify_batch(conn: Any, batch_id: str, at: datetime) -> None:
    batch = conn.execute(select(BATCHES).where(BATCHES.c.id == batch_id)).first()
    if batch is None:
        return
    hooks = _subscribed(conn, batch.sop_id, "batch.finished")
    if not hooks:
        return
    items = BatchItemRow.__table__  # type: ignore[attr-defined]
    counted = conn.execute(
        select(RUNS.c.status, func.count())
        .join(items, items.c.run_id == RUNS.c.id)
        .where(items.c.batch_id == batch_id)
        .group_by(RUNS.c.status)
    )
    counts = {status: n for status, n in counted}
    origin = settings.current().public_origin
    _enqueue(conn, hooks, "batch.finished", at, lambda d: batch_body(d, batch, counts, at, origin), batch_id=batch_id)


class Webhooks(Database):
    def create_webhook(self, row: WebhookRow) -> WebhookRow:
        with self.session() as s, s.begin():
            s.add(row)
        return row

    def webhooks(self) -> list[WebhookRow]:
        with self.reading() as s:
            return list(s.scalars(select(WebhookRow).order_by(WebhookRow.created_at)))  # type: ignore[arg-type]

    def webhook(self, webhook_id: str) -> WebhookRow | None:
        with self.reading() as s:
            return s.get(WebhookRow, webhook_id)

    def delete_webhook(self, webhook_id: str) -> bool:
        """Removes it; its deliveries still pending end failed (their history stays)."""
        now = utcnow()
        with self._write() as conn:
            gone = conn.execute(HOOKS.delete().where(HOOKS.c.id == webhook_id)).rowcount
            conn.execute(
                update(OUTBOX)
                .where(OUTBOX.c.webhook_id == webhook_id, OUTBOX.c.status == "pending")
                .values(status="failed", last_error="the webhook was removed", finished_at=now)
            )
        return bool(gone)

    def deliveries(self, run_id: str | None = None, webhook_id: str | None = None, limit: int = 100) -> list[Any]:
        query = select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.created_at.desc())  # type: ignore[union-attr]
        if run_id is not None:
            query = query.where(WebhookDeliveryRow.run_id == run_id)
        if webhook_id is not None:
            query = query.where(WebhookDeliveryRow.webhook_id == webhook_id)
        with self.reading() as s:
            return list(s.scalars(query.limit(limit)))

    def notify_test(self, webhook_id: str) -> str | None:
        """A `ping` delivery of one webhook, sent like the others; its id, or None without such a webhook."""
        import json

        at = utcnow()
        with self._write() as conn:
            if conn.execute(select(HOOKS.c.id).where(HOOKS.c.id == webhook_id)).first() is None:
                return None
            delivery = new_id("dlv")
            body = json.dumps({"delivery": delivery, "event": "ping", "at": at.isoformat(), "webhook": webhook_id})
            conn.execute(
                insert(OUTBOX),
                [
                    {
                        "id": delivery,
                        "webhook_id": webhook_id,
                        "event": "ping",
                        "body": body,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": at,
                        "log": [],
                        "created_at": at,
                    }
                ],
            )
        return delivery

    def claim_deliveries(self, limit: int = 20, lease: timedelta = LEASE) -> list[Due]:
        """Deliveries due now, each claimed (`take_deliveries`). One indexed query when nothing is due."""
        return self.take_deliveries(self.due_deliveries(limit), lease)

    def due_deliveries(self, limit: int = 20) -> list[str]:
        now = utcnow()
        query = select(OUTBOX.c.id).where(_due(now)).order_by(OUTBOX.c.next_attempt_at).limit(limit)
        with self.reading() as s:
            return list(s.execute(query).scalars())

    def take_deliveries(self, seen: list[str], lease: timedelta = LEASE) -> list[Due]:
        """Of deliveries read as due, those this process claims: each by moving its due time on by `lease`
        with a conditional update, so that another process that read it as due too finds it no longer due and
        skips it (and it is due again if this one dies before it records the attempt)."""
        if not seen:
            return []
        now = utcnow()
        claimed: list[Due] = []
        with self._write() as conn:
            for delivery_id in seen:
                moved = conn.execute(
                    update(OUTBOX).where(OUTBOX.c.id == delivery_id, _due(now)).values(next_attempt_at=now + lease)
                )
                if not moved.rowcount:
                    continue
                row = conn.execute(
                    select(OUTBOX, HOOKS.c.url, HOOKS.c.secret)
                    .join(HOOKS, HOOKS.c.id == OUTBOX.c.webhook_id)
                    .where(OUTBOX.c.id == delivery_id)
                ).first()
                if row is None:  # its webhook was removed meanwhile
                    conn.execute(
                        update(OUTBOX)
                        .where(OUTBOX.c.id == delivery_id)
                        .values(status="failed", last_error="the webhook was removed", finished_at=now)
                    )
                    continue
                claimed.append(
                    Due(row.id, row.event, row.body, row.attempts, row.created_at, row.webhook_id, row.url, row.secret)
                )
        return claimed

    def record_attempt(self, due: Due, attempt: dict[str, Any], retry_in: timedelta | None) -> str:
        """One attempt of a claimed delivery, with its outcome: delivered (a 2xx), again after `retry_in`, or
        failed (`retry_in` None after a failure). Also the webhook's last status and failure streak. Returns
        the delivery's status."""
        now = utcnow()
        ok = attempt.get("code") is not None and 200 <= attempt["code"] < 300
        status = "delivered" if ok else ("pending" if retry_in is not None else "failed")
        with self._write() as conn:
            log_now = conn.execute(select(OUTBOX.c.log).where(OUTBOX.c.id == due.id)).scalar_one_or_none() or []
            values: dict[str, Any] = {
                "status": status,
                "attempts": due.attempts + 1,
                "last_code": attempt.get("code"),
                "last_error": attempt.get("error"),
                "log": [*log_now, attempt],
            }
            if status == "pending":
                values["next_attempt_at"] = now + (retry_in or timedelta())
            else:
                values["finished_at"] = now
            conn.execute(update(OUTBOX).where(OUTBOX.c.id == due.id).values(**values))
            shown = str(attempt["code"]) if attempt.get("code") is not None else str(attempt.get("error"))[:100]
            hook: dict[str, Any] = {"last_status": shown, "last_attempt_at": now}
            if status == "delivered":
                hook["failures"] = 0
            elif status == "failed":
                hook["failures"] = HOOKS.c.failures + 1
            conn.execute(update(HOOKS).where(HOOKS.c.id == due.webhook_id).values(**hook))
        return status

    def failing_webhooks(self) -> list[WebhookRow]:
        with self.reading() as s:
            return list(s.scalars(select(WebhookRow).where(or_(WebhookRow.failures > 0))))  # type: ignore[arg-type]
