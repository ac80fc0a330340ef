"""`dockyard`: serve, administer the data dir, and talk to the API (Typer + Rich)."""

from __future__ import annotations

import typer

from dockyard.cli import admin, fsck, gc, keys, registries, serve, users

app = typer.Typer(
    name="dockyard",
    help="Dockyard: a self-hosted container registry service.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold tokens and passwords
)
app.command("serve")(serve.serve)
app.command("keys")(keys.keys)
app.command("gc")(gc.gc)
app.command("fsck")(fsck.fsck)
app.add_typer(admin.projects_app, name="projects")
app.add_typer(admin.tokens_app, name="tokens")
app.add_typer(registries.app, name="registries")
app.add_typer(users.users_app, name="users")


def main() -> None:
    app()
