"""/v2 tokens that must not work: forged, tampered with, expired, or of revoked credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dockyard.domain.projects import create_project
from dockyard.registry.tokens import KEY_FILE
from tests.oci_client import (
    OCIClient,
    assert_error,
    assert_unauthorized,
    bearer,
    generate_credentials,
)


@pytest.fixture
def repo(oci, robot) -> str:
    """A repository of the robot's project holding one image."""
    name = f"{robot.project_id}/app"
    oci.push_image(name, "latest")
    return name


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def signing_key(settings) -> bytes:
    return (settings.data_dir / KEY_FILE).read_bytes()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tags_with(client, name: str, token: str):
    return client.get(f"/v2/{name}/tags/list", headers=bearer(token))


# -- forged and tampered tokens ------------------------------------------------------------


@pytest.fixture
def genuine(oci, repo) -> str:
    return oci.token(f"repository:{repo}:pull")


def resign(claims: dict, key: bytes, **changes) -> str:
    return jwt.encode({**claims, **changes}, key, algorithm="ES256", headers={"typ": "JWT"})


def test_resigning_with_the_service_key_is_accepted(client, settings, genuine, repo):
    """The control for the tests below: the forging itself yields tokens that work."""
    token = resign(claims_of(genuine), signing_key(settings), jti="another")
    assert tags_with(client, repo, token).status_code == 200


def test_expired_token_is_refused(make_client, settings, robot, repo):
    client = make_client(token_lifetime_seconds=30)
    response = OCIClient(client, robot.username, robot.password).token_response(
        [f"repository:{repo}:pull"]
    )
    assert response.json()["expires_in"] == 30
    claims = claims_of(response.json()["token"])
    assert claims["exp"] - claims["iat"] == 30
    now = int(time.time())
    expired = resign(claims, signing_key(settings), iat=now - 40, nbf=now - 45, exp=now - 10)
    assert_unauthorized(tags_with(client, repo, expired), "invalid_token")
    not_yet = resign(claims, signing_key(settings), nbf=now + 120, exp=now + 150)
    assert_unauthorized(tags_with(client, repo, not_yet), "invalid_token")


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "registry.elsewhere.example"},
        {"iss": "someone-else"},
        {"typ": "refresh"},
        {"rid": str(uuid.uuid4())},  # a robot that does not exist
        {"rid": "not-a-uuid"},
        {"access": [{"type": "repository"}]},
    ],
    ids=["audience", "issuer", "refresh-type", "unknown-robot", "bad-robot-id", "bad-access"],
)
def test_signed_but_wrong_claims_are_refused(client, settings, genuine, repo, changes):
    token = resign(claims_of(genuine), signing_key(settings), **changes)
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")


@pytest.mark.parametrize("missing", ["exp", "aud", "iss", "sub", "rid", "nbf", "iat"])
def test_a_required_claim_missing_is_refused(client, settings, genuine, repo, missing):
    claims = claims_of(genuine)
    del claims[missing]
    token = jwt.encode(claims, signing_key(settings), algorithm="ES256")
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")


def test_another_key_is_refused(client, genuine, repo):
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims_of(genuine), other, algorithm="ES256")
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")


def test_alg_none_is_refused(client, genuine, repo):
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_of(genuine)).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        assert_unauthorized(tags_with(client, repo, token), "invalid_token")


def test_hs256_signed_with_the_public_key_is_refused(client, settings, genuine, repo):
    """Algorithm confusion: the public key used as an HMAC secret."""
    private = serialization.load_pem_private_key(signing_key(settings), None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_of(genuine)).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")


def test_a_modified_access_claim_is_refused(client, services, genuine, repo):
    header, _, signature = genuine.split(".")
    foreign = f"{create_project(services.db, 'Globex').id}/app"
    claims = claims_of(genuine)
    claims["access"].append({"type": "repository", "name": foreign, "actions": ["pull"]})
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert_unauthorized(tags_with(client, foreign, tampered), "invalid_token")
    assert_unauthorized(tags_with(client, repo, tampered), "invalid_token")


# -- revoked credentials -------------------------------------------------------------------


def revoke(client, auth, robot) -> None:
    url = f"/v1/container_registries/{robot.registry_id}/credentials"
    response = client.delete(url, headers=auth)
    assert response.status_code == 200, response.text


def test_revoked_credentials_cannot_log_in(client, auth, oci, robot):
    refresh = oci.token_response(offline_token="true").json()["refresh_token"]
    revoke(client, auth, robot)
    assert_error(oci.token_response(), 401, "UNAUTHORIZED")
    refreshed = client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": robot.hostname},
    )
    assert_error(refreshed, 401, "UNAUTHORIZED")


def test_with_robot_check_zero_a_revoked_token_stops_at_once(make_client, auth, robot, repo):
    client = make_client(robot_check_seconds=0)
    token = OCIClient(client, robot.username, robot.password).token(f"repository:{repo}:pull")
    assert tags_with(client, repo, token).status_code == 200
    revoke(client, auth, robot)
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")
    assert_unauthorized(client.get("/v2/", headers=bearer(token)), "invalid_token")


def test_a_revoked_token_stops_within_robot_check_seconds(make_client, auth, robot, repo):
    client = make_client(robot_check_seconds=0.5)
    token = OCIClient(client, robot.username, robot.password).token(f"repository:{repo}:pull")
    assert tags_with(client, repo, token).status_code == 200
    revoke(client, auth, robot)
    time.sleep(0.6)
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")


def test_new_credentials_do_not_revive_old_tokens(make_client, auth, project, robot, repo):
    client = make_client(robot_check_seconds=0)
    token = OCIClient(client, robot.username, robot.password).token(f"repository:{repo}:pull")
    revoke(client, auth, robot)
    fresh = generate_credentials(client, project.api_token, robot.registry_id)
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")
    new = OCIClient(client, fresh["username"], fresh["password"])
    assert new.tags(repo).status_code == 200
