"""Rotation and expiry with real clients (skopeo, podman) against a real `dockyard serve`.

The server runs on the real clock: time travel here moves the stored times instead (the
end of a grace period, an expiry) into the past, as a day passing would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from dockyard.db import Database
from dockyard.db.models import RobotAccount
from tests.support import Server
from tests.test_registry_clients import (
    LOGIN_REFUSED,
    Account,
    Podman,
    _account,
    _need,
    _run,
    build_layout,
    layout_manifest,
    skopeo_copy,
)

REFUSED = re.compile(r"unauthorized|authentication required|invalid username/password", re.I)


@pytest.fixture
def first(server: Server) -> Account:
    (project,) = json.loads(server.cli("projects", "list", "--json"))
    token = (server.data_dir / "first-project-token").read_text().strip()
    return _account(server, project["id"], token)


@pytest.fixture(autouse=True)
def no_server_errors(server: Server) -> Iterator[None]:
    yield
    log = server.log()
    assert not re.search(r'HTTP/1\.1" 5\d\d |Traceback', log), log[-5000:]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def travel(database_url: str, **moments: datetime) -> None:
    """Set the robot's stored times, as if the clock had reached them."""
    db = Database(database_url)
    try:
        with db.write() as session:
            session.execute(update(RobotAccount).values(**moments))
    finally:
        db.dispose()


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def test_skopeo_keeps_working_with_the_old_password_until_its_grace_period_ends(
    server: Server, database_url: str, first: Account, work: Path
):
    _need("skopeo", "podman")
    source = work / "source"
    digest = build_layout(source)
    remote = f"docker://127.0.0.1:{server.port}/{first.project_id}/app"
    _run(*skopeo_copy(f"oci:{source}:v1", f"{remote}:v1", dest_creds=first.creds))

    cli_env = {"DOCKYARD_URL": server.url, "DOCKYARD_TOKEN": first.api_token}
    rotated = json.loads(
        server.cli(
            "registries", "credentials", first.registry_id, "--rotate", "--json",
            extra_env=cli_env,
        )
    )  # fmt: skip
    assert rotated["username"] == first.username
    new_creds = f"{first.username}:{rotated['password']}"

    # During the grace period a CI job that still has the old password pushes and pulls.
    _run(*skopeo_copy(f"oci:{source}:v1", f"{remote}:v2", dest_creds=first.creds))
    _run(*skopeo_copy(f"{remote}:v2", f"oci:{work / 'old'}:v2", src_creds=first.creds))
    _run(*skopeo_copy(f"{remote}:v1", f"oci:{work / 'new'}:v1", src_creds=new_creds))
    assert layout_manifest(work / "old")[0] == layout_manifest(work / "new")[0] == digest

    travel(database_url, previous_valid_until=an_hour_ago())

    refused = _run(
        *skopeo_copy(f"{remote}:v1", f"oci:{work / 'late'}:v1", src_creds=first.creds),
        check=False,
    )
    assert refused.returncode != 0
    assert REFUSED.search(refused.stderr), refused.stderr
    _run(*skopeo_copy(f"{remote}:v1", f"oci:{work / 'fresh'}:v1", src_creds=new_creds))
    podman = Podman(work / "podman", f"127.0.0.1:{server.port}")
    assert podman.login(first).returncode != 0
    assert podman.login(first, password=rotated["password"]).returncode == 0

    # The CLI's own output: the new password once, when the old one stops, how to log in.
    shown = server.cli(
        "registries", "credentials", first.registry_id, "--rotate", "--grace-period", "0",
        extra_env=cli_env,
    )  # fmt: skip
    lines = shown.splitlines()
    third = lines[lines.index("Password (shown only now):") + 1]
    assert "The previous password works until" in shown
    assert f"docker login localhost:{server.port} -u '{first.username}' --password-stdin" in shown
    assert podman.login(first, password=third).returncode == 0
    assert podman.login(first, password=rotated["password"]).returncode != 0
    for password in (first.password, rotated["password"], third):
        assert password not in server.log()


def test_podman_is_refused_an_expired_password_and_takes_the_rotated_one(
    server: Server, database_url: str, first: Account, work: Path
):
    _need("podman")
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {first.api_token}"})
    with api:
        assert api.delete(f"/v1/container_registries/{first.registry_id}/credentials")
        made = api.post(
            f"/v1/container_registries/{first.registry_id}/credentials",
            json={"expires_in": 3600},
        )
        assert made.status_code == 201, made.text
        robot = made.json()["container_registry"]
        shown = api.get(f"/v1/container_registries/{first.registry_id}").json()
        assert (
            shown["container_registry"]["credentials_expire_at"] == (robot["credentials_expire_at"])
        )
        podman = Podman(work / "podman", f"127.0.0.1:{server.port}")
        assert podman.login(first, password=robot["password"]).returncode == 0

        travel(database_url, expires_at=an_hour_ago())

        expired = podman.login(first, password=robot["password"])
        assert expired.returncode != 0
        assert LOGIN_REFUSED.search(expired.stderr), expired.stderr
        renewed = api.post(
            f"/v1/container_registries/{first.registry_id}/credentials/rotate",
            data={"grace_period": "0"},
        )
    assert renewed.status_code == 200, renewed.text
    new = renewed.json()["container_registry"]
    assert podman.login(first, password=new["password"]).returncode == 0
    assert podman.login(first, password=robot["password"]).returncode != 0
