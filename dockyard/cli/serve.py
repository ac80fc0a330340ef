"""`dockyard serve`: migrate, create the first project on a new install, start the server."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import socket
import sys
import tempfile
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
from dockyard.run_granian import METRICS_DIR_PREFIX

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


def _port_taken(host: str, port: int) -> OSError | None:
    """Why nothing else may listen here, if something does. granian's workers bind with
    SO_REUSEPORT, which the kernel lets a second such server share: two Dockyards would
    split the traffic between their databases. A bind without it fails while anyone
    listens. (Two servers starting in the same instant can still both pass.)"""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            probe.bind(address)
    except OSError as error:
        return error
    return None


def worker_count(settings: Settings) -> int:
    return settings.workers or len(os.sched_getaffinity(0))


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 5000).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: DOCKYARD_WORKERS, else one per CPU core).",
            min=1,
            max=512,
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Start Dockyard: the /v1 API (and the registry) on one port."""
    settings = settings_from(config, data_dir=data_dir, host=host, port=port, workers=workers)
    taken = _port_taken(settings.host, settings.port)
    if taken is not None:
        reason = (
            "another process (perhaps another Dockyard) already listens there"
            if taken.errno == errno.EADDRINUSE
            else taken.strerror or str(taken)
        )
        err.print(f"[red]Cannot listen on {settings.host}:{settings.port}: {reason}.[/red]")
        raise typer.Exit(1)
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
    if settings.workers > 1:
        logging.getLogger("dockyard.serve").warning(
            "DOCKYARD_SERVER=uvicorn serves from this one process; --workers is granian's"
        )
    protect_access_logs("uvicorn.access")
    uvicorn.run(
        create_app(settings, services),
        log_config=None,  # configured above, as JSON when asked
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        backlog=settings.listen_backlog,
        timeout_keep_alive=max(1, round(settings.header_timeout_seconds)),
    )


def _serve_with_granian(settings: Settings, config: Path | None) -> None:
    """Become granian's supervisor (exec: same PID, none of this process's memory: Typer,
    Rich, Alembic), whose workers build the app from the settings, passed on as environment.
    Migrations, the first project and the keys are made here, once, before any worker."""
    os.environ.update(
        DOCKYARD_DATA_DIR=str(settings.data_dir.resolve()),
        DOCKYARD_HOST=settings.host,
        DOCKYARD_PORT=str(settings.port),
        DOCKYARD_LOG_LEVEL=settings.log_level,
        DOCKYARD_WORKERS=str(settings.workers),
    )
    if config is not None:
        os.environ["DOCKYARD_CONFIG"] = str(config)
    # Counters every worker adds to, in files of this server's own (prometheus_client's
    # multiprocess mode, chosen when the library is imported: so before any worker is).
    metrics_dir = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    os.environ.update(PROMETHEUS_MULTIPROC_DIR=metrics_dir, DOCKYARD_METRICS_DIR=metrics_dir)
    # A fixed mmap threshold makes glibc hand large buffers (argon2's 19 MiB, upload
    # batches) back to the system when freed, instead of keeping them in the heap.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(256 * 1024))
    argv = [
        sys.executable,
        "-P",  # -m would put the working directory first on sys.path
        "-m",
        "dockyard.run_granian",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(worker_count(settings)),
        "--max-connections",
        str(settings.max_connections),
        "--backlog",
        str(settings.listen_backlog),
        "--header-timeout",
        str(settings.header_timeout_seconds),
        "--log-level",
        settings.log_level,
        "--log-format",
        settings.log_format,
    ]
    if settings.log_level in ("info", "debug"):
        argv += ["--access-log", "--access-log-fmt", ACCESS_LOG]
    sys.stdout.flush()
    os.execv(sys.executable, [*argv, "dockyard.asgi:application"])  # noqa: S606
