"""The `sop-engine` command: the engine's commands, plus `serve` (the engine never imports web/)."""

from __future__ import annotations

from typing import Annotated

import typer

from sop_engine.cli import app, out


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    concurrency: Annotated[int, typer.Option(help="Runs executed at once.")] = 4,
    headed: Annotated[bool, typer.Option("--headed", help="Show the browser window.")] = False,
) -> None:
    """Start the server: JSON API, live web page, Socket.IO feed, and the worker pool."""
    import uvicorn

    from .app import create_app
    from .auth import Tokens
    from .config import ServerConfig

    config = ServerConfig(host=host, port=port, concurrency=concurrency, headed=headed)
    tokens = Tokens.from_env()
    application = create_app(config, tokens)
    out.print(f"SOP engine at [bold]{config.base_url}/login?token={tokens.first}[/]", markup=True)
    out.print("[dim]open that URL; API clients send Authorization: Bearer <token>[/]")
    uvicorn.run(application, host=host, port=port, log_level="warning", lifespan="on")


def main() -> None:
    app()
