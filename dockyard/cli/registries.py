"""`dockyard registries`: the /v1 API from the command line (DOCKYARD_URL, DOCKYARD_TOKEN)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table

from dockyard.cli.options import JsonOption
from dockyard.client import ClientError, DockyardClient
from dockyard.login_line import docker_login_line

T = TypeVar("T")

app = typer.Typer(help="Manage the container registries of a project through the API.")
out = Console()
err = Console(stderr=True)

UrlOption = Annotated[
    str, typer.Option("--url", envvar="DOCKYARD_URL", help="Dockyard's base URL.")
]
LOCAL_URL = "http://localhost:5000"
TokenOption = Annotated[
    str,
    typer.Option(
        "--token", envvar="DOCKYARD_TOKEN", help="A project API token.", show_default=False
    ),
]
IdArgument = Annotated[str, typer.Argument(help="The registry's id.")]
_COLUMNS = ("id", "registry_type", "name", "hostname", "has_credentials", "status")


@contextmanager
def _client(url: str, token: str) -> Iterator[DockyardClient]:
    try:
        with DockyardClient(url, token) as client:
            yield client
    except ClientError as exc:
        for message in exc.errors:
            err.print(f"[red]{message}[/red]")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]Could not reach Dockyard at {url}: {exc}[/red]")
        raise typer.Exit(1) from None


def _table(
    columns: tuple[str, ...], rows: list[dict[str, Any]], *, no_wrap: tuple[str, ...]
) -> Table:
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=column in no_wrap)
    for row in rows:
        table.add_row(*(str(row.get(column, "")) for column in columns))
    return table


def _show(rows: list[dict[str, Any]], as_json: bool, *, single: bool = False) -> None:
    if as_json:
        print(json.dumps(rows[0] if single else rows, indent=2))
        return
    out.print(_table(_COLUMNS, rows, no_wrap=("id", "hostname")))


def _one(
    url: str, token: str, as_json: bool, call: Callable[[DockyardClient], dict[str, Any]]
) -> None:
    with _client(url, token) as client:
        _show([call(client)], as_json, single=True)


@app.command("list")
def list_registries(
    url: UrlOption = LOCAL_URL, token: TokenOption = "", as_json: JsonOption = False
) -> None:
    """List the project's registries: managed ones first, then external ones."""
    with _client(url, token) as client:
        _show(client.list_registries(), as_json)


