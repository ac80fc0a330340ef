"""Options shared by the commands that work on a data dir, and how they become Settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from dockyard.config import Settings, load_settings
from dockyard.db import Database

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
