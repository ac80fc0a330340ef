"""End to end: a real `dockyard serve` subprocess, driven over HTTP and by the CLI."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from dockyard.config import Settings
from dockyard.registry.tokens import TokenService
from dockyard.security import Cipher, parse_key
from tests.support import Server, free_port

EXTERNAL_PASSWORD = "hub-pass-0f7c2e9a"  # a value the logs must never show


def test_first_start_saves_a_working_token_and_keeps_it_out_of_the_log(server: Server) -> None:
    token_file = server.data_dir / "first-project-token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    log = server.log()
    assert token not in log  # the output is a file here, not a terminal
    assert f"Saved to {token_file} (mode 0600)" in log
    assert f'curl -H "Authorization: Bearer $(cat {token_file})" ' in log
    assert f"http://localhost:{server.port}/v1/container_registries" in log

    listed = httpx.get(
        f"{server.url}/v1/container_registries", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 200
    (managed,) = listed.json()["container_registries"]
    assert managed["registry_type"] == "nodion"
    assert managed["hostname"] == f"localhost:{server.port}"


def test_every_endpoint_and_the_cli_against_a_real_server(server: Server) -> None:
    token = (server.data_dir / "first-project-token").read_text().strip()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    managed_id = api.get("/v1/container_registries").json()["container_registries"][0]["id"]

    # curl -d style form body
    created = api.post(
        "/v1/container_registries",
        data={
            "name": "Hub",
            "registry_type": "docker_hub",
            "username": "me",
            "password": EXTERNAL_PASSWORD,
        },
    )
    assert created.status_code == 200, created.text
    hub = created.json()["container_registry"]
    assert (hub["hostname"], hub["has_credentials"]) == ("docker.io", True)

    patched = api.patch(f"/v1/container_registries/{hub['id']}", json={"name": "Hub 2"})
    assert patched.json()["container_registry"]["name"] == "Hub 2"
    assert api.get(f"/v1/container_registries/{hub['id']}").json()["container_registry"][
        "has_credentials"
    ]

    generated = api.post(f"/v1/container_registries/{managed_id}/credentials")
    assert generated.status_code == 201
    robot = generated.json()["container_registry"]
    assert re.fullmatch(r"robot\$project-[0-9a-f]{8}", robot["username"])
    assert api.post(f"/v1/container_registries/{managed_id}/credentials").status_code == 400

    # The CLI client sees the same registries as the API.
    cli_env = {"DOCKYARD_URL": server.url, "DOCKYARD_TOKEN": token}
    listed = json.loads(server.cli("registries", "list", "--json", extra_env=cli_env))
    assert [r["id"] for r in listed] == [managed_id, hub["id"]]
    assert listed[0]["has_credentials"] is True

    revoked = server.cli(
        "registries", "credentials", managed_id, "--revoke", "--json", extra_env=cli_env
    )
    assert json.loads(revoked)["has_credentials"] is False
    regenerated = server.cli("registries", "credentials", managed_id, extra_env=cli_env)
    new_robot = re.search(r"Username: (\S+)", regenerated)
    assert new_robot is not None
    assert (
        f"docker login localhost:{server.port} -u '{new_robot.group(1)}' --password-stdin"
        in regenerated
    )

    assert api.delete(f"/v1/container_registries/{hub['id']}").status_code == 200
    assert api.get(f"/v1/container_registries/{hub['id']}").status_code == 404

    # Secrets never reach the server's log: not the external password, not the robot's.
    log = server.log()
    assert EXTERNAL_PASSWORD not in log
    assert robot["password"] not in log


def test_admin_commands_work_while_the_server_runs(server: Server) -> None:
    other = json.loads(server.cli("projects", "create", "Other", "--json"))
    assert set(other) == {"id", "name", "api_token"}
    headers = {"Authorization": f"Bearer {other['api_token']}"}
    assert httpx.get(f"{server.url}/v1/container_registries", headers=headers).status_code == 200

    second = json.loads(server.cli("tokens", "create", other["id"], "--json"))
    second_headers = {"Authorization": f"Bearer {second['api_token']}"}
    registries = f"{server.url}/v1/container_registries"
    assert httpx.get(f"{server.url}/v1/regions", headers=second_headers).status_code == 200
    assert httpx.get(registries, headers=second_headers).status_code == 200
    assert httpx.get(registries, headers=second_headers).status_code == 200  # a repeated read

    # Revoked by another process: the server's next answer already knows it.
    server.cli("tokens", "revoke", second["id"])
    for url in (f"{server.url}/v1/regions", registries):
        refused = httpx.get(url, headers=second_headers)
        assert refused.status_code == 401
        assert refused.json()["errors"]
    # Revoking one token leaves the project's other token working.
    assert httpx.get(f"{server.url}/v1/regions", headers=headers).status_code == 200

    names = [p["name"] for p in json.loads(server.cli("projects", "list", "--json"))]
    assert names == ["Default", "Other"]


def test_restart_keeps_data_and_creates_no_second_first_project(server: Server) -> None:
    token = (server.data_dir / "first-project-token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": "GHCR", "registry_type": "ghcr"}
    created = httpx.post(f"{server.url}/v1/container_registries", json=body, headers=headers)
    server.stop()
    server.start()
    assert server.log().count("Created the first project") == 1
    listed = httpx.get(f"{server.url}/v1/container_registries", headers=headers).json()
    assert created.json()["container_registry"] in listed["container_registries"]
    projects = json.loads(server.cli("projects", "list", "--json"))
    assert len(projects) == 1


def test_keys_prints_settings_that_replicas_can_share(tmp_path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "dockyard", "keys"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    values = dict(line.split("=", 1) for line in shlex.split(printed))
    # The two keys replicas share, and nothing else.
    assert set(values) == {"DOCKYARD_ENCRYPTION_KEY", "DOCKYARD_TOKEN_SIGNING_KEY"}
    settings = Settings(
        data_dir=tmp_path,
        encryption_key=values["DOCKYARD_ENCRYPTION_KEY"],
        token_signing_key=values["DOCKYARD_TOKEN_SIGNING_KEY"],
    )
    assert settings.encryption_key is not None and settings.token_signing_key is not None
    cipher = Cipher(parse_key(settings.encryption_key.get_secret_value()))
    assert cipher.decrypt(cipher.encrypt("secret", "ctx"), "ctx") == "secret"
    tokens = TokenService(settings.token_signing_key.get_secret_value().encode(), "dockyard", 60)
    issued = tokens.issue("robot", uuid.uuid4(), "registry.test", [])
    assert tokens.verify(issued.token, "registry.test").subject == "robot"


def test_on_a_terminal_the_first_token_is_shown_once(tmp_path: Path) -> None:
    """`make run` in a terminal: the token is on the screen, as the first thing to use."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env.update(DOCKYARD_DATA_DIR=str(data_dir), COLUMNS="200")
    argv = [sys.executable, "-m", "dockyard", "serve", "--port", str(free_port())]
    pid, fd = pty.fork()
    if pid == 0:  # the child: serve, on the pseudo-terminal
        os.execve(sys.executable, argv, env)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        while b"List its registries" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    screen += os.read(fd, 65536)
                except OSError:  # the child closed the terminal: it has ended
                    break
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)
    token = (data_dir / "first-project-token").read_text().strip()
    assert token.encode() in screen, screen.decode(errors="replace")[-2000:]
