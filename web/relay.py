"""Controls across processes. With Redis, a control on a run that another process executes (`run.worker`
names it) goes to that process, which applies it with its own Controls (its pool has the run's RunControl)
and answers; the gate in the store still decides every status change, and the holder alone writes the audit.

Every process whose pool executes runs listens on `sop:control:<its worker name>`; a process that sends
controls reads the answers on `sop:reply:<its name>`. A request carries an id; the holder answers at once
that it has it (`received`), then with the outcome (`done`: ok, or a refusal's status and message). The
sender waits a bounded time for each: a holder that does not say it has the request within ACK seconds, or
does not finish within DONE, gets the caller a 503 naming it, never a hang. When no process listens on the
holder's channel (it stopped; the command line executes the run), the control is applied here, as without
Redis.

Every message read from Redis is checked (pydantic); one that does not fit is logged and dropped. A form's
values travel sealed with the vault's key (SOP_SECRET_KEY, which the processes of a cluster share)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from sop_engine import settings
from sop_engine.states import TransitionError
from sop_engine.store import Store

from . import broker
from .controls import Controls
from .db import AsyncStore
from .errors import ApiError, HolderUnavailable, Invalid, NotFound, Refused
from .workers import WorkerPool

log = logging.getLogger("sop_engine.web.relay")

ACK = 3.0  # seconds a holder has to say it has a request
DONE = 30.0  # seconds it has to apply it (taking a run back from its worker may take 15)
MAX_MESSAGE = 256 * 1024  # bytes: a request is a small JSON object, a form's values included
TTL = int(ACK + DONE + 30)  # seconds a sealed message is good for: no replay of an old control later
STOPPING = 5.0  # seconds the requests being applied have to finish when the process stops
RETRY = (0.5, 10.0)  # seconds between tries to listen again after Redis went away, doubling up to the second
ID = r"^[0-9a-f]{32}$"
ARGUMENTS = ("key", "on", "values", "who", "action")  # what a control may take besides the run and its document


def control_channel(name: str) -> str:
    return f"sop:control:{name}"


def reply_channel(name: str) -> str:
    return f"sop:reply:{name}"


class ControlRequest(BaseModel):
    """A control a person asked of a run, for the process that holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID)
    sender: str = Field(min_length=1, max_length=300)  # its answers go to reply_channel(sender)
    control: Literal["pause", "resume", "cancel", "rollback", "skip", "retry", "rerun", "breakpoint", "submit"]
    run_id: str = Field(min_length=1, max_length=64)
    who: str = Field(min_length=1, max_length=300)
    key: str | None = Field(None, min_length=1, max_length=2000)
    action: Literal["resume", "step"] | None = None
    on: bool | None = None
    values: str | None = Field(None, max_length=MAX_MESSAGE)  # sealed with the vault


class ControlReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID)
    state: Literal["received", "done"]
    status: int = Field(200, ge=200, le=599)
    error: str | None = Field(None, max_length=10_000)


def _refusal(status: int, message: str) -> ApiError:
    """The holder's refusal, raised here as it was there (a batch's cancel passes over a Refused)."""
    known: dict[int, type[ApiError]] = {404: NotFound, 409: Refused, 422: Invalid, 503: HolderUnavailable}
    if status in known:
        return known[status](message)
    error = ApiError(message)
    error.status = status
    return error


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())


