"""`dockyard projects` and `dockyard tokens`: administer the data dir directly."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dockyard.cli.options import ConfigOption, DataDirOption, JsonOption, ProjectArgument
from dockyard.cli.options import data_dir_database as _database
from dockyard.domain import projects

projects_app = typer.Typer(help="Create and list projects (works on the data dir directly).")
tokens_app = typer.Typer(help="Create, list and revoke project API tokens.")
out = Console()


@projects_app.command("create")
def create_project(
    name: Annotated[str, typer.Argument(help="A name for the project.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project and print its first API token (shown only this once)."""
    with _database(config, data_dir) as db:
        created = projects.create_project(db, name)
    if as_json:
        print(
            json.dumps(
                {"id": str(created.id), "name": created.name, "api_token": created.api_token}
            )
        )
        return
    out.print(f"Created project [bold]{created.name}[/bold] ({created.id})")
    out.print("API token (shown only now, keep it safe):")
    print(created.api_token)


@projects_app.command("list")
def list_projects(
    data_dir: DataDirOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List every project."""
    with _database(config, data_dir) as db:
        rows = projects.list_projects(db)
    if as_json:
        print(
            json.dumps(
                [
                    {"id": str(p.id), "name": p.name, "created_at": p.created_at.isoformat()}
                    for p in rows
                ]
            )
        )
        return
    table = Table("id", "name", "created")
    for project in rows:
        table.add_row(
            str(project.id), project.name, project.created_at.isoformat(timespec="seconds")
        )
    out.print(table)


@tokens_app.command("create")
def create_token(
    project: ProjectArgument,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create another API token for a project (shown only this once)."""
    with _database(config, data_dir) as db:
        info, token = projects.create_token(db, project)
    if as_json:
        print(
            json.dumps({"id": str(info.id), "project_id": str(info.project_id), "api_token": token})
        )
        return
    out.print(f"Created API token {info.id} for project {info.project_id} (shown only now):")
    print(token)


@tokens_app.command("list")
def list_tokens(
    project: ProjectArgument,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a project's API tokens (ids and last characters, never the tokens)."""
    with _database(config, data_dir) as db:
        infos = projects.list_tokens(db, project)
    rows = [
        {
            "id": str(i.id),
            "ends_with": i.hint,
            "created_at": i.created_at.isoformat(),
            "revoked_at": i.revoked_at.isoformat() if i.revoked_at else None,
        }
        for i in infos
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "ends with", "created", "revoked")
    for row in rows:
        table.add_row(row["id"], f"…{row['ends_with']}", row["created_at"], row["revoked_at"] or "")
    out.print(table)


@tokens_app.command("revoke")
def revoke_token(
    token: Annotated[str, typer.Argument(help="The token's id, or the token itself.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke an API token at once."""
    with _database(config, data_dir) as db:
        info = projects.revoke_token(db, token)
    out.print(f"Revoked API token {info.id} of project {info.project_id}")
