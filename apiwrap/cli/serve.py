"""``apiwrap serve``: the certification service on uvicorn, and its admin commands (tenants, keys, prune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["DEFAULT_CONFIG_PATH", "serve"]

#: Where ``apiwrap serve`` looks for its config, and writes the embedded default when it is missing.
DEFAULT_CONFIG_PATH = Path("apiwrap-service.toml")


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            help="Service TOML file (tables service, vendors.NAME, tenants.NAME, metrics, proxy); it must "
            f"exist (see --init). Default: {DEFAULT_CONFIG_PATH}, written with the embedded defaults "
            "(local vendor) if missing."
        ),
    ] = None,
    init: Annotated[
        bool,
        typer.Option(
            help="Write the embedded default config (local vendor, no tenants) to the --config path, "
            "which must not exist yet, and exit (no server)."
        ),
    ] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    create_tenant: Annotated[
        str | None,
        typer.Option(
            help="Add tenant NAME to the config, print its API key and AWS-style key pair once, and exit "
            "(no server)."
        ),
    ] = None,
    max_usd: Annotated[
        str | None, typer.Option(help="With --create-tenant: the tenant's money cap (USD).")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option(help="With --create-tenant: the tenant's cap on billable queries.")
    ] = None,
    create_metrics_key: Annotated[
        bool,
        # "\\[": Rich would take a bare [metrics] for markup and print nothing of it.
        typer.Option(help="Add a \\[metrics] key to the config, print it once, and exit (no server)."),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(help="Delete finished jobs older than --retention-days (or the config's), and exit."),
    ] = False,
    retention_days: Annotated[
        float | None, typer.Option(help="With --prune: overrides the config's retention_days.")
    ] = None,
    graceful_timeout: Annotated[
        int, typer.Option(help="On SIGTERM, seconds open requests get to finish before they are cut.")
    ] = 30,
    log_level: Annotated[
        str, typer.Option(help="Log level (the service logs JSON lines to stderr).")
    ] = "info",
) -> None:
    """Serve certified labels over HTTP (OpenAPI at /docs, /redoc and /openapi.json); SIGHUP
    reloads the config's tenants."""
    # Imported here: the other commands should not pay for FastAPI and uvicorn.
    from apiwrap.service import (
        add_metrics_key,
        configure_logging,
        create_app,
        create_tenant_keys,
        load_config,
        uvicorn_config,
        write_default_config,
    )
    from apiwrap.service import prune as prune_jobs

    path = config or DEFAULT_CONFIG_PATH
    if init:
        try:
            write_default_config(path)
        except OSError as exc:
            message = f"cannot create {path}: {exc.strerror}"
            raise typer.BadParameter(message, param_hint="'--config'") from None
        typer.echo(
            f"wrote the embedded default to {path} (local vendor, no tenants); add a tenant with "
            f"'apiwrap serve --config {path} --create-tenant NAME'",
            err=True,
        )
        return
    if not path.exists():
        if config is not None:
            # A typo must not start an empty server, nor become a file holding one tenant.
            raise typer.BadParameter(
                f"{path} does not exist; create it with 'apiwrap serve --config {path} --init' "
                "(the embedded default: local vendor, no tenants), or write it as docs/service.md shows",
                param_hint="'--config'",
            )
        write_default_config(path)
        typer.echo(f"no config: wrote the embedded default to {path} (local vendor, no tenants)", err=True)
    if create_tenant is not None:
        try:
            keys = create_tenant_keys(path, create_tenant, max_usd=max_usd, max_queries=max_queries)
        except (ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc)) from None
        typer.echo(
            f"tenant {create_tenant} added to {path}. A server running on this file serves it once told "
            "to reload its tenants: kill -HUP <its process id> (no restart). Its API key and, for the /aws "
            "door, its AWS-style key pair (shown only now):",
            err=True,
        )
        typer.echo(f"api_key: {keys.api_key}")
        typer.echo(f"aws_access_key_id: {keys.aws_access_key_id}")
        typer.echo(f"aws_secret_access_key: {keys.aws_secret_access_key}")
        typer.echo(
            "Try it (any PNG, JPEG or WebP image):\n"
            f'  curl -H "Authorization: Bearer {keys.api_key}" -H "Content-Type: image/png" '
            f"--data-binary @image.png http://{host}:{port}/v1/certify",
            err=True,
        )
        return
    if create_metrics_key:
        try:
            key = add_metrics_key(path)
        except (ValueError, OSError) as exc:
            raise typer.BadParameter(str(exc)) from None
        typer.echo(f"metrics key added to {path}; scrape /metrics with it as a Bearer token:", err=True)
        typer.echo(key)
        return
    try:
        service_config = load_config(path)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    if prune:
        days = retention_days if retention_days is not None else service_config.retention_days
        if days is None:
            raise typer.BadParameter("--prune needs --retention-days or retention_days in [service]")
        typer.echo(f"pruned {prune_jobs(service_config, days)} finished jobs older than {days:g} days")
        return
    if not service_config.tenants:
        typer.echo(
            f"no tenants yet: create one with 'apiwrap serve --config {path} --create-tenant NAME' "
            "(it prints the tenant's keys once)",
            err=True,
        )

    import uvicorn

    configure_logging(log_level)
    uvicorn.Server(
        uvicorn_config(
            create_app(service_config, config_path=path),
            service_config,
            host=host,
            port=port,
            log_level=log_level,
            graceful_timeout_s=graceful_timeout,
        )
    ).run()
