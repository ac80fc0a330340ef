"""`dockyard gc`: collect unreferenced blobs and abandoned uploads, while the server runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from dockyard.cli.options import ConfigOption, DataDirOption, open_database, settings_from
from dockyard.domain.gc import GarbageCollector, GcBusyError
from dockyard.services import build_stores

out = Console()
err = Console(stderr=True)


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be freed; delete nothing.")
    ] = False,
    delete_untagged: Annotated[
        bool,
        typer.Option(
            "--delete-untagged",
            help="Also remove manifests no tag and no index points at (pushed by digest).",
        ),
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete blobs no manifest references and uploads abandoned for longer than a setting."""
    settings = settings_from(config, data_dir=data_dir)
    db = open_database(settings)
    collector = GarbageCollector(
        db,
        build_stores(settings),
        grace=timedelta(seconds=settings.gc_grace_seconds),
        upload_ttl=timedelta(seconds=settings.upload_ttl_seconds),
    )
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def tick(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done)

            report = collector.run(dry_run=dry_run, delete_untagged=delete_untagged, progress=tick)
    except GcBusyError as exc:
        err.print(f"[yellow]{exc}; try again when it has finished.[/yellow]")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    verb = "Would free" if dry_run else "Freed"
    table = Table(title=f"{verb}:")
    for column in ("untagged manifests", "links", "blobs", "bytes", "uploads"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.manifests),
        str(report.links),
        str(report.blobs),
        f"{report.bytes:,}",
        str(report.uploads),
    )
    out.print(table)
