"""The webhook dispatcher, in every server and worker process: claims due deliveries from the outbox
(store.webhooks), signs and sends each through the egress policy (checked again at send time, and by the
transport at connect time, so a DNS change cannot bypass it), and records every attempt. A failed attempt
makes the delivery due again later (tenacity's exponential wait with jitter, kept in the outbox, never slept
here); runs never wait for any of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

import httpx

from sop_engine import settings
from sop_engine.events import utcnow
from sop_engine.policy import NetworkPolicy, PolicyError
from sop_engine.store import Due, Store
from sop_engine.vault import Vault
from sop_engine.webhooks import ERROR_MAX, LEASE, headers, next_wait

log = logging.getLogger("sop_engine.webhooks")
AT_ONCE = 8  # deliveries in flight at once in one process: a slow endpoint holds only its own


class Dispatcher:
    def __init__(self, store: Store, policy: NetworkPolicy) -> None:
        self.store = store
        self.policy = policy
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._flying: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self._vault: Vault | None = None

    async def start(self) -> None:
        self._client = self.policy.http_client()
        self._task = asyncio.create_task(self._loop(), name="webhooks")

    async def stop(self) -> None:
        """Deliveries in flight are dropped: claimed, they are due again when their lease ends."""
        tasks = [t for t in (self._task, *self._flying) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _loop(self) -> None:
        options = settings.current()
        poll = options.webhook_poll_ms / 1000
        # a claim lasts well beyond one attempt: no other process takes a delivery while it is being sent
        lease = max(LEASE, timedelta(seconds=3 * options.webhook_timeout_seconds))
        while True:
            room = AT_ONCE - len(self._flying)
            claimed: list[Due] = []
            if room > 0:
                try:
                    claimed = await asyncio.to_thread(self.store.claim_deliveries, room, lease)
                except Exception as exc:  # the database is away: the outbox waits for it
                    log.warning("webhooks: cannot read the outbox: %s", exc)
            for due in claimed:
                task = asyncio.create_task(self._deliver(due), name=f"webhook-{due.id}")
                self._flying.add(task)
                task.add_done_callback(self._landed)
            if len(claimed) < room:  # nothing more due now: wait for the next look, or a free place
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), poll)
            elif room <= 0:
                self._freed.clear()
                await self._freed.wait()

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._flying.discard(task)
        self._freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.warning("webhooks: a delivery could not be recorded: %s", task.exception())

    async def _deliver(self, due: Due) -> None:
        options = settings.current()
        attempt, permanent = await self._attempt(due, options.webhook_timeout_seconds)
        number = attempt["attempt"]
        ok = attempt["code"] is not None and 200 <= attempt["code"] < 300
        retry_in: timedelta | None = None
        if not ok and not permanent and number < options.webhook_max_attempts:
            retry_in = next_wait(number, options.webhook_backoff_ms, options.webhook_backoff_max_ms)
        status = await asyncio.to_thread(self.store.record_attempt, due, attempt, retry_in)
        if status == "failed":
            hook = await asyncio.to_thread(self.store.webhook, due.webhook_id)
            streak = hook.failures if hook is not None else "?"
            log.warning(
                "webhook %s: delivery %s (%s) failed after %d attempt(s): %s; %s deliveries in a row failed",
                due.webhook_id,
                due.id,
                due.event,
                number,
                attempt["error"],
                streak,
            )

    async def _attempt(self, due: Due, timeout: float) -> tuple[dict[str, Any], bool]:
        """One signed POST: the attempt as recorded, and whether it is no use trying again."""
        assert self._client is not None
        started, at = time.monotonic(), utcnow()
        code: int | None = None
        error: str | None = None
        permanent = False
        try:
            if self._vault is None:
                self._vault = Vault()
            secret = self._vault.open(due.secret)["secret"]
            body = due.body.encode()
            sent = headers(due.id, due.event, secret, int(time.time()), body)
            await self.policy.check_request(due.url)
            request = self._client.build_request("POST", due.url, content=body, headers=sent, timeout=timeout)
            response = await self._client.send(request, follow_redirects=False, stream=True)
            await response.aclose()  # the answer's body is not read: its status is the answer
            code = response.status_code
            if not 200 <= code < 300:
                error = f"answered {code}"
        except PolicyError as exc:
            error, permanent = f"refused: {exc.message}", True
        except ValueError as exc:  # the secret cannot be opened (the key changed)
            error, permanent = str(exc), True
        except httpx.TimeoutException:
            error = f"no answer within {timeout:g} s"
        except (httpx.HTTPError, OSError) as exc:
            error = f"could not connect: {type(exc).__name__}"
        attempt = {
            "attempt": due.attempts + 1,
            "at": at.isoformat(),
            "code": code,
            "error": error[:ERROR_MAX] if error else None,
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
        return attempt, permanent
