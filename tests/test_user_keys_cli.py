"""`dockyard users` and `dockyard users keys`, run as commands against the data dir of a
real `dockyard serve`, whose answers change as the commands run (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from dockyard.cli import app as cli_app
from tests.support import Server

URL = "/v1/container_registries"
# A commit of another process reaches PostgreSQL's change feed a little later (NOTIFY).
DEADLINE_SECONDS = 10.0


def env_of(server: Server) -> dict[str, str]:
    """The server's settings: the commands work on its data dir and database."""
    return {k: v for k, v in server.env.items() if k.startswith("DOCKYARD_")} | {"COLUMNS": "200"}


def run(server: Server, *args: str) -> Result:
    # In this process (a subprocess costs seconds of imports on a busy machine); the
    # first test also runs `python -m dockyard` itself.
    return CliRunner().invoke(cli_app, list(args), env=env_of(server))


def cli(server: Server, *args: str) -> str:
    done = run(server, *args)
    assert done.exit_code == 0, (args, done.output)
    return done.stdout


def cli_json(server: Server, *args: str) -> Any:
    return json.loads(cli(server, *args, "--json"))


def refused(server: Server, *args: str, code: int = 1) -> str:
    done = run(server, *args)
    assert done.exit_code == code, (args, done.output)
    return " ".join(done.stderr.split())  # rich wraps long lines


def get(server: Server, key: str, project: str | None = None, path: str = URL) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if project is not None:
        headers["X-Nodion-Project"] = project
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=10)


def soon(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def projects(server: Server) -> dict[str, dict]:
    made = {}
    for name in ("Acme", "Beta"):
        made[name] = cli_json(server, "projects", "create", name)
        hub = {"name": f"{name}'s hub", "registry_type": "docker_hub"}
        headers = {"Authorization": f"Bearer {made[name]['api_token']}"}
        assert httpx.post(f"{server.url}{URL}", json=hub, headers=headers).status_code == 200
    return made


def external(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    listed = response.json()["container_registries"]
    return [r["name"] for r in listed if r["registry_type"] != "nodion"]


def test_a_user_gets_a_key_that_reaches_their_projects_until_it_is_taken_away(
    server: Server, projects: dict[str, dict]
) -> None:
    acme, beta = projects["Acme"]["id"], projects["Beta"]["id"]
    user = cli_json(
        server, "users", "create", "Alice@Example.com", "--name", "Alice", "--default-project", acme
    )
    assert user["email"] == "alice@example.com"
    assert (user["project_ids"], user["default_project_id"]) == ([acme], acme)
    user = cli_json(server, "users", "add-member", "alice@example.com", beta)
    assert user["project_ids"] == [acme, beta]

    # A real `python -m dockyard`, once: the entry point as an admin runs it.
    printed = server.cli(
        "users", "keys", "create", user["id"],
        "--scope", "write", "--expires-in", "30d", "--name", "CI deploys", "--json",
    )  # fmt: skip
    created = json.loads(printed)
    key = created["api_key"]
    assert key.startswith("dkyu_")
    assert created["scopes"] == ["read", "write"]
    assert created["project_ids"] is None
    expires = datetime.fromisoformat(created["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)

    assert external(get(server, key)) == ["Acme's hub"]
    assert external(get(server, key, beta)) == ["Beta's hub"]
    assert external(get(server, key, beta)) == ["Beta's hub"]  # from the read cache

    listed = cli(server, "users", "keys", "list", "alice@example.com", "--json")
    assert key not in listed
    [shown] = json.loads(listed)
    assert (shown["id"], shown["name"], shown["ends_with"]) == (
        created["id"],
        "CI deploys",
        key[-4:],
    )
    assert [u["email"] for u in cli_json(server, "users", "list")] == ["alice@example.com"]

    # Removed from Beta: the running server refuses at once (through its cache as well).
    cli(server, "users", "remove-member", "alice@example.com", beta)
    soon(lambda: get(server, key, beta).status_code == 404, "the removal reached the server")
    assert external(get(server, key, acme)) == ["Acme's hub"]

    revoked = cli(server, "users", "keys", "revoke", created["id"])
    assert created["id"] in revoked
    soon(lambda: get(server, key, acme).status_code == 401, "the revocation reached the server")
    [after] = cli_json(server, "users", "keys", "list")
    assert after["revoked_at"] is not None


def test_a_key_with_an_allow_list_and_the_secret_shown_once(
    server: Server, projects: dict[str, dict]
) -> None:
    acme, beta = projects["Acme"]["id"], projects["Beta"]["id"]
    cli(server, "users", "create", "bob@example.com", "--default-project", acme)
    cli(server, "users", "add-member", "bob@example.com", beta)
    printed = cli(server, "users", "keys", "create", "bob@example.com", "--project", beta)
    key = printed.strip().splitlines()[-1]  # the key alone on the last line, to copy
    assert key.startswith("dkyu_") and printed.count(key) == 1
    assert "read" in printed and beta in printed
    assert external(get(server, key, beta)) == ["Beta's hub"]
    assert get(server, key, acme).status_code == 404  # Bob's project, not this key's
    assert get(server, key).status_code == 404  # his default, Acme, likewise
    response = httpx.post(
        f"{server.url}{URL}",
        json={"name": "x", "registry_type": "ghcr"},
        headers={"Authorization": f"Bearer {key}", "X-Nodion-Project": beta},
    )
    assert response.status_code == 403  # read only, the default
    assert key not in cli(server, "users", "keys", "list", "--json")
    assert key not in server.log()


def test_refusals_say_what_is_wrong_and_change_nothing(
    server: Server, projects: dict[str, dict]
) -> None:
    acme, beta = projects["Acme"]["id"], projects["Beta"]["id"]
    cli(server, "users", "create", "carol@example.com", "--default-project", acme)
    assert "already exists" in refused(server, "users", "create", "CAROL@example.com")
    assert "not an email" in refused(server, "users", "create", "carol")
    assert "No project" in refused(
        server, "users", "create", "d@example.com", "--default-project", "x"
    )
    assert "No user" in refused(server, "users", "add-member", "nobody@example.com", acme)
    assert "not a member" in refused(server, "users", "remove-member", "carol@example.com", beta)
    keys = ("users", "keys", "create", "carol@example.com")
    assert "Unknown scope" in refused(server, *keys, "--scope", "admin")
    assert "not a member" in refused(server, *keys, "--project", beta)
    assert "future" in refused(server, *keys, "--expires-at", "2001-01-01")
    assert "ten years" in refused(server, *keys, "--expires-at", "3024-01-01")
    assert "--expires-in" in refused(server, *keys, "--expires-in", "5y", code=2)
    assert "--expires-in" in refused(server, *keys, "--expires-in", "99999999d", code=2)
    assert "not both" in refused(
        server, *keys, "--expires-in", "1d", "--expires-at", "2100-01-01", code=2
    )
    assert "No such user API key" in refused(server, "users", "keys", "revoke", "dkyu_nope")
    assert cli_json(server, "users", "keys", "list") == []
    [carol] = cli_json(server, "users", "list")
    assert carol["project_ids"] == [acme]