@dataclass
class _Pending:
    received: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future[ControlReply] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ControlRelay:
    """Sends this process's controls on runs held elsewhere; with `serves`, takes other processes' controls
    on the runs its pool executes."""

    def __init__(self, redis: Redis, controls: Controls, serves: bool) -> None:
        self.redis = redis
        self.controls = controls
        self.name = controls.pool.name
        self.serves = serves
        self.channels = [reply_channel(self.name)] + ([control_channel(self.name)] if serves else [])
        self.listening = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, controls: Controls, url: str | None) -> ControlRelay | None:
        """The relay of a process's Controls (None without Redis): it takes controls when its pool executes runs."""
        if not url:
            return None
        relay = cls(broker.connect(url), controls, serves=controls.pool.concurrency > 0)
        controls.relay = relay
        return relay

    # sending --------------------------------------------------------------------------------

    async def forward(self, holder: str, control: str, arguments: dict[str, Any]) -> bool:
        """Has `holder` apply the control and returns True, or raises its refusal (or HolderUnavailable); False
        when no process listens on its channel (or Redis is away): the caller applies it itself."""
        if not self.listening.is_set():  # its answer would not be heard: as without Redis
            log.warning("not listening to Redis: a %s on a run %s holds is applied here", control, holder)
            return False
        values = arguments.get("values")
        request = ControlRequest(
            id=uuid.uuid4().hex,
            sender=self.name,
            control=control,  # type: ignore[arg-type]
            **{name: arguments[name] for name in ("run_id", "who", "key", "action", "on") if name in arguments},
            values=None if values is None else self.controls.pool.runner.vault.seal(values),
        )
        pending = self._pending[request.id] = _Pending()
        try:
            try:
                listeners = await self.redis.publish(control_channel(holder), self._sealed(request))
            except (RedisError, OSError) as exc:
                log.warning("cannot send a control to %s through Redis (%s): applied here", holder, exc)
                return False
            if not listeners:
                return False
            try:
                async with asyncio.timeout(ACK):
                    await pending.received.wait()
            except TimeoutError:
                raise HolderUnavailable(f"the run is executed by {holder}, which did not answer: try again") from None
            try:
                async with asyncio.timeout(DONE):
                    reply = await pending.done
            except TimeoutError:
                raise HolderUnavailable(
                    f"the run is executed by {holder}, which took the {control} but did not finish it within "
                    f"{DONE:.0f}s: it may still take effect; look at the run again"
                ) from None
        finally:
            self._pending.pop(request.id, None)
        if reply.status >= 300:
            raise _refusal(reply.status, reply.error or f"refused by {holder}")
        return True

    # taking ---------------------------------------------------------------------------------

    async def _serve(self, request: ControlRequest) -> None:
        await self._answer(request, ControlReply(id=request.id, state="received"))
        status, error = 200, None
        try:
            await self._apply(request)
        except ApiError as exc:
            status, error = exc.status, exc.message
        except TransitionError as exc:  # the gate refused it: another writer came first
            status, error = 409, str(exc)
        except DBAPIError as exc:
            log.warning("a control from %s found the database unavailable: %s", request.sender, exc)
            status, error = 503, "the database is unavailable for now: try again shortly"
        except Exception:
            log.exception("control %s on run %s from %s failed", request.control, request.run_id, request.sender)
            status, error = 500, f"internal error in {self.name}: see its log"
        await self._answer(request, ControlReply(id=request.id, state="done", status=status, error=error))

    async def _apply(self, request: ControlRequest) -> None:
        controls = self.controls
        run = await controls.store.run(request.run_id)
        if run is None:
            raise NotFound(f"no run {request.run_id}")
        given = request.model_dump(include=set(ARGUMENTS), exclude_none=True)
        if request.values is not None:
            try:
                given["values"] = controls.pool.runner.vault.open(request.values)
            except ValueError:
                raise HolderUnavailable(
                    f"{self.name} cannot read the form's values: is SOP_SECRET_KEY the same?"
                ) from None
        wanted = inspect.signature(getattr(type(controls), request.control)).parameters
        if "loaded" in wanted:
            given["loaded"] = await asyncio.to_thread(controls.pool.document, run.document_id)
        await controls.here(request.control, request.run_id, **{k: v for k, v in given.items() if k in wanted})

    async def _answer(self, request: ControlRequest, reply: ControlReply) -> None:
        try:
            await self.redis.publish(reply_channel(request.sender), self._sealed(reply))
        except (RedisError, OSError) as exc:
            log.warning("cannot answer a control from %s: %s", request.sender, exc)

    # listening ------------------------------------------------------------------------------

    def _sealed(self, message: BaseModel) -> bytes:
        # sealed with the cluster's key: whoever can publish on Redis cannot make a control, nor read a form
        return self.controls.pool.runner.vault.seal_message(message.model_dump_json())

    def _received(self, channel: str, sealed: bytes) -> None:
        if len(sealed) > MAX_MESSAGE:
            log.warning("ignored a message of %d bytes on %s", len(sealed), channel)
            return
        try:
            data = self.controls.pool.runner.vault.open_message(sealed, TTL)
        except ValueError as exc:
            log.warning("ignored a message on %s: %s", channel, exc)
            return
        if channel == reply_channel(self.name):
            try:
                reply = ControlReply.model_validate_json(data)
            except ValidationError as exc:
                log.warning("ignored an answer that does not fit on %s: %s", channel, _problems(exc))
                return
            pending = self._pending.get(reply.id)
            if pending is None:
                return  # too late: its caller was answered already
            pending.received.set()
            if reply.state == "done" and not pending.done.done():
                pending.done.set_result(reply)
            return
        try:
            request = ControlRequest.model_validate_json(data)
        except ValidationError as exc:
            log.warning("ignored a control request that does not fit on %s: %s", channel, _problems(exc))
            return
        task = asyncio.create_task(self._serve(request), name=f"control-{request.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self) -> None:
        """Reads this process's channels for as long as it lives: Redis going away makes it wait and listen
        again, never ends it."""
        pause = RETRY[0]
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(*self.channels)
                confirmed = 0
                async for message in pubsub.listen():
                    pause = RETRY[0]
                    if message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(self.channels):
                            self.listening.set()
                    elif message["type"] == "message":
                        self._received(message["channel"].decode(errors="replace"), message["data"])
            except Exception as exc:  # Redis went away (or worse): listen again, never stop listening
                self.listening.clear()
                log.warning("not listening to Redis (%s): trying again in %.1fs", exc or type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY[1])
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def start(self) -> None:
        """Returns once Redis has confirmed every subscription (or, Redis away, after a while: the listener
        keeps trying)."""
        self._listener = asyncio.create_task(self._listen(), name="control-relay")
        try:
            async with asyncio.timeout(10):
                await self.listening.wait()
        except TimeoutError:
            log.warning("the control relay is not listening to Redis yet: controls wait for it")

    async def stop(self) -> None:
        """Takes no more requests; those being applied get a few seconds to finish and answer."""
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOPPING)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()


def relay_for_worker(store: Store, pool: WorkerPool) -> ControlRelay | None:
    """The relay of a process that executes runs and serves no API (the `worker` command): it takes the
    controls the servers send for the runs its pool executes. None without SOP_REDIS_URL; else
    `await relay.start()` before `pool.start()`, `await relay.stop()` before `pool.stop()`."""
    return ControlRelay.attach(Controls(AsyncStore(store), pool), settings.current().redis_url)
