"""The server's front door, in front of Starlette and Socket.IO alike: request bodies are bounded, every
route but the open ones needs a token, and a browser's cookie counts only for requests from this server's
own pages (Origin checked, content types allowed per route), so another site, even on another port of the
same host, cannot act with a signed-in person's cookie."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Tokens, token_of
from .errors import RETRY_AFTER, TooLarge

OPEN = ("/static/", "/demo/", "/login", "/favicon.ico", "/healthz")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = ("application/json",)
# what a cookie-signed request may send, by route: what the page itself sends there
DOCUMENT_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml", "multipart/form-data")
COOKIE_BODY_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/api/sops", DOCUMENT_TYPES),
    ("/api/batches", ("application/json", "multipart/form-data")),
    ("/login", ("application/x-www-form-urlencoded", "multipart/form-data")),
)
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make form posts say Origin: null,
]
# the demo pages frame each other (an embedded editor, two frames deep); nothing else of the server is framed
DEMO_HEADERS = [(b"x-frame-options", b"SAMEORIGIN") if name == b"x-frame-options" else (name, v) for name, v in HEADERS]


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def own_origins(scheme: str, host: str | None, public: str | None) -> set[str]:
    """The origins this server's pages have: the address the request came to, and the public one."""
    found = {f"{scheme}://{host.lower()}"} if host else set()
    if public:
        found.add(public.lower())
    return found


def same_origin(headers: Headers, scheme: str, public: str | None) -> bool:
    """True when a browser says the request comes from one of this server's own pages."""
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() in own_origins(scheme, headers.get("host"), public)
    return headers.get("sec-fetch-site") == "same-origin"


def socket_origin_check(public: str | None) -> Callable[[str | None, dict[str, Any]], bool]:
    """For python-socketio's cors_allowed_origins: a browser's connection only from this server's pages."""

    def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
        if origin is None:
            return True  # not a browser (a script with its token): nothing to check
        scheme = "https" if environ.get("wsgi.url_scheme") == "https" else "http"
        return origin.lower() in own_origins(scheme, environ.get("HTTP_HOST"), public)

    return allowed


def _allowed_types(path: str) -> tuple[str, ...]:
    found = (types for prefix, types in COOKIE_BODY_TYPES if path == prefix or path.startswith(prefix + "/"))
    return next(found, JSON)


async def _reply(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Guard:
    def __init__(self, app: ASGIApp, tokens: Tokens, max_body: int, public_origin: str | None) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body
        self.public = public_origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        added = DEMO_HEADERS if scope["path"].startswith("/demo/") else HEADERS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body:
            await _reply(send_with_headers, 413, {"error": f"the request body is over {self.max_body} bytes"})
            return
        refusal = await self._refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            if status == 303:
                await send_with_headers(
                    {"type": "http.response.start", "status": 303, "headers": [(b"location", b"/login")]}
                )
                await send_with_headers({"type": "http.response.body", "body": b""})
            else:
                retry = [(b"retry-after", str(RETRY_AFTER).encode())] if status == 503 else []
                await _reply(send_with_headers, status, {"error": message}, retry)
            return
        await self.app(scope, self._bounded(receive), send_with_headers)

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # raised inside the route: its exception handler answers 413
                    raise TooLarge(f"the request body is over {self.max_body} bytes")
            return message

        return bounded

    async def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        """Why the request may not go on (status, message), or None. Sets scope["state"]["user"]."""
        path, method = scope["path"], scope["method"]
        from_cookie = not headers.get("authorization", "").lower().startswith("bearer ")
        unsafe = method not in SAFE_METHODS
        scheme = scope.get("scheme", "http")
        cross_site_login = path == "/login" and "origin" in headers and not same_origin(headers, scheme, self.public)
        if unsafe and from_cookie and cross_site_login:
            return 403, "sign in from this server's own login page"
        if path.startswith(OPEN) or path.startswith("/socket.io"):
            return None  # Socket.IO checks its token and origin on connect
        try:
            user = await asyncio.to_thread(self.tokens.user, token_of(HTTPConnection(scope)))
        except DBAPIError:
            return 503, "the database is unavailable for now: try again shortly"
        if user is None:
            if path.startswith("/api/"):
                return 401, "unauthorized: send Authorization: Bearer <token>"
            return 303, "/login"
        if unsafe and from_cookie:
            if not same_origin(headers, scheme, self.public):
                return 403, "a signed-in browser may change things only from this server's own pages"
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and kind not in _allowed_types(path):
                return 415, f"content type {kind} is not accepted here"
        scope.setdefault("state", {})["user"] = user
        return None
