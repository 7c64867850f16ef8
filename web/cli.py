"""The `sop-engine` command: the engine's commands, plus `serve` and `token` (the engine never imports web/)."""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sop_engine import settings
from sop_engine.cli import EXIT_FAILED, EXIT_INVALID, app, err, out

from .roles import Role

if TYPE_CHECKING:
    from sop_engine.store import Store

tokens_app = typer.Typer(no_args_is_help=True, help="API tokens: named, with a role, stored hashed.")
app.add_typer(tokens_app, name="token")
db_app = typer.Typer(no_args_is_help=True, help="The database: its schema.")
app.add_typer(db_app, name="db")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    concurrency: Annotated[
        int, typer.Option(min=0, max=64, help="Runs executed at once; 0: API, page and feed only.")
    ] = 4,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    new_token: Annotated[
        bool,
        typer.Option("--new-token", help="Make a new admin token in place of the one in the data folder (revoked)."),
    ] = False,
) -> None:
    """Start the server: JSON API, live web page, Socket.IO feed, and the worker pool."""
    import uvicorn

    from .app import create_app
    from .auth import Tokens, token_file
    from .config import ServerConfig

    config = ServerConfig(host=host, port=port, concurrency=concurrency, headed=headed)
    metrics_port = settings.current().metrics_port
    if metrics_port is not None:  # refused now, like a taken --port, rather than once the app starts
        _expose_metrics(host, metrics_port)
    tokens = Tokens()
    with _store() as store:
        created = tokens.startup(store, renew=new_token)  # the app's lifespan attaches its own store
    application = create_app(config, tokens)
    if created:
        out.print(f"SOP engine at [bold]{config.base_url}/login?token={created}[/]", markup=True)
        which = "a new admin token (the one it replaces is revoked)" if new_token else "a first admin token"
        out.print(f"[dim]{which}, kept in {token_file()}: open that URL; API clients send it as[/]")
        out.print("[dim]Authorization: Bearer <token>. More tokens: sop-engine token add NAME --role ROLE[/]")
    else:
        out.print(f"SOP engine at [bold]{config.base_url}[/]", markup=True)
        where = f", or the one in {token_file()}" if token_file().exists() else ""
        out.print(f"[dim]sign in with a token (sop-engine token add NAME --role admin{where})[/]")
    # with SOP_LOG_FORMAT=json, uvicorn's own lines go through the root logger's JSON lines too
    logged = {"log_config": None} if settings.current().log_format == "json" else {}
    uvicorn.run(application, host=host, port=port, log_level="warning", lifespan="on", **logged)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Runs executed at once.")] = 4,
    base_url: Annotated[
        str | None, typer.Option(help="The server's address: runs' relative URLs (/demo/…) go there.")
    ] = None,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve this worker's Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the metrics port listens on.")] = "127.0.0.1",
) -> None:
    """Execute queued runs, with no HTTP server: as many worker processes as you like, on any host that
    reaches the database (on PostgreSQL, with the servers' SOP_SECRET_KEY). Drains on SIGTERM."""
    import asyncio
    import logging

    from sop_engine.logs import TEXT

    from .worker import work

    logging.basicConfig(level=logging.WARNING, format=TEXT)  # SOP_LOG_FORMAT=json: the JSON lines stay
    from sop_engine.arguments import checked_base_url

    base_url = checked_base_url(base_url)
    with _store():  # refuses here, with its reason, what the worker could not open
        pass
    metered = metrics_port is not None and _expose_metrics(metrics_host, metrics_port)
    asyncio.run(work(concurrency, base_url, headed, metered))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database (SOP_DATABASE_URL, or SQLite in the data folder) to this release's schema: the
    migrations, and on PostgreSQL the job queue's tables. Servers and workers also do it at start, one at a
    time (under a lock); this does it before, as a deployment step."""
    from alembic.migration import MigrationContext

    with _store() as store, store.engine.connect() as conn:
        heads = ", ".join(sorted(MigrationContext.configure(conn).get_current_heads())) or "none"
        out.print(f"{store.dialect} database at revision {heads}")


@tokens_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Who the token is for: shown in the audit trail.")],
    role: Annotated[Role, typer.Option(help="viewer reads; operator also runs; admin controls everything.")],
) -> None:
    """Make a token and print it, once: only its hash is kept. Nothing else goes to stdout."""
    from .auth import TokenNameTaken, hash_token, new_token

    name = name.strip()
    if not name or len(name) > 100:
        err.print("[red]a token's name is 1 to 100 characters[/]")
        raise typer.Exit(EXIT_INVALID)
    token = new_token()
    with _store() as store:
        try:
            store.add_token(name, role.value, hash_token(token), created_by=_operator())
        except TokenNameTaken as exc:
            err.print(f"[red]{_escape(str(exc))}: choose another name[/]")
            raise typer.Exit(EXIT_INVALID) from None
    err.print(f"[dim]the token of {_escape(name)} ({role.value}), shown only now:[/]")
    typer.echo(token)


@tokens_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(metavar="NAME", help="The token's name.")]) -> None:
    """Stop a token from working: within seconds on a running server."""
    with _store() as store:
        revoked = store.revoke_token(name)
    if not revoked:
        err.print(f"[red]no valid token is named {_escape(name)}[/]")
        raise typer.Exit(EXIT_FAILED)
    out.print(f"revoked {_escape(name)}")


@tokens_app.command("list")
def token_list() -> None:
    """Every token's name, role, and when it was made, last used and revoked (never the token or its hash)."""
    from rich.table import Table
    from rich.text import Text

    with _store() as store:
        found = store.tokens()
    table = Table("name", "role", "created (UTC)", "by", "last used", "revoked", box=None, pad_edge=False)
    for info in found:
        cells = (info.name, info.role, _when(info.created_at), info.created_by or "", _when(info.last_used_at))
        table.add_row(*(Text(cell) for cell in (*cells, _when(info.revoked_at))))
    out.print(table)


def _expose_metrics(host: str, port: int) -> bool:
    """Metrics on their own port (no token), or a refusal before anything starts; False with SOP_METRICS=off."""
    from .metrics import expose

    try:
        return expose(host, port) is not None
    except OSError as exc:
        err.print(f"[red]cannot serve the metrics on {_escape(host)}:{port}: {_escape(exc.strerror or str(exc))}[/]")
        raise typer.Exit(EXIT_INVALID) from None


@contextlib.contextmanager
def _store() -> Iterator[Store]:
    from sop_engine.migrations import NewerDatabase
    from sop_engine.store import CannotOpen, Store

    try:
        store = Store()
    except (CannotOpen, NewerDatabase) as exc:
        err.print(f"[red]{_escape(str(exc))}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    try:
        yield store
    finally:
        store.close()


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "cli"


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "-"


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def main() -> None:
    """The `sop-engine` command. When a command has returned, its work is done (its event loops closed, their
    threads joined, its store closed): the process ends at once, without the interpreter's tear-down of every
    module it loaded, which takes a fifth of a second, as long as a short run."""
    try:
        app()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, a stream closed
            stream.flush()
    if code is None or isinstance(code, int):
        os._exit(code or 0)
    raise SystemExit(code)
