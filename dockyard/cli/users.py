"""`dockyard users` and `dockyard users keys`: users, their projects and their API keys.

Like `dockyard projects`, these work on the data dir directly. The keys live under
`users` because `dockyard keys` already prints the server's own keys.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dockyard.cli.options import (
    ConfigOption,
    DataDirOption,
    JsonOption,
    ProjectArgument,
    data_dir_database,
)
from dockyard.db.models import utcnow
from dockyard.domain import user_keys, users
from dockyard.domain.user_keys import MAX_KEY_LIFETIME, KeyInfo
from dockyard.domain.users import UserInfo

users_app = typer.Typer(
    help="Create users, add them to projects and remove them (works on the data dir directly)."
)
keys_app = typer.Typer(help="Create, list and revoke user API keys.")
users_app.add_typer(keys_app, name="keys")
out = Console()

UserArgument = Annotated[str, typer.Argument(help="The user's id or email.")]
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,7})([mhdw])")


def _user_json(info: UserInfo) -> dict[str, Any]:
    return {
        "id": str(info.id),
        "email": info.email,
        "name": info.name,
        "default_project_id": str(info.default_project_id) if info.default_project_id else None,
        "project_ids": [str(p) for p in info.project_ids],
        "created_at": info.created_at.isoformat(),
    }


def _show_user(info: UserInfo, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps(_user_json(info)))
        return
    out.print(f"{what} user [bold]{info.email}[/bold] ({info.id})")
    out.print(f"  projects: {', '.join(map(str, info.project_ids)) or 'none'}")
    out.print(f"  default project: {info.default_project_id or 'none'}")


@users_app.command("create")
def create_user(
    email: Annotated[str, typer.Argument(help="The user's email, which also names them here.")],
    name: Annotated[str | None, typer.Option("--name", help="A display name.")] = None,
    default_project: Annotated[
        str | None,
        typer.Option(
            "--default-project",
            help="A project to make the user a member of and act for when a request names "
            "none (no X-Nodion-Project header).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user."""
    with data_dir_database(config, data_dir) as db:
        info = users.create_user(db, email, name=name, default_project=default_project)
    _show_user(info, as_json, "Created")


@users_app.command("list")
def list_users(
    data_dir: DataDirOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List every user with their projects."""
    with data_dir_database(config, data_dir) as db:
        infos = users.list_users(db)
    if as_json:
        print(json.dumps([_user_json(info) for info in infos]))
        return
    table = Table("id", "email", "name", "projects", "default project")
    for info in infos:
        table.add_row(
            str(info.id),
            info.email,
            info.name or "",
            "\n".join(map(str, info.project_ids)),
            str(info.default_project_id or ""),
        )
    out.print(table)


@users_app.command("add-member")
def add_member(
    user: UserArgument,
    project: ProjectArgument,
    default: Annotated[
        bool, typer.Option("--default", help="Also make it the user's default project.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a user a member of a project: their API keys reach it."""
    with data_dir_database(config, data_dir) as db:
        info = users.add_member(db, user, project, default=default)
    _show_user(info, as_json, "Updated")


@users_app.command("remove-member")
def remove_member(
    user: UserArgument,
    project: ProjectArgument,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a user from a project: none of their API keys reaches it any more, at once."""
    with data_dir_database(config, data_dir) as db:
        info = users.remove_member(db, user, project)
    _show_user(info, as_json, "Updated")


# -- keys --------------------------------------------------------------------------------------


def _expiry(expires_in: str | None, expires_at: str | None, now: datetime) -> datetime | None:
    if expires_in is not None and expires_at is not None:
        raise typer.BadParameter("give --expires-in or --expires-at, not both")
    if expires_in is not None:
        match = _DURATION.fullmatch(expires_in.strip().lower())
        if match is None:
            raise typer.BadParameter(
                "a number and a unit: m (minutes), h, d or w, e.g. 90d", param_hint="--expires-in"
            )
        lifetime = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
        if lifetime > MAX_KEY_LIFETIME:
            raise typer.BadParameter("at most ten years", param_hint="--expires-in")
        return now + lifetime
    if expires_at is not None:
        try:
            moment = datetime.fromisoformat(expires_at.strip())
        except ValueError:
            raise typer.BadParameter(
                "an ISO 8601 date or time, e.g. 2030-01-31 or 2030-01-31T12:00:00+01:00",
                param_hint="--expires-at",
            ) from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _key_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": str(info.id),
        "user_id": str(info.user_id),
        "name": info.name,
        "ends_with": info.hint,
        "scopes": list(info.scopes),
        "project_ids": None if info.project_ids is None else [str(p) for p in info.project_ids],
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
        "created_at": info.created_at.isoformat(),
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


def _reach(info: KeyInfo) -> str:
    if info.project_ids is None:
        return "every project of the user"
    return ", ".join(map(str, info.project_ids))


@keys_app.command("create")
def create_key(
    user: UserArgument,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="read (GET requests) or write (every request; includes read). Repeatable; "
            "default read.",
        ),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            help="Allow only this project (repeatable); default: every project the user is "
            "a member of, now and later.",
        ),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="e.g. 12h, 90d, 2w; default: never.")
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option("--expires-at", help="An ISO 8601 date or time (UTC unless it says)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="What the key is for, e.g. 'CI deploys'.")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key for a user and print it (shown only this once)."""
    now = utcnow()
    expiry = _expiry(expires_in, expires_at, now)
    with data_dir_database(config, data_dir) as db:
        info, key = user_keys.create_key(
            db,
            user,
            scopes=scope or [user_keys.READ],
            projects=project or (),
            expires_at=expiry,
            name=name,
            now=now,
        )
    if as_json:
        print(json.dumps({**_key_json(info), "api_key": key}))
        return
    out.print(f"Created user API key {info.id} (scopes: {' '.join(info.scopes)})")
    out.print(f"  reaches: {_reach(info)}")
    out.print(f"  expires: {info.expires_at.isoformat() if info.expires_at else 'never'}")
    out.print("API key (shown only now, keep it safe):")
    print(key)


@keys_app.command("list")
def list_keys(
    user: Annotated[
        str | None, typer.Argument(help="The user's id or email; default: every user.")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List user API keys (ids and last characters, never the keys)."""
    with data_dir_database(config, data_dir) as db:
        infos = user_keys.list_keys(db, user)
    if as_json:
        print(json.dumps([_key_json(info) for info in infos]))
        return
    table = Table("id", "user", "name", "ends with", "scopes", "projects", "expires", "revoked")
    for info in infos:
        table.add_row(
            str(info.id),
            str(info.user_id),
            info.name or "",
            f"…{info.hint}",
            " ".join(info.scopes),
            "all" if info.project_ids is None else "\n".join(map(str, info.project_ids)),
            info.expires_at.isoformat(timespec="seconds") if info.expires_at else "never",
            info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def revoke_key(
    key: Annotated[str, typer.Argument(help="The key's id, or the key itself.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a user API key at once, for every project."""
    with data_dir_database(config, data_dir) as db:
        info = user_keys.revoke_key(db, key)
    out.print(f"Revoked user API key {info.id} of user {info.user_id}")
