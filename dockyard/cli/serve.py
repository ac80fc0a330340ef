"""`dockyard serve`: migrate, create the first project on a new install, start the server."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.panel import Panel

from dockyard.app import build_services, create_app
from dockyard.cli.options import ConfigOption, DataDirOption, open_database, settings_from
from dockyard.config import Settings
from dockyard.domain.projects import NewProject, create_first_project
from dockyard.log_redaction import protect_access_logs
from dockyard.log_setup import configure as configure_logging

# granian's default leaves out the query string, which says what an upload request did.
ACCESS_LOG = '[%(time)s] %(addr)s - "%(method)s %(path)s?%(query_string)s %(protocol)s" %(status)d'
TOKEN_FILE = "first-project-token"  # noqa: S105 (a file name)
out = Console()
err = Console(stderr=True)


def _save_token(data_dir: Path, token: str) -> Path:
    path = data_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)
    return path


def _announce(settings: Settings, first: NewProject) -> None:
    path = _save_token(settings.data_dir, first.api_token)
    base = f"http://{settings.listen_address}"
    curl = (
        f'curl -H "Authorization: Bearer $(cat {shlex.quote(str(path))})" '
        f"{base}/v1/container_registries"
    )
    if settings.log_format == "json":  # a log pipeline reads this output: one object a line
        logging.getLogger("dockyard.serve").info(
            "created the first project %s (%s); its API token is saved to %s (mode 0600)",
            first.name,
            first.id,
            path,
        )
        return
    if sys.stdout.isatty():
        shown = f"Its API token, shown only this once:\n[bold]{first.api_token}[/bold]\n\n"
    else:
        # Not a terminal: a journal, a container log, a CI log, where a secret would stay
        # for anyone who can read logs. The file is readable by this user only.
        shown = "Its API token is not printed, as this output is not a terminal.\n"
    out.print(
        Panel.fit(
            f"Created the first project [bold]{first.name}[/bold] ({first.id}).\n\n"
            f"{shown}Saved to {path} (mode 0600).",
            title="Dockyard",
        )
    )
    out.print("List its registries:")
    print(curl, flush=True)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 5000).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Start Dockyard: the /v1 API (and the registry) on one port."""
    settings = settings_from(config, data_dir=data_dir, host=host, port=port)
    missing = settings.missing_replica_settings()
    if missing:
        # Keys generated per process would differ between replicas: tokens issued by one
        # would fail on the next, stored passwords would not decrypt.
        err.print(
            f"[red]With a shared database ({settings.resolved_database_url.split(':')[0]}) "
            f"every replica needs the same keys: set {' and '.join(missing)}.[/red]\n"
            "Generate them with `dockyard keys`."
        )
        raise typer.Exit(2)
    configure_logging(settings.log_format, settings.log_level)
    db = open_database(settings)
    services = build_services(settings, db)
    if db.is_sqlite:
        # One server per SQLite database: the claims of a process that was killed mid-chunk
        # are nobody's now. Replicas on PostgreSQL wait for them to expire instead.
        services.registry.uploads.release_every_claim()
    first = create_first_project(db, "Default")
    if first is not None:
        _announce(settings, first)
    if settings.server == "granian":
        services.close()  # the server process builds its own from the same settings
        _serve_with_granian(settings, config)
        return
    protect_access_logs("uvicorn.access")
    uvicorn.run(
        create_app(settings, services),
        log_config=None,  # configured above, as JSON when asked
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
    )


def _serve_with_granian(settings: Settings, config: Path | None) -> None:
    """Become the granian server (exec: same PID, none of this process's memory: Typer, Rich,
    Alembic), which builds the app from the settings, passed on as environment."""
    os.environ.update(
        DOCKYARD_DATA_DIR=str(settings.data_dir),
        DOCKYARD_HOST=settings.host,
        DOCKYARD_PORT=str(settings.port),
        DOCKYARD_LOG_LEVEL=settings.log_level,
    )
    if config is not None:
        os.environ["DOCKYARD_CONFIG"] = str(config)
    # A fixed mmap threshold makes glibc hand large buffers (argon2's 19 MiB, upload
    # batches) back to the system when freed, instead of keeping them in the heap.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(256 * 1024))
    argv = [
        sys.executable,
        "-m",
        "dockyard.run_granian",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--log-level",
        settings.log_level,
        "--log-format",
        settings.log_format,
    ]
    if settings.log_level in ("info", "debug"):
        argv += ["--access-log", "--access-log-fmt", ACCESS_LOG]
    sys.stdout.flush()
    os.execv(sys.executable, [*argv, "dockyard.asgi:application"])  # noqa: S606
