"""Secrets at rest: what the database holds after the API has handled every kind of secret."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text

from dockyard.app import build_services
from dockyard.db.models import Base, ContainerRegistry, RobotAccount
from dockyard.security import (
    KEY_FILE,
    Cipher,
    DecryptionError,
    generate_key_text,
    parse_key,
)

URL = "/v1/container_registries"
EXTERNAL_USERNAME = "deploy-user-7Qx93kLm"
EXTERNAL_PASSWORD = "ext-password-Zr81cVbN-0001"


def stored_bytes(services) -> bytes:
    """Everything the database keeps: the SQLite files as bytes, or every PostgreSQL row."""
    if services.db.is_sqlite:
        path = Path(services.db.engine.url.database)
        data = path.read_bytes()
        for suffix in ("-wal", "-journal"):
            extra = path.with_name(path.name + suffix)
            if extra.exists():
                data += extra.read_bytes()
        return data
    with services.db.read() as session:
        rows = [
            row
            for table in Base.metadata.sorted_tables
            for row in session.scalars(text(f'SELECT CAST(t AS text) FROM "{table.name}" t'))
        ]
    return "\n".join(rows).encode()


@pytest.fixture
def secrets_used(client, auth, project) -> dict[str, str]:
    """An external registry with credentials, a robot account, and the API token, all used."""
    body = {
        "name": "Secret keeper",
        "registry_type": "custom",
        "hostname": "cr.example.com",
        "username": EXTERNAL_USERNAME,
        "password": EXTERNAL_PASSWORD,
    }
    external = client.post(URL, json=body, headers=auth)
    assert external.status_code == 200
    managed = client.get(URL, headers=auth).json()["container_registries"][0]
    robot = client.post(f"{URL}/{managed['id']}/credentials", headers=auth)
    assert robot.status_code == 201
    return {
        "api_token": project.api_token,
        "robot_username": robot.json()["container_registry"]["username"],
        "robot_password": robot.json()["container_registry"]["password"],
        "external_id": external.json()["container_registry"]["id"],
        "managed_id": managed["id"],
    }


def test_no_secret_is_stored_in_the_clear(services, secrets_used):
    data = stored_bytes(services)

    # What is not secret is there, so the search really looks at the stored rows.
    assert b"Secret keeper" in data
    assert secrets_used["robot_username"].encode() in data
    for secret in (
        secrets_used["api_token"],
        secrets_used["robot_password"],
        EXTERNAL_PASSWORD,
        EXTERNAL_USERNAME,
    ):
        assert secret.encode() not in data


def test_external_credentials_decrypt_back(services, secrets_used):
    with services.db.read() as session:
        row = session.get(ContainerRegistry, uuid.UUID(secrets_used["external_id"]))
        assert row is not None
        assert row.password_enc is not None
        assert services.registries.open_credentials(row) == (EXTERNAL_USERNAME, EXTERNAL_PASSWORD)


def test_external_credentials_decrypt_in_a_new_process_with_the_same_data_dir(
    settings, secrets_used
):
    restarted = build_services(settings)
    try:
        with restarted.db.read() as session:
            row = session.get(ContainerRegistry, uuid.UUID(secrets_used["external_id"]))
            assert restarted.registries.open_credentials(row) == (
                EXTERNAL_USERNAME,
                EXTERNAL_PASSWORD,
            )
    finally:
        restarted.close()


def test_ciphertext_does_not_open_with_another_key(services, secrets_used):
    other = Cipher(parse_key(generate_key_text()))
    with services.db.read() as session:
        row = session.get(ContainerRegistry, uuid.UUID(secrets_used["external_id"]))
    assert row is not None and row.password_enc is not None
    with pytest.raises(DecryptionError):
        other.decrypt(row.password_enc, f"container_registry:{row.id}:password")


def test_updated_and_cleared_credentials_are_what_is_stored(client, auth, services, secrets_used):
    registry_id = secrets_used["external_id"]
    changed = client.patch(
        f"{URL}/{registry_id}", json={"username": "new-user", "password": "new-pass"}, headers=auth
    )
    assert changed.status_code == 200
    with services.db.read() as session:
        row = session.get(ContainerRegistry, uuid.UUID(registry_id))
        assert services.registries.open_credentials(row) == ("new-user", "new-pass")

    cleared = client.patch(
        f"{URL}/{registry_id}", json={"username": None, "password": None}, headers=auth
    )
    assert cleared.status_code == 200
    with services.db.read() as session:
        row = session.get(ContainerRegistry, uuid.UUID(registry_id))
        assert services.registries.open_credentials(row) is None
        assert row.username_enc is None
        assert row.password_enc is None


def test_robot_password_is_stored_as_a_hash_that_verifies(services, secrets_used):
    with services.db.read() as session:
        robot = session.scalars(select(RobotAccount)).one()
    assert str(robot.registry_id) == secrets_used["managed_id"]
    assert robot.username == secrets_used["robot_username"]
    assert secrets_used["robot_password"] not in robot.secret_hash
    hasher = services.credentials.hasher
    assert hasher.verify(robot.secret_hash, secrets_used["robot_password"])
    assert not hasher.verify(robot.secret_hash, secrets_used["robot_password"] + "x")


def test_generated_encryption_key_file_is_private(settings, services):
    key_file = settings.data_dir / KEY_FILE
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(parse_key(key_file.read_text())) == 32


def test_configured_key_is_used_and_no_key_file_is_written(make_settings, tmp_path):
    key = generate_key_text()
    settings = make_settings(data_dir=tmp_path / "elsewhere", encryption_key=key)
    services = build_services(settings)
    try:
        assert not (settings.data_dir / KEY_FILE).exists()
        sealed = services.registries.cipher.encrypt("hello", "ctx")
        assert Cipher(parse_key(key)).decrypt(sealed, "ctx") == "hello"
    finally:
        services.close()
