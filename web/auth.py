"""Who a token belongs to, and what they may do. Tokens are named, with a role: in the database (only their
SHA-256 kept; `sop-engine token add`), in SOP_API_TOKENS / SOP_API_TOKEN, and, at the first start with none
at all, one admin token made then and kept in <data_dir>/token for later starts (`serve --new-token` puts a
new one there and revokes the old). API clients send `Authorization: Bearer <token>`; the page keeps it in a
cookie."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError
from starlette.requests import HTTPConnection

from sop_engine import settings
from sop_engine.events import utcnow
from sop_engine.store import TokenNameTaken

from .roles import Role

if TYPE_CHECKING:
    from sop_engine.store import Store
    from sop_engine.tables import ApiTokenRow

COOKIE = "sop_token"
VERDICT_SECONDS = 5.0  # a token found in the database is trusted this long without asking again: revoking takes as long
VERDICTS_KEPT = 1024
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per token
LONGEST = 512  # a longer token is no token of ours: not even hashed
FIRST = "admin"  # the name of the token made at the first start
log = logging.getLogger("sop_engine.web.auth")


_RANK = {role: rank for rank, role in enumerate(Role)}


def can(role: Role | str, need: Role | str) -> bool:
    """Whether `role` may do what needs `need`: viewer < operator < admin."""
    try:
        return _RANK[Role(role)] >= _RANK[Role(need)]
    except ValueError:
        return False


@dataclass(frozen=True)
class User:
    name: str
    role: Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_file() -> Path:
    return settings.current().data_dir / "token"


def from_environment(entries: tuple[str, ...], single: str | None) -> dict[str, User]:
    """SOP_API_TOKENS entries `name:role:token` (or `name:token`, an operator) and SOP_API_TOKEN (one admin),
    by the hash of each token. A malformed entry is left out with a warning that does not show it."""
    found: dict[str, User] = {}
    for number, entry in enumerate(entries, 1):
        parts = [part.strip() for part in entry.split(":", 2)]
        name, role, token = parts if len(parts) == 3 else (parts[0], Role.OPERATOR.value, parts[-1])
        if len(parts) < 2 or not name or not token or role not in _RANK:
            log.warning(
                "SOP_API_TOKENS: entry %d is not NAME:ROLE:TOKEN or NAME:TOKEN (ROLE one of %s): left out",
                number,
                ", ".join(Role),
            )
            continue
        found[hash_token(token)] = User(name, Role(role))
    if single:
        found[hash_token(single)] = User("admin", Role.ADMIN)
    return found


class Tokens:
    """`user(token)` is sync and may read the database (once per token every VERDICT_SECONDS): call it
    through asyncio.to_thread from async code."""

    def __init__(
        self,
        store: Store | None = None,
        named: Mapping[str, User] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if named is None:
            options = settings.current()
            named = from_environment(options.api_tokens, options.api_token)
        self._named = dict(named)  # hash -> user, from the environment
        self._store = store
        self._verdicts: dict[str, tuple[float, User]] = {}  # hash -> (trusted until, user), database tokens
        self._lock = threading.Lock()
        self._clock = clock

    def attach(self, store: Store) -> None:
        """Look tokens up in this store from now on."""
        with self._lock:
            self._store = store
            self._verdicts.clear()

    def startup(self, store: Store, renew: bool = False) -> str | None:
        """Attaches the store. At the first start with no valid token at all (none in the environment, none
        in the database) makes an admin token, keeps its hash in the database and the token in
        <data_dir>/token (mode 0600), and returns it. Else None: a restart goes on with the token in that
        file while it is valid, so the URL with a token is printed only when one was just made.
        `renew` (`serve --new-token`): a new admin token in any case, kept the same way in place of the one
        in that file, which is revoked; returned."""
        self.attach(store)
        if renew:
            return self._renew(store)
        if self._named or any(t.revoked_at is None for t in store.tokens()):
            return None
        path = token_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # its token is no longer valid
        token = new_token()
        try:
            _keep(path, token)
        except FileExistsError:
            return None  # another process is making it at this moment
        try:
            store.add_token(self._free_name(store), Role.ADMIN.value, hash_token(token), created_by="first start")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return token

    def _renew(self, store: Store) -> str:
        """The new token is valid before the file names it, and the old one revoked after: whatever fails
        on the way, the file holds a token that works."""
        path = token_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text().strip() if path.is_file() else None
        token = new_token()
        store.add_token(self._free_name(store), Role.ADMIN.value, hash_token(token), created_by="serve --new-token")
        kept = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        _keep(kept, token)
        os.replace(kept, path)
        replaced = store.token_by_hash(hash_token(old)) if old else None
        if replaced is not None:
            store.revoke_token(replaced.name)
        return token

    @staticmethod
    def _free_name(store: Store) -> str:
        taken = {t.name for t in store.tokens()}  # revoked tokens keep their names
        return next(n for n in (FIRST, *(f"{FIRST}-{i}" for i in range(2, len(taken) + 3))) if n not in taken)

    def user(self, token: str | None) -> User | None:
        """The user the token belongs to, or None when it is no valid token of this server."""
        if not token or len(token) > LONGEST or not token.isascii():  # tokens are URL-safe base64 or chosen ASCII
            return None
        digest = hash_token(token)
        found = self._named.get(digest)
        if found is not None or self._store is None:
            return found
        now = self._clock()
        cached = self._verdicts.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = self._store.token_by_hash(digest)
        if row is None:
            self._verdicts.pop(digest, None)
            return None
        user = User(row.name, Role(row.role))
        with self._lock:
            if len(self._verdicts) >= VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[digest] = (now + VERDICT_SECONDS, user)
        self._touch(row)
        return user

    def _touch(self, row: ApiTokenRow) -> None:
        at = utcnow()
        if self._store is None or (row.last_used_at is not None and at - row.last_used_at < TOUCH_EVERY):
            return
        try:
            self._store.token_used(row.token_hash, at)
        except OperationalError as exc:  # the database is busy: the time of last use can wait
            log.debug("last use of token %s not recorded: %s", row.name, exc)


def _keep(path: Path, token: str) -> None:
    """Writes the token to a new file only its owner can read; FileExistsError when there is one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")


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


__all__ = [
    "COOKIE",
    "Role",
    "TokenNameTaken",
    "Tokens",
    "User",
    "can",
    "hash_token",
    "new_token",
    "token_file",
    "token_from_environ",
    "token_of",
]
