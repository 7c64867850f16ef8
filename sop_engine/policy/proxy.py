"""A small HTTP proxy on loopback, one per browser context that has egress rules: Chromium sends it every
request, redirects, WebSockets and all, and it connects only to addresses the policy checked (the route
handler never sees a redirect; the proxy sees each hop). Plain http is forwarded one request per connection;
https and WebSockets over TLS pass through a CONNECT tunnel untouched. When the SOP names a proxy of its own
(`browser.proxy`), each checked connection goes on through it (`Upstream`): the policy still sees, and
decides, every destination."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .network import NetworkPolicy, PolicyError
from .urls import Address, BadUrl, parse_target

HEAD_LIMIT = 64 * 1024
TUNNEL = "/(a tunnel, whose path cannot be seen)"
CONNECT_SECONDS = 30.0  # to read a request's head, to resolve its host, to connect
DENIED_HEADER = "X-Egress-Denied"  # on the refusal the proxy answers in place of a denied http server
_DROP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


@dataclass(frozen=True)
class Upstream:
    """The SOP's own proxy, which checked connections go on through (its address is checked when it is set)."""

    host: str
    port: int
    addresses: tuple[Address, ...]
    authorization: str | None = None  # the Proxy-Authorization header's value
    bypass: tuple[str, ...] = ()  # hosts reached directly: `example.com`, `.example.com`, `*.example.com`

    def bypassed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.bypass:
            entry = entry.lower().lstrip("*")
            if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
                return True
        return False


async def upstream_of(policy: NetworkPolicy, proxy: dict[str, str]) -> Upstream:
    """A document's `browser.proxy` ({server, username, password, bypass}) checked against the policy: an http
    proxy at an address the policy allows. Raises PolicyError saying why not."""
    server = str(proxy.get("server", ""))
    parsed = urlsplit(server if "://" in server else f"http://{server}")
    if parsed.scheme != "http" or not parsed.hostname:
        raise PolicyError(f"browser.proxy: {server!r}: behind this server's egress checks, a proxy is http://host:port")
    port = parsed.port or 80
    try:
        addresses = await policy.connect_addresses(parsed.hostname, port)
    except PolicyError as exc:
        raise PolicyError(f"browser.proxy: {exc.message}") from None
    except OSError as exc:
        raise PolicyError(f"browser.proxy: {parsed.hostname} did not resolve ({exc})") from None
    authorization = None
    if proxy.get("username") is not None:
        pair = f"{proxy['username']}:{proxy.get('password') or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    bypass = tuple(p.strip() for p in str(proxy.get("bypass") or "").split(",") if p.strip())
    return Upstream(parsed.hostname, port, tuple(addresses), authorization, bypass)


class EgressProxy:
    def __init__(self, policy: NetworkPolicy, on_denied: Callable[[PolicyError], None]) -> None:
        self.policy = policy
        self.on_denied = on_denied
        self.upstream: Upstream | None = None
        self._server: asyncio.Server | None = None
        self._verdicts: dict[tuple[str, int], list[Address] | PolicyError] = {}  # for the context's life
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            pass  # the browser sees the connection close: a network error on its side
        except asyncio.CancelledError:
            pass  # the proxy is closing (asyncio's stream server would log a cancelled handler as an error)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_SECONDS)
        line, _, headers = head.decode("latin-1").partition("\r\n")
        method, target, version = line.split(" ", 2)
        tunnel = method.upper() == "CONNECT"
        try:
            host, port, path = _destination(target, tunnel)
            addresses = await asyncio.wait_for(self._addresses(host, port), CONNECT_SECONDS)
            # a tunnel (CONNECT: TLS, or a WebSocket from a worker) hides its path, so a tunnel to the server's
            # own origin is refused whole: the own-origin rule admits only some paths there
            self.policy.check_host(host, addresses, port, TUNNEL if path is None else path)
        except PolicyError as exc:
            exc.url = None if tunnel else target
            self.on_denied(exc)
            await _refuse(writer, exc)
            return
        except (BadUrl, OSError):
            return  # an address nobody can reach: the browser reports a network error
        via = self.upstream if self.upstream is not None and not self.upstream.bypassed(host) else None
        if via is None:
            upstream_reader, upstream = await _connect(addresses, port)
        else:
            upstream_reader, upstream = await _connect(list(via.addresses), via.port)
        try:
            if tunnel and via is not None and not await _tunnel_through(via, target, upstream_reader, upstream):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if tunnel:
                writer.write(f"{version} 200 Connection Established\r\n\r\n".encode("latin-1"))
            elif via is not None:
                upstream.write(_absolute_form(method, target, version, headers, via.authorization))
            else:
                upstream.write(_origin_form(method, target, version, headers))
            await _relay(reader, writer, upstream_reader, upstream)
        finally:
            upstream.close()

    async def _addresses(self, host: str, port: int) -> list[Address]:
        verdict = self._verdicts.get((host, port))
        if verdict is None:
            try:
                verdict = await self.policy.connect_addresses(host, port)
            except PolicyError as exc:
                verdict = exc
            self._verdicts[(host, port)] = verdict
        if isinstance(verdict, PolicyError):
            raise PolicyError(verdict.message)
        return verdict


def _destination(target: str, tunnel: bool) -> tuple[str, int, str | None]:
    if tunnel:
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port), None
    parsed = parse_target(target)
    if parsed.scheme not in ("http", "ws") or parsed.host is None or parsed.port is None:
        raise BadUrl(f"{target!r}: a proxy forwards only http")
    return parsed.host, parsed.port, parsed.path


async def _connect(addresses: list[Address], port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    failure: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.wait_for(asyncio.open_connection(str(address), port), CONNECT_SECONDS)
        except (OSError, TimeoutError) as exc:
            failure = OSError(str(exc))
    raise failure or OSError("no address")


def _origin_form(method: str, target: str, version: str, headers: str) -> bytes:
    """The request as the server expects it: `GET /path`, one request on the connection."""
    parts = urlsplit(target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} {version}"]
    upgrade = False
    for header in headers.split("\r\n"):
        name = header.partition(":")[0].strip().lower()
        if not header or name in _DROP:
            continue
        upgrade = upgrade or name == "upgrade"
        lines.append(header)
    lines.append("Connection: Upgrade" if upgrade else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _absolute_form(method: str, target: str, version: str, headers: str, authorization: str | None) -> bytes:
    """The request as a proxy expects it: `GET http://host/path`, with the SOP's proxy credentials."""
    lines = [f"{method} {target} {version}"]
    for header in headers.split("\r\n"):
        name = header.partition(":")[0].strip().lower()
        if header and name not in _DROP:
            lines.append(header)
    if authorization:
        lines.append(f"Proxy-Authorization: {authorization}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _tunnel_through(
    via: Upstream, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> bool:
    """Asks the SOP's proxy for a tunnel to `target`; True when it opened one."""
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if via.authorization:
        lines.append(f"Proxy-Authorization: {via.authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_SECONDS)
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
    return status == b"200"


async def _refuse(writer: asyncio.StreamWriter, error: PolicyError) -> None:
    body = error.message.encode()
    reason = error.message.encode("ascii", "replace").decode()
    writer.write(
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
        + f"{DENIED_HEADER}: {reason}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until either side closes; then both connections go."""
    pipes = {asyncio.ensure_future(_pipe(reader, upstream)), asyncio.ensure_future(_pipe(upstream_reader, writer))}
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
