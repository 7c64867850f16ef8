"""OpenTelemetry tracing: a span per piece of a run and per step, made from the run's events (SpanSink), with
the context of whatever created the run (an API request, a command) carried to whoever executes it as a W3C
traceparent in `runs.trace_context`.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (settings.otlp_endpoint): then no tracer exists, no sink is made,
nothing of OpenTelemetry's SDK is even imported. On, spans go over OTLP/HTTP through a BatchSpanProcessor; the
exporter reads its own OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression, a traces endpoint) as the
SDK documents them. Tests install a provider of their own (`install`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from . import settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Tracer, TracerProvider

    from .events import EventSink
    from .store import Store

log = logging.getLogger("sop_engine.telemetry")
R = TypeVar("R")
_tracer: Tracer | None = None
_installed: TracerProvider | None = None
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def install(provider: TracerProvider | None) -> None:
    """Spans of this process go to `provider` from now on (None: no spans). Tests install an SDK provider with
    an in-memory exporter; `start` installs the OTLP one."""
    global _tracer, _installed
    _installed = provider
    _tracer = provider.get_tracer("sop_engine") if provider is not None else None


def tracing() -> bool:
    return _tracer is not None


def start(role: str) -> TracerProvider | None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, and no provider installed yet: installs one exporting over
    OTLP/HTTP, service.name `sop-engine`, `sop.role` the process's role (server, worker, cli). Returns what it
    installed, for `stop`."""
    if _tracer is not None or settings.current().otlp_endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .liveness import worker_name

    resource = Resource.create({"service.name": "sop-engine", "sop.role": role, "service.instance.id": worker_name()})
    provider = SdkProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return provider


def stop(provider: TracerProvider | None) -> None:
    """Exports the spans still buffered and shuts `provider` down (what `start` returned; None: nothing).
    Blocking: from async code, in a thread."""
    if provider is None:
        return
    if _installed is provider:
        install(None)
    provider.shutdown()  # type: ignore[attr-defined]


def sinks(store: Store) -> list[EventSink]:
    """The event sinks tracing adds to a Runner: none when it is off."""
    if _tracer is None:
        return []
    from .spans import SpanSink

    return [SpanSink(store, _tracer)]


# the context carried from whatever creates a run to whoever executes it --------------------------------------


def _w3c() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def traceparent() -> str | None:
    """The current span's context as a W3C traceparent, kept with a run it creates; None without one."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _w3c().inject(carrier)
    return carrier.get("traceparent")


def remote(headers: Mapping[str, str] | None) -> Context | None:
    """The context a caller sent (`traceparent`, `tracestate`); a malformed one is ignored (a new trace)."""
    if not headers or not headers.get("traceparent"):
        return None
    return _w3c().extract({k: v for k in ("traceparent", "tracestate") if (v := headers.get(k))})


@contextmanager
def span(name: str, headers: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span current for the block (None when tracing is off): with `headers`, a request's server span that
    continues the caller's trace when it sent a traceparent."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    kind = SpanKind.SERVER if headers is not None else SpanKind.INTERNAL
    with _tracer.start_as_current_span(
        name,
        remote(headers),
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_attribute("error.type", type(exc).__name__)
            raise


def request_span(name: str) -> Callable[[Callable[[Any], Awaitable[R]]], Callable[[Any], Awaitable[R]]]:
    """An API handler `handler(request)` in a server span named `name`, continuing the caller's trace: the runs
    it creates keep that span's context. A client's mistake (4xx) is not the span's error."""

    def wrap(handler: Callable[[Any], Awaitable[R]]) -> Callable[[Any], Awaitable[R]]:
        @functools.wraps(handler)
        async def traced(request: Any) -> R:
            if _tracer is None:
                return await handler(request)
            with span(name, request.headers) as current:
                response = await handler(request)
                current.set_attribute("http.response.status_code", getattr(response, "status_code", 0))
                return response

        return traced

    return wrap


def nanoseconds(at: datetime) -> int:
    """An event's time as OpenTelemetry's nanoseconds since the epoch, exactly."""
    return (at - EPOCH) // timedelta(microseconds=1) * 1000
