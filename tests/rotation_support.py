"""Shared by the rotation and expiry tests: a clock to travel with, and the calls they make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.oci_client import OCIClient

URL = "/v1/container_registries"


class Clock:
    """The time the credentials' rules see; moved by hand, never by sleeping."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def managed_id(client: TestClient, auth: dict[str, str]) -> str:
    listed = client.get(URL, headers=auth).json()["container_registries"]
    assert listed[0]["registry_type"] == "nodion"
    return str(listed[0]["id"])


def generate(client: TestClient, auth: dict[str, str], registry_id: str, **body: Any):
    return client.post(f"{URL}/{registry_id}/credentials", headers=auth, json=body or None)


def generated(client: TestClient, auth: dict[str, str], registry_id: str, **body: Any) -> dict:
    response = generate(client, auth, registry_id, **body)
    assert response.status_code == 201, response.text
    return dict(response.json()["container_registry"])


def rotate(client: TestClient, auth: dict[str, str], registry_id: str, **body: Any):
    return client.post(f"{URL}/{registry_id}/credentials/rotate", headers=auth, json=body or None)


def rotated(client: TestClient, auth: dict[str, str], registry_id: str, **body: Any) -> dict:
    response = rotate(client, auth, registry_id, **body)
    assert response.status_code == 200, response.text
    return dict(response.json()["container_registry"])


def registry(client: TestClient, auth: dict[str, str], registry_id: str) -> dict:
    response = client.get(f"{URL}/{registry_id}", headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json()["container_registry"])


def token_answer(client: TestClient, username: str, password: str) -> httpx.Response:
    """A docker-style login: GET /v2/, then the realm it names with Basic credentials."""
    return OCIClient(client, username, password).token_response()


def password_grant(client: TestClient, username: str, password: str, **extra: str):
    """The OAuth2 password grant on POST /auth/token, as containerd and buildkit log in."""
    form = {"grant_type": "password", "username": username, "password": password}
    return client.post("/auth/token", data={**form, "client_id": "test", **extra})


def logs_in(client: TestClient, username: str, password: str) -> bool:
    """Whether the password works every way a client uses it; when it does not, each way
    must refuse it exactly as it refuses a wrong password."""
    basic = token_answer(client, username, password)
    grant = password_grant(client, username, password)
    ping = OCIClient(client, username, password).ping()
    if basic.status_code == 200:
        assert grant.status_code == 200, grant.text
        assert ping.status_code == 200, ping.text
        return True
    wrong = "not-" + password
    assert refusal(basic) == refusal(token_answer(client, username, wrong))
    assert refusal(grant) == refusal(password_grant(client, username, wrong))
    assert refusal(ping) == refusal(OCIClient(client, username, wrong).ping())
    return False


def refusal(response: httpx.Response) -> tuple[int, str, str | None]:
    """What a client sees of a refused login: status, body and challenge."""
    return response.status_code, response.text, response.headers.get("www-authenticate")


def refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    return client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "test",
        },
    )


def refresh_token_of(client: TestClient, username: str, password: str) -> str:
    response = password_grant(client, username, password, access_type="offline")
    assert response.status_code == 200, response.text
    return str(response.json()["refresh_token"])
