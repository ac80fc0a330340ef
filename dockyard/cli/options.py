"""Options shared by the commands that work on a data dir, and how they become Settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from dockyard.config import Settings, load_settings
from dockyard.db import Database
from dockyard.domain.errors import DomainError

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="DOCKYARD_DATA_DIR",
        help="Where Dockyard keeps its database, keys and blobs (default ./data).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="DOCKYARD_CONFIG",
        help="A TOML file of settings; DOCKYARD_* variables override it.",
        exists=True,
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProjectArgument = Annotated[str, typer.Argument(help="The project's id.")]

err = Console(stderr=True)


def settings_from(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        err.print("[red]Invalid settings:[/red]")
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            err.print(f"  {where}: {error['msg']}")
        raise typer.Exit(2) from None


def open_database(settings: Settings) -> Database:
    """The data dir's database, created and migrated if it is new."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db


@contextmanager
def data_dir_database(config: Path | None, data_dir: Path | None) -> Iterator[Database]:
    """The data dir's database for one admin command; a refusal is printed, not raised."""
    db = open_database(settings_from(config, data_dir=data_dir))
    try:
        yield db
    except DomainError as exc:
        for message in exc.messages:
            err.print(f"[red]{message}[/red]")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
