"""API tokens: only their hashes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from ..events import utcnow
from ..tables import (
    ROLES,
    ApiTokenRow,
)
from .database import Database


class TokenNameTaken(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a token named {name!r} exists already (revoked tokens keep their names)")
        self.name = name


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: everything but its hash."""

    name: str
    role: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiTokenRow) -> TokenInfo:
        return cls(row.name, row.role, row.created_at, row.created_by, row.revoked_at, row.last_used_at)


class Tokens(Database):
    def add_token(self, name: str, role: str, token_hash: str, created_by: str | None = None) -> TokenInfo:
        """Raises TokenNameTaken when the name is used, by a revoked token too; ValueError for a role
        not in ROLES."""
        if role not in ROLES:
            raise ValueError(f"the role {role!r} is none of {', '.join(ROLES)}")
        row = ApiTokenRow(name=name, role=role, token_hash=token_hash, created_at=utcnow(), created_by=created_by)
        try:
            with self.session() as s, s.begin():
                s.add(row)
        except IntegrityError:
            with self.reading() as s:
                if s.exec(select(ApiTokenRow.id).where(ApiTokenRow.name == name)).first() is not None:
                    raise TokenNameTaken(name) from None
            raise
        return TokenInfo.of(row)

    def revoke_token(self, name: str) -> bool:
        """False when no token of that name is still valid."""
        with self.session() as s, s.begin():
            done = s.execute(
                update(ApiTokenRow)
                .where(ApiTokenRow.name == name, ApiTokenRow.revoked_at == None)  # noqa: E711
                .values(revoked_at=utcnow())
            )
            return done.rowcount == 1

    def tokens(self) -> list[TokenInfo]:
        with self.reading() as s:
            return [TokenInfo.of(row) for row in s.exec(select(ApiTokenRow).order_by(ApiTokenRow.name))]

    def token_by_hash(self, token_hash: str) -> ApiTokenRow | None:
        """The token with this hash, unless revoked."""
        with self.reading() as s:
            query = select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)
            return s.exec(query.where(ApiTokenRow.revoked_at == None)).first()  # noqa: E711

    def token_used(self, token_hash: str, at: datetime) -> None:
        with self.session() as s, s.begin():
            s.execute(update(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash).values(last_used_at=at))
