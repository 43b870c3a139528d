"""``apiwrap serve``: the certification service on uvicorn, and the admin command that adds tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    config: Annotated[
        Path, typer.Option(help="Service TOML file (tables service, vendors.NAME, tenants.NAME).")
    ] = Path("apiwrap-service.toml"),
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    create_tenant: Annotated[
        str | None,
        typer.Option(help="Add tenant NAME to --config, print its API key once, and exit (no server)."),
    ] = None,
    max_usd: Annotated[
        str | None, typer.Option(help="With --create-tenant: the tenant's money cap (USD).")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(help="With --create-tenant: the tenant's cap on billable queries.")
    ] = None,
    graceful_timeout: Annotated[
        int, typer.Option(help="On SIGTERM, seconds open requests get to finish before they are cut.")
    ] = 30,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve certified labels over HTTP (OpenAPI at /docs and /openapi.json)."""
    # Imported here: the other commands should not pay for FastAPI and uvicorn.
    from apiwrap.service import add_tenant, create_app, load_config

    if create_tenant is not None:
        try:
            key = add_tenant(config, create_tenant, max_usd=max_usd, max_queries=max_queries)
        except (ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc)) from None
        typer.echo(f"tenant {create_tenant} added to {config}; its API key (shown only now):", err=True)
        typer.echo(key)
        return
    try:
        service_config = load_config(config)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(f"{config}: {exc}") from None

    import uvicorn

    # SIGTERM/SIGINT: uvicorn stops accepting, lets open requests finish (up to graceful_timeout),
    # then the lifespan stops the jobs; they stay in the store and resume at the next start.
    uvicorn.run(
        create_app(service_config),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout,
    )
