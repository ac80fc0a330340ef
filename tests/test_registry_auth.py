"""/v2 authentication: the Bearer challenge, /auth/token, and every way a token is refused."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from dockyard.domain.projects import create_project
from dockyard.registry.tokens import KEY_FILE
from tests.oci_client import (
    OCIClient,
    assert_error,
    assert_unauthorized,
    basic,
    bearer,
    generate_credentials,
    parse_challenge,
)

REALM = "http://testserver/auth/token"


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


def tags_with(client, name: str, token: str):
    return client.get(f"/v2/{name}/tags/list", headers=bearer(token))


# -- the challenge -------------------------------------------------------------------------


def test_v2_without_a_token_is_the_challenge(client, robot):
    response = client.get("/v2/")
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="{REALM}",service="{robot.hostname}"'
    )
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


def test_repository_challenge_names_the_scope(client, robot):
    name = f"{robot.project_id}/app"
    challenge = assert_unauthorized(client.get(f"/v2/{name}/tags/list"))
    assert challenge == {
        "realm": REALM,
        "service": robot.hostname,
        "scope": f"repository:{name}:pull",
    }
    pushing = assert_unauthorized(client.post(f"/v2/{name}/blobs/uploads/"))
    assert pushing["scope"] == f"repository:{name}:pull,push"
    deleting = assert_unauthorized(client.delete(f"/v2/{name}/manifests/latest"))
    assert deleting["scope"] == f"repository:{name}:delete"
    catalog = assert_unauthorized(client.get("/v2/_catalog"))
    assert catalog["scope"] == "registry:catalog:*"


def test_realm_follows_the_public_url(make_client):
    client = make_client(public_url="https://registry.example.com/")
    challenge = assert_unauthorized(client.get("/v2/"))
    assert challenge["realm"] == "https://registry.example.com/auth/token"


def test_v2_with_a_token_is_200(client, oci):
    token = oci.token()
    response = client.get("/v2/", headers=bearer(token))
    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Bearer a.b.c", "Bearer "])
def test_garbage_tokens_are_invalid_token(client, robot, header):
    response = client.get("/v2/", headers={"Authorization": header})
    expected = None if header == "Bearer " else "invalid_token"
    assert_unauthorized(response, expected)


def test_basic_credentials_are_not_accepted_on_v2(client, robot):
    assert_unauthorized(client.get("/v2/", headers=basic(robot.username, robot.password)))


# -- the token endpoint ----------------------------------------------------------------------


def test_login_without_scope(client, oci, robot, settings):
    before = int(time.time())
    response = oci.token_response()
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == settings.token_lifetime_seconds
    issued = datetime.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before - 1 <= issued.timestamp() <= time.time() + 1
    public = serialization.load_pem_private_key(signing_key(settings), None).public_key()
    claims = jwt.decode(body["token"], public, algorithms=["ES256"], audience=robot.hostname)
    assert claims["iss"] == settings.token_issuer
    assert claims["sub"] == robot.username
    assert claims["access"] == []
    assert claims["exp"] - claims["iat"] == settings.token_lifetime_seconds
    assert claims["jti"] != claims_of(oci.token_response().json()["token"])["jti"]


@pytest.mark.parametrize(
    "credentials",
    [
        lambda robot: basic(robot.username, robot.password + "x"),
        lambda robot: basic(robot.username, ""),
        lambda robot: basic("robot$project-00000000", robot.password),
        lambda robot: basic(robot.username.upper(), robot.password),
        lambda robot: {"Authorization": "Basic !!!not-base64"},
        lambda robot: {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        lambda robot: {},
    ],
    ids=["bad-password", "empty-password", "unknown-user", "case", "garbage", "no-colon", "none"],
)
def test_bad_credentials_are_401(client, robot, credentials):
    response = client.get(
        "/auth/token",
        params={"service": robot.hostname, "scope": f"repository:{robot.project_id}/app:pull"},
        headers=credentials(robot),
    )
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert robot.password not in response.text


def test_a_username_with_a_nul_byte_is_401(client, robot):
    username = robot.username + "\x00"
    form = {"grant_type": "password", "username": username, "password": robot.password}
    assert_error(client.post("/auth/token", data=form), 401, "UNAUTHORIZED")
    by_get = client.get("/auth/token", headers=basic(username, robot.password))
    assert_error(by_get, 401, "UNAUTHORIZED")


def test_unknown_service_is_refused(client, robot):
    response = client.get(
        "/auth/token",
        params={"service": "registry.elsewhere.example"},
        headers=basic(robot.username, robot.password),
    )
    assert_error(response, 400, "DENIED")


def test_post_password_grant_and_refresh_token(client, robot):
    name = f"{robot.project_id}/app"
    form = {
        "grant_type": "password",
        "username": robot.username,
        "password": robot.password,
        "service": robot.hostname,
        "scope": f"repository:{name}:pull,push",
        "client_id": "docker",
    }
    plain = client.post("/auth/token", data=form)
    assert plain.status_code == 200, plain.text
    assert "refresh_token" not in plain.json()
    assert claims_of(plain.json()["access_token"])["access"] == [
        {"type": "repository", "name": name, "actions": ["pull", "push", "delete"]}
    ]

    offline = client.post("/auth/token", data={**form, "access_type": "offline"})
    assert offline.status_code == 200, offline.text
    refresh = offline.json()["refresh_token"]

    refreshed = client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": robot.hostname,
            "scope": f"repository:{name}:pull",
            "client_id": "docker",
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    token = refreshed.json()["access_token"]
    assert claims_of(token)["sub"] == robot.username
    assert refreshed.json()["refresh_token"]
    pushed = client.post(f"/v2/{name}/blobs/uploads/", headers=bearer(token))
    assert pushed.status_code == 202, pushed.text

    # A refresh token is no access token, and an access token refreshes nothing.
    assert_unauthorized(client.get("/v2/", headers=bearer(refresh)), "invalid_token")
    wrong = client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token, "service": robot.hostname},
    )
    assert_error(wrong, 401, "UNAUTHORIZED")


def test_get_with_offline_token_returns_a_refresh_token(oci):
    response = oci.token_response(offline_token="true")
    assert response.status_code == 200
    assert claims_of(response.json()["refresh_token"])["typ"] == "refresh"


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "password", "username": "robot$project-00000000", "password": "x"},
        {"grant_type": "refresh_token", "refresh_token": "not-a-token"},
    ],
)
def test_post_with_bad_credentials_is_401(client, robot, form):
    response = client.post("/auth/token", data={**form, "service": robot.hostname})
    assert_error(response, 401, "UNAUTHORIZED")


def test_post_with_an_unknown_grant_type_is_refused(client, robot):
    response = client.post(
        "/auth/token", data={"grant_type": "client_credentials", "service": robot.hostname}
    )
    assert_error(response, 400, "UNSUPPORTED")


# -- what a token grants -------------------------------------------------------------------


def test_a_robot_is_granted_only_its_own_project(client, services, oci, robot, repo):
    other = create_project(services.db, "Globex")
    foreign = f"{other.id}/app"
    response = oci.token_response(
        [
            f"repository:{repo}:pull",
            f"repository:{foreign}:pull,push",
            "repository:library/app:pull",
            "repository:nonsense",
            "garbage",
        ]
    )
    assert response.status_code == 200, response.text  # a smaller grant is no error
    token = response.json()["token"]
    assert claims_of(token)["access"] == [
        {"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]}
    ]
    assert tags_with(client, repo, token).status_code == 200
    refused = client.post(f"/v2/{foreign}/blobs/uploads/", headers=bearer(token))
    challenge = assert_unauthorized(refused, "insufficient_scope")
    assert challenge["scope"] == f"repository:{foreign}:pull,push"
    # Asking for it explicitly changes nothing.
    assert_unauthorized(oci.tags(foreign), "insufficient_scope")
    assert_unauthorized(oci.start_upload(foreign), "insufficient_scope")


def test_a_token_for_one_repository_does_not_open_another(client, oci, robot, repo):
    token = oci.token(f"repository:{repo}:pull")
    sibling = f"{robot.project_id}/other"
    assert_unauthorized(tags_with(client, sibling, token), "insufficient_scope")


def test_catalog_needs_the_catalog_scope(client, oci, repo):
    token = oci.token(f"repository:{repo}:pull")
    assert_unauthorized(client.get("/v2/_catalog", headers=bearer(token)), "insufficient_scope")
    token = oci.token("registry:catalog:*")
    assert claims_of(token)["access"] == [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    listed = client.get("/v2/_catalog", headers=bearer(token))
    assert listed.status_code == 200
    assert listed.json() == {"repositories": [repo]}


# -- regions -------------------------------------------------------------------------------

REGIONS = [{"slug": "fra", "name": "Frankfurt, DE"}, {"slug": "ams", "name": "Amsterdam, NL"}]
FRA, AMS = "registry.fra.nodion.net", "registry.ams.nodion.net"


@pytest.fixture
def two_regions(make_client, project):
    client = make_client(regions=REGIONS, registry_domain="nodion.net")
    listed = client.get("/v1/container_registries", headers=bearer(project.api_token))
    fra_id, ams_id = [r["id"] for r in listed.json()["container_registries"]]
    fra = generate_credentials(client, project.api_token, fra_id)
    ams = generate_credentials(client, project.api_token, ams_id)
    assert (fra["hostname"], ams["hostname"]) == (FRA, AMS)
    return client, fra, ams


def test_the_host_picks_the_region(two_regions, project):
    client, fra, ams = two_regions
    at_fra = OCIClient(client, fra["username"], fra["password"], host=FRA)
    assert at_fra.challenge() == {"realm": f"http://{FRA}/auth/token", "service": FRA}
    name = f"{project.id}/app"
    at_fra.push_image(name, "latest")
    at_ams = OCIClient(client, ams["username"], ams["password"], host=AMS)
    assert at_ams.challenge()["service"] == AMS
    assert_error(at_ams.tags(name), 404, "NAME_UNKNOWN")  # each region has its own
    assert at_fra.tags(name).json()["tags"] == ["latest"]


def test_a_robot_of_another_region_is_refused(two_regions, project):
    client, _, ams = two_regions
    name = f"{project.id}/app"
    intruder = OCIClient(client, ams["username"], ams["password"], host=FRA)
    assert_error(intruder.token_response([f"repository:{name}:pull"]), 401, "UNAUTHORIZED")
    assert_error(intruder.token_response(service=FRA, realm=REALM), 401, "UNAUTHORIZED")
    assert_unauthorized(intruder.tags(name))
    # A token of its own region is no good at another one.
    token = OCIClient(client, ams["username"], ams["password"], host=AMS).token(
        f"repository:{name}:pull"
    )
    response = client.get(f"http://{FRA}/v2/{name}/tags/list", headers=bearer(token))
    challenge = assert_unauthorized(response, "invalid_token")
    assert challenge["service"] == FRA


def test_an_unknown_host_serves_no_registry(two_regions):
    client, _, _ = two_regions
    assert_error(client.get("http://registry.nowhere.example/v2/"), 404, "NAME_UNKNOWN")
    assert parse_challenge(client.get(f"http://{AMS}/v2/").headers["www-authenticate"])
