"""`dockyard fsck`: check stored blobs and the database against each other, while serving."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from dockyard.cli.options import (
    ConfigOption,
    DataDirOption,
    JsonOption,
    open_database,
    settings_from,
)
from dockyard.domain.fsck import Fsck, FsckReport
from dockyard.domain.gc import GcBusyError
from dockyard.services import build_stores

out = Console()
err = Console(stderr=True)


class _Bar:
    """Blobs re-hashed so far, by count and by bytes, on stderr."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None
        self.blobs = self.done = 0

    def begin(self, blobs: int, size: int) -> None:
        self.blobs = blobs
        self.task = self.bar.add_task("blobs", total=size, count=f"0/{blobs}")

    def advance(self, blobs: int, size: int) -> None:
        if self.task is not None:
            self.done += blobs
            count = f"{self.done}/{self.blobs}"
            self.bar.update(self.task, advance=size, count=count)


def fsck(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Remove what can go safely: corrupt blobs (to be pushed again), orphans and "
            "stale upload data older than the GC grace period, dangling links and tags.",
        ),
    ] = False,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Re-hash every blob and check every row against storage; exit 1 when problems are found."""
    settings = settings_from(config, data_dir=data_dir)
    db = open_database(settings)
    check = Fsck(
        db,
        build_stores(settings),
        {region.region_id: region.slug for region in settings.effective_regions},
        grace=timedelta(seconds=settings.gc_grace_seconds),
    )
    try:
        with Progress(
            TextColumn("{task.description} {task.fields[count]}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            report = check.run(repair=repair, progress=_Bar(bar))
    except GcBusyError as exc:
        err.print(f"[yellow]{exc}: a repair waits for it; try again when it has finished.[/yellow]")
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    if as_json:
        out.print_json(json.dumps(asdict(report)))
    else:
        _print(report)
    if report.problems:
        raise typer.Exit(1)


def _print(report: FsckReport) -> None:
    checked = f"Checked {report.blobs:,} blobs ({report.bytes:,} bytes)"
    if not report.problems:
        out.print(f"{checked}: no problems found.")
        return
    table = Table(title=f"{checked}: {len(report.problems)} problem(s)")
    for column in ("problem", "region", "what", "detail"):
        table.add_column(column, overflow="fold")
    if report.repair:
        table.add_column("repair", overflow="fold")
    for problem in report.problems:
        row = [problem.kind, problem.region, problem.subject, problem.detail]
        table.add_row(*row, *([problem.repair or "nothing"] if report.repair else []))
    out.print(table)
    if not report.repair:
        out.print("Run `dockyard fsck --repair` to fix what can be fixed safely.")
