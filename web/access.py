"""Who may do what: the role matrix of the README's Security section, in one place.

viewer: reads everything. operator: reads everything; creates runs, batches and SOPs; controls the runs and
batches they created; posts new versions of the SOP ids they created. admin: everything."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from .auth import Role, User, can
from .errors import Forbidden


def user_of(conn: HTTPConnection) -> User:
    return conn.state.user


def name_of(conn: HTTPConnection) -> str:
    return user_of(conn).name


def require(conn: HTTPConnection, need: str) -> None:
    user = user_of(conn)
    if not can(user.role, need):
        raise Forbidden(f"{user.name} is a {user.role}; this needs the {need} role")


def may_control(user: User, created_by: str | None) -> bool:
    """Pause, resume, cancel, skip, retry, rerun, breakpoints, answers: admins, and the operator who made it."""
    return can(user.role, Role.ADMIN) or (can(user.role, Role.OPERATOR) and created_by == user.name)


def require_control(conn: HTTPConnection, what: str, created_by: str | None) -> None:
    user = user_of(conn)
    if not may_control(user, created_by):
        owner = f"{created_by}'s" if created_by else "a"
        raise Forbidden(f"{what} is {owner}; only its creator or an admin may control it")


def require_owner_of_sop(conn: HTTPConnection, sop_id: str, owner: str | None) -> None:
    """Only the creator of an SOP id (or an admin) posts new versions of it."""
    user = user_of(conn)
    if owner is not None and owner != user.name and not can(user.role, Role.ADMIN):
        raise Forbidden(f"SOP {sop_id} is {owner}'s; only they or an admin may post a new version of it")


def may_read(user: User | None, run: Any) -> bool:
    """Every role reads every run (the live feed asks this before it sends a run's events)."""
    return user is not None and can(user.role, Role.VIEWER)
