"""OpenTelemetry tracing: a span per piece of a run and per step, made from the run's events (SpanSink), with
the context of whatever created the run (an API request, a command) carried to whoever executes it as a W3C
traceparent in `runs.trace_context`.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (settings.otlp_endpoint): then no tracer exists, no sink is made,
nothing of OpenTelemetry's SDK is even imported. On, spans go over OTLP/HTTP through a BatchSpanProcessor; the
exporter reads its own OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression, a traces endpoint) as the
SDK documents them. Tests install a provider of their own (`install`)."""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
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
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SDK = (  # what an OTLP provider needs: loaded in a thread as a process starts (it takes a tenth of a second)
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk.resources",
    "opentelemetry.sdk.trace.export",
    "sop_engine.spans",
)


@dataclass
class Started:
    """What `start` asked for: its provider is made when a span is first needed, so that loading the SDK goes on
    beside the process's own start (Chromium's, the document's)."""

    role: str
    loading: threading.Thread
    provider: TracerProvider | None = None


_tracer: Tracer | None = None
_installed: TracerProvider | None = None
_pending: Started | None = None
_making = threading.Lock()


def install(provider: TracerProvider | None) -> None:
    """Spans of this process go to `provider` from now on (None: no spans). Tests install an SDK provider with
    an in-memory exporter; `start` installs the OTLP one."""
    global _tracer, _installed
    _installed = provider
    _tracer = provider.get_tracer("sop_engine") if provider is not None else None


def _current() -> Tracer | None:
    """The tracer, made now if `start` asked for one: None when tracing is off (at once: nothing is loaded)."""
    global _pending
    if _pending is None:
        return _tracer
    with _making:
        if _pending is not None:
            started, _pending = _pending, None
            started.provider = _otlp_provider(started.role)
            install(started.provider)
    return _tracer


def tracing() -> bool:
    return _current() is not None


def start(role: str) -> Started | None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, and no provider installed yet: this process's spans go over
    OTLP/HTTP, service.name `sop-engine`, `sop.role` its role (server, worker, cli). Returns a handle for `stop`."""
    global _pending
    if _tracer is not None or _pending is not None or settings.current().otlp_endpoint is None:
        return None
    loading = threading.Thread(target=_load_sdk, name="otel-sdk", daemon=True)
    loading.start()
    _pending = Started(role, loading)
    return _pending


def _load_sdk() -> None:
    for module in SDK:
        importlib.import_module(module)


def _otlp_provider(role: str) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .liveness import worker_name

    resource = Resource.create({"service.name": "sop-engine", "sop.role": role, "service.instance.id": worker_name()})
    provider = SdkProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def stop(started: Started | None) -> None:
    """Exports the spans still buffered and shuts the provider down (`started`: what `start` returned; None:
    nothing). Blocking: from async code, in a thread."""
    global _pending
    if started is None:
        return
    with _making:
        if _pending is started:  # no span was ever needed
            _pending = None
    started.loading.join()
    if started.provider is not None:
        if _installed is started.provider:
            install(None)
        started.provider.shutdown()  # type: ignore[attr-defined]


def sinks(store: Store) -> list[EventSink]:
    """The event sinks tracing adds to a Runner: none when it is off."""
    tracer = _current()
    if tracer is None:
        return []
    from .spans import SpanSink

    return [SpanSink(store, tracer)]


# the context carried from whatever creates a run to whoever executes it --------------------------------------


def _w3c() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def traceparent() -> str | None:
    """The current span's context as a W3C traceparent, kept with a run it creates; None without one."""
    if _current() is None:
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
    tracer = _current()
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    kind = SpanKind.SERVER if headers is not None else SpanKind.INTERNAL
    with tracer.start_as_current_span(
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
            if _current() is None:
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
