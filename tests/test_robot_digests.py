"""Robot secrets stored as keyed digests, and robots stored with argon2 hashes by earlier
versions: they keep logging in, and their hash is replaced by a digest on the next login.
Against a real `dockyard serve`, its database read and written as an operator would."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from dockyard.db import Database
from dockyard.db.models import RobotAccount
from tests.oci_client import OCIClient
from tests.support import Server, start_server

DIGEST = "hmac-sha256$"
# What earlier versions stored: argon2id with OWASP's floor (19 MiB, t=2, p=1).
ARGON2 = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@dataclass
class Live:
    server: Server
    http: httpx.Client
    db: Database
    auth: dict[str, str]
    registry_id: str

    def credentials(self, verb: str = "") -> dict[str, str]:
        path = f"/v1/container_registries/{self.registry_id}/credentials{verb}"
        answer = self.http.post(path, headers=self.auth)
        assert answer.status_code in (200, 201), answer.text
        return dict(answer.json()["container_registry"])

    def token_answer(self, username: str, password: str, **params: str) -> httpx.Response:
        oci = OCIClient(self.http, username, password, host=f"127.0.0.1:{self.server.port}")
        return oci.token_response(**params)

    def logs_in(self, username: str, password: str) -> bool:
        status = self.token_answer(username, password).status_code
        assert status in (200, 401)
        return status == 200

    def row(self) -> RobotAccount:
        with self.db.read() as session:
            return session.scalars(select(RobotAccount)).one()

    def store(self, **columns: str) -> None:
        """As an earlier version left the row."""
        with self.db.write() as session:
            session.execute(update(RobotAccount).values(**columns))


@pytest.fixture
def live(tmp_path: Path, database_url: str) -> Iterator[Live]:
    # Standing checked on every request: a token's secret id is looked at each time.
    server = start_server(tmp_path, database_url, robot_check_seconds="0")
    token = (server.data_dir / "first-project-token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=server.url, timeout=60)
    listed = http.get("/v1/container_registries", headers=auth).json()
    db = Database(database_url)
    yield Live(server, http, db, auth, listed["container_registries"][0]["id"])
    http.close()
    db.dispose()
    server.stop()


def claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def pings(live: Live, token: str) -> int:
    return live.http.get("/v2/", headers={"Authorization": f"Bearer {token}"}).status_code


def test_new_credentials_are_stored_as_a_digest_that_logs_in(live: Live) -> None:
    robot = live.credentials()
    stored = live.row().secret_hash
    assert stored.startswith(DIGEST)
    assert robot["password"] not in stored
    assert live.logs_in(robot["username"], robot["password"])
    assert not live.logs_in(robot["username"], robot["password"] + "x")
    assert not live.logs_in(robot["username"], robot["password"][:-1])
    assert live.row().secret_hash == stored  # a login changes nothing


def test_an_argon2_robot_logs_in_once_and_is_stored_as_a_digest_after(live: Live) -> None:
    robot = live.credentials()
    user, password = robot["username"], robot["password"]
    live.store(secret_hash=ARGON2.hash(password))
    assert not live.logs_in(user, "wrong")
    assert live.row().secret_hash.startswith("$argon2id$")  # a wrong secret upgrades nothing

    first = live.token_answer(user, password, offline_token="true")
    assert first.status_code == 200, first.text
    upgraded = live.row().secret_hash
    assert upgraded.startswith(DIGEST)
    assert password not in upgraded
    assert live.logs_in(user, password)
    assert not live.logs_in(user, password + "x")
    assert live.row().secret_hash == upgraded

    # Tokens obtained with the argon2 hash keep working with its digest.
    assert pings(live, first.json()["token"]) == 200
    refreshed = live.http.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            "service": str(claims(first.json()["token"])["aud"]),
            "client_id": "test",
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    again = live.token_answer(user, password).json()["token"]
    assert claims(again)["sid"] == claims(first.json()["token"])["sid"]


def test_argon2_passwords_of_a_rotation_are_upgraded_each_by_its_own_login(live: Live) -> None:
    old = live.credentials()
    new = live.credentials("/rotate")
    user = old["username"]
    live.store(
        secret_hash=ARGON2.hash(new["password"]),
        previous_secret_hash=ARGON2.hash(old["password"]),
    )
    old_token = live.token_answer(user, old["password"]).json()["token"]
    assert live.row().previous_secret_hash.startswith(DIGEST)
    assert live.row().secret_hash.startswith("$argon2id$")

    assert live.logs_in(user, new["password"])
    assert live.row().secret_hash.startswith(DIGEST)
    # Both stay good for the rest of the grace period, and tell each other apart.
    assert live.logs_in(user, old["password"])
    assert live.logs_in(user, new["password"])
    assert not live.logs_in(user, "wrong")
    assert pings(live, old_token) == 200

    # A rotation now ends the old one's grace at once, digest or not.
    newest = live.credentials("/rotate")
    assert not live.logs_in(user, old["password"])
    assert pings(live, old_token) == 401
    assert live.logs_in(user, new["password"])
    assert live.logs_in(user, newest["password"])


def test_an_unknown_robot_and_a_hash_of_unknown_form_are_refused(live: Live) -> None:
    robot = live.credentials()
    assert not live.logs_in("robot$project-00000000", robot["password"])
    live.store(secret_hash="md5$" + "0" * 32)
    assert not live.logs_in(robot["username"], robot["password"])
