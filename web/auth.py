"""Tokens: SOP_API_TOKEN (or several named ones in SOP_API_TOKENS), else one made at start.
API clients send `Authorization: Bearer <token>`; the page keeps it in a cookie."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from http.cookies import SimpleCookie

from starlette.requests import HTTPConnection

COOKIE = "sop_token"


class Tokens:
    def __init__(self, named: Mapping[str, str]) -> None:
        self._named = dict(named)  # token -> who

    @classmethod
    def from_env(cls) -> Tokens:
        """`SOP_API_TOKENS="alice:tok1,bob:tok2"` names several; `SOP_API_TOKEN` is one called "admin"."""
        named: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in os.environ.get("SOP_API_TOKENS", "").split(","))):
            who, _, token = pair.partition(":")
            if token:
                named[token] = who
        single = os.environ.get("SOP_API_TOKEN")
        if single:
            named[single] = "admin"
        if not named:
            named[secrets.token_urlsafe(24)] = "admin"
        return cls(named)

    @property
    def first(self) -> str:
        return next(iter(self._named))

    def who(self, token: str | None) -> str | None:
        """The token's name, or None when it is not a token of this server."""
        if not token:
            return None
        for known, who in self._named.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return who
        return None


def token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.cookies.get(COOKIE)


def token_from_environ(environ: Mapping[str, str], auth: object) -> str | None:
    """The token of a Socket.IO connection: its `auth` payload, else the page's cookie."""
    if isinstance(auth, dict) and auth.get("token"):
        return str(auth["token"])
    cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    return cookie[COOKIE].value if COOKIE in cookie else None