@app.command("get")
def get_registry(
    registry_id: IdArgument,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """Show one registry."""
    _one(url, token, as_json, lambda c: c.get_registry(registry_id))


def _fields(**values: T | None) -> dict[str, T]:
    """The values given; an option left out is not sent."""
    return {key: value for key, value in values.items() if value is not None}


def _password(from_stdin: bool) -> str | None:
    return typer.get_text_stream("stdin").read().strip() if from_stdin else None


@app.command("create")
def create_registry(
    name: Annotated[str, typer.Option(help="A name for the registry.")],
    registry_type: Annotated[str, typer.Option("--type", help="docker_hub, ghcr or custom.")],
    hostname: Annotated[
        str | None, typer.Option(help="Host[:port]; docker.io/ghcr.io by default.")
    ] = None,
    username: Annotated[str | None, typer.Option(help="Username or access token name.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """Connect an external registry."""
    password = _password(password_stdin)
    fields = _fields(
        name=name,
        registry_type=registry_type,
        hostname=hostname,
        username=username,
        password=password,
    )
    _one(url, token, as_json, lambda c: c.create_registry(**fields))


@app.command("update")
def update_registry(
    registry_id: IdArgument,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    hostname: Annotated[str | None, typer.Option(help="A new host[:port].")] = None,
    username: Annotated[str | None, typer.Option(help="A new username.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a new password from standard input.")
    ] = False,
    clear_credentials: Annotated[
        bool, typer.Option("--clear-credentials", help="Remove the stored username and password.")
    ] = False,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """Change an external registry; what you leave out keeps its value."""
    password = _password(password_stdin)
    fields: dict[str, str | None] = _fields(
        name=name, hostname=hostname, username=username, password=password
    )
    if clear_credentials:
        fields.update(username=None, password=None)
    _one(url, token, as_json, lambda c: c.update_registry(registry_id, **fields))


@app.command("delete")
def delete_registry(
    registry_id: IdArgument,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """Remove an external registry."""
    _one(url, token, as_json, lambda c: c.delete_registry(registry_id))


@app.command("credentials")
def credentials(
    registry_id: IdArgument,
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Revoke the existing credentials instead.")
    ] = False,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="A new password for the same username; the old one keeps working "
            "for --grace-period.",
        ),
    ] = False,
    grace_period: Annotated[
        int | None,
        typer.Option(
            help="With --rotate: seconds the old password keeps working (default 86400; "
            "0 stops it at once).",
            show_default=False,
        ),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option(
            help="Seconds until the (new) password stops working; with --rotate, the "
            "credentials' lifetime is kept when left out.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """Generate push/pull credentials for a managed registry (the password is shown once),
    rotate them (--rotate) or revoke them (--revoke)."""
    if revoke and rotate:
        err.print("[red]--revoke and --rotate exclude each other; give one of them[/red]")
        raise typer.Exit(2)
    if grace_period is not None and not rotate:
        err.print("[red]--grace-period applies only with --rotate[/red]")
        raise typer.Exit(2)
    if expires_in is not None and revoke:
        err.print("[red]--expires-in does not apply to --revoke[/red]")
        raise typer.Exit(2)
    with _client(url, token) as client:
        if revoke:
            _show([client.revoke_credentials(registry_id)], as_json, single=True)
            return
        if rotate:
            fields = _fields(grace_period=grace_period, expires_in=expires_in)
            created = client.rotate_credentials(registry_id, **fields)
        else:
            created = client.generate_credentials(registry_id, expires_in=expires_in)
    if as_json:
        print(json.dumps(created, indent=2))
        return
    out.print(f"Username: {created['username']}")
    out.print("Password (shown only now):")
    print(created["password"])
    if "credentials_expire_at" in created:
        out.print(f"It stops working at {created['credentials_expire_at']}.")
    if "previous_password_valid_until" in created:
        out.print(f"The previous password works until {created['previous_password_valid_until']}.")
    out.print("\nLog in with (paste the password on standard input):")
    print(docker_login_line(created["hostname"], created["username"]))


# -- browsing a managed registry -------------------------------------------------------------

NameArgument = Annotated[str, typer.Argument(help="The repository's full name, <project>/<path>.")]
PageOption = Annotated[int, typer.Option(help="The page, from 1.")]
PerPageOption = Annotated[int, typer.Option("--per-page", help="Rows a page, at most 100.")]


def _page_line(meta: dict[str, Any]) -> str:
    pages = max(1, -(-meta["total"] // meta["per_page"]))
    return f"page {meta['page']} of {pages} ({meta['total']} in all)"


@app.command("repositories")
def list_repositories(
    registry_id: IdArgument,
    page: PageOption = 1,
    per_page: PerPageOption = 25,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """List a managed registry's repositories, with the storage the registry uses."""
    with _client(url, token) as client:
        found = client.list_repositories(registry_id, page, per_page)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    columns = ("name", "tag_count", "size_bytes", "last_pushed_at")
    out.print(_table(columns, found["repositories"], no_wrap=columns))
    out.print(f"{_page_line(found['meta'])}; storage used: {found['storage_used_bytes']} bytes")


@app.command("tags")
def list_tags(
    registry_id: IdArgument,
    name: NameArgument,
    page: PageOption = 1,
    per_page: PerPageOption = 25,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
    as_json: JsonOption = False,
) -> None:
    """List a repository's tags with their digests and sizes."""
    with _client(url, token) as client:
        found = client.list_tags(registry_id, name, page, per_page)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    columns = ("name", "digest", "size_bytes", "pushed_at")
    out.print(_table(columns, found["tags"], no_wrap=columns))
    out.print(_page_line(found["meta"]))


@app.command("delete-tag")
def delete_tag(
    registry_id: IdArgument,
    name: NameArgument,
    tag: Annotated[str, typer.Argument(help="The tag.")],
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
) -> None:
    """Remove a tag (its manifest stays pullable by digest until garbage collection)."""
    with _client(url, token) as client:
        removed = client.delete_tag(registry_id, name, tag)
    out.print(f"Deleted tag {removed['name']} ({removed['digest']}) of {name}")


@app.command("delete-repository")
def delete_repository(
    registry_id: IdArgument,
    name: NameArgument,
    url: UrlOption = LOCAL_URL,
    token: TokenOption = "",
) -> None:
    """Remove a repository with all its tags; the next garbage collection frees its blobs."""
    with _client(url, token) as client:
        removed = client.delete_repository(registry_id, name)
    out.print(f"Deleted repository {removed['name']} ({removed['size_bytes']} bytes)")
