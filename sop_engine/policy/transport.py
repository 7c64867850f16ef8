"""The http action's transport: every connection goes to an address the policy checked just before it
connected, so a host name that resolves to a public address for the check and to an internal one a moment
later (DNS rebinding) still reaches only the address that was checked."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from .network import NetworkPolicy, PolicyError

_path: contextvars.ContextVar[str | None] = contextvars.ContextVar("egress_path", default=None)


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, connects to the checked ones: the check and the connection use one
    resolution. TLS still verifies the certificate against the host name (httpcore passes it on)."""

    def __init__(self, policy: NetworkPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.policy.connect_addresses(host, port, _path.get())
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} did not resolve: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise PolicyError("egress policy: unix sockets are not reachable from an SOP")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with a CheckedBackend under its connection pool (httpx has no public way to
    give its pool a network backend: the pool is rebuilt here with the same settings)."""

    def __init__(self, policy: NetworkPolicy, **options: Any) -> None:
        super().__init__(**options)
        limits = options.get("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),  # SSL_CERT_FILE and SSL_CERT_DIR still count
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = _path.set(request.url.path)  # the server's own origin is open only by path
        try:
            return await super().handle_async_request(request)
        finally:
            _path.reset(token)
