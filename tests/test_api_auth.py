"""Who may call /v1: API tokens, projects that cannot see each other, and routing errors."""

from __future__ import annotations

import uuid

import pytest

from dockyard.domain.projects import create_project, create_token, revoke_token

URL = "/v1/container_registries"
# Fixed, not uuid4(): parametrized ids must be the same in every pytest-xdist worker.
ABSENT = "5b0e7a3c-0c8e-4d52-9a51-2f0f4c1e9d77"
ENDPOINTS = [
    ("GET", URL),
    ("POST", URL),
    ("GET", "/v1/regions"),
    ("GET", "/v1/audit_events"),
    ("GET", f"{URL}/{ABSENT}"),
    ("PATCH", f"{URL}/{ABSENT}"),
    ("DELETE", f"{URL}/{ABSENT}"),
    ("POST", f"{URL}/{ABSENT}/verify"),
    ("POST", f"{URL}/{ABSENT}/credentials"),
    ("DELETE", f"{URL}/{ABSENT}/credentials"),
    ("POST", f"{URL}/{ABSENT}/credentials/rotate"),
    ("GET", f"{URL}/{ABSENT}/repositories"),
    ("GET", f"{URL}/{ABSENT}/repositories/{ABSENT}/team/app"),
    ("DELETE", f"{URL}/{ABSENT}/repositories/{ABSENT}/team/app"),
    ("GET", f"{URL}/{ABSENT}/repositories/{ABSENT}/team/app/tags"),
    ("DELETE", f"{URL}/{ABSENT}/repositories/{ABSENT}/team/app/tags/v1"),
]


def assert_errors(response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}
    assert body["errors"]
    assert all(isinstance(sentence, str) and sentence for sentence in body["errors"])
    return body["errors"]


def call(client, method: str, path: str, headers: dict[str, str]):
    body = {"name": "Hub", "registry_type": "docker_hub"}
    if method in ("POST", "PATCH") and not path.endswith("/credentials"):
        return client.request(method, path, json=body, headers=headers)
    return client.request(method, path, headers=headers)


# -- API tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token dky_abc"},
        {"Authorization": "Bearer dky_not-a-real-token"},
        {"Authorization": "Bearer dkyu_not-a-real-key", "X-Nodion-Project": str(uuid.uuid4())},
    ],
    ids=["none", "empty", "bearer-only", "bearer-blank", "basic", "token", "unknown", "user-key"],
)
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_without_a_valid_token_every_endpoint_is_401(client, project, headers, method, path):
    assert_errors(call(client, method, path, headers), 401)


def test_401_says_how_to_authenticate_without_echoing_the_token(client, project):
    missing = assert_errors(client.get(URL), 401)
    assert "Authorization" in missing[0]
    wrong = client.get(URL, headers={"Authorization": "Bearer dky_guessed"})
    assert_errors(wrong, 401)
    assert "dky_guessed" not in wrong.text
    assert wrong.headers["www-authenticate"].startswith("Bearer")


def test_a_bad_token_changes_nothing(client, auth):
    before = client.get(URL, headers=auth).json()
    body = {"name": "Hub", "registry_type": "docker_hub"}
    assert_errors(client.post(URL, json=body, headers={"Authorization": "Bearer nope"}), 401)
    assert client.get(URL, headers=auth).json() == before


def test_a_revoked_token_is_refused_and_other_tokens_still_work(client, services, project, auth):
    assert client.get(URL, headers=auth).status_code == 200
    _, second = create_token(services.db, str(project.id))

    revoke_token(services.db, project.api_token)

    assert_errors(client.get(URL, headers=auth), 401)
    assert_errors(client.get("/v1/regions", headers=auth), 401)
    still = client.get(URL, headers={"Authorization": f"Bearer {second}"})
    assert still.status_code == 200


def test_the_scheme_is_case_insensitive(client, project):
    response = client.get(URL, headers={"Authorization": f"bearer {project.api_token}"})
    assert response.status_code == 200


# -- projects cannot see each other --------------------------------------------------------


@pytest.fixture
def other_auth(services) -> dict[str, str]:
    other = create_project(services.db, "Other")
    return {"Authorization": f"Bearer {other.api_token}"}


def test_each_project_lists_only_its_own_registries(client, auth, other_auth):
    body = {"name": "A's hub", "registry_type": "docker_hub"}
    mine = client.post(URL, json=body, headers=auth).json()["container_registry"]
    a_ids = {r["id"] for r in client.get(URL, headers=auth).json()["container_registries"]}

    b_list = client.get(URL, headers=other_auth).json()["container_registries"]

    assert mine["id"] in a_ids
    assert [r["registry_type"] for r in b_list] == ["nodion"]
    assert not a_ids & {r["id"] for r in b_list}


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/credentials"),
        ("DELETE", "/credentials"),
    ],
)
def test_another_projects_registry_is_a_404_like_any_unknown_id(
    client, auth, other_auth, method, suffix
):
    body = {"name": "A", "registry_type": "docker_hub", "username": "u", "password": "p"}
    external = client.post(URL, json=body, headers=auth).json()["container_registry"]
    managed = client.get(URL, headers=auth).json()["container_registries"][0]
    if method == "DELETE" and suffix:
        assert client.post(f"{URL}/{managed['id']}/credentials", headers=auth).status_code == 201
    before = client.get(URL, headers=auth).json()

    unknown = call(client, method, f"{URL}/{uuid.uuid4()}{suffix}", other_auth)
    malformed = call(client, method, f"{URL}/not-a-uuid{suffix}", other_auth)
    expected = assert_errors(unknown, 404)
    assert assert_errors(malformed, 404) == expected
    for registry in (external, managed):
        foreign = call(client, method, f"{URL}/{registry['id']}{suffix}", other_auth)
        assert assert_errors(foreign, 404) == expected
        assert registry["id"] not in foreign.text

    assert client.get(URL, headers=auth).json() == before


def test_a_registry_id_has_one_spelling(client, auth):
    managed = client.get(URL, headers=auth).json()["container_registries"][0]
    canonical = uuid.UUID(managed["id"])
    assert client.get(f"{URL}/{managed['id'].upper()}", headers=auth).status_code == 200
    for other in (canonical.hex, f"{{{canonical}}}", canonical.urn):
        assert client.get(f"{URL}/{other}", headers=auth).status_code == 404


# -- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/container_registries/x/y/z", "/v2x"])
def test_unknown_endpoint_is_404_with_errors(client, auth, path):
    assert_errors(client.get(path, headers=auth), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", URL, {"GET", "POST"}),
        ("DELETE", URL, {"GET", "POST"}),
        ("PUT", f"{URL}/{ABSENT}", {"GET", "PATCH", "DELETE"}),
        ("GET", f"{URL}/{ABSENT}/credentials", {"POST", "DELETE"}),
        ("POST", "/v1/regions", {"GET"}),
        ("POST", f"{URL}/{ABSENT}/repositories", {"GET"}),
        ("PUT", f"{URL}/{ABSENT}/repositories/x/app", {"GET", "DELETE"}),
        # Also the name of a repository `x/app/tags/v1`, which GET reads.
        ("POST", f"{URL}/{ABSENT}/repositories/x/app/tags/v1", {"GET", "DELETE"}),
        ("PUT", f"{URL}/{ABSENT}/repositories/x/app/tags", {"GET", "DELETE"}),
    ],
)
def test_wrong_method_is_405_with_errors(client, auth, method, path, allowed):
    response = client.request(method, path, headers=auth)
    [sentence] = assert_errors(response, 405)
    assert method in sentence
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


def test_openapi_lists_every_v1_path_with_its_methods(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = {
        path: {method.upper() for method in operations}
        for path, operations in response.json()["paths"].items()
        if path.startswith("/v1")
    }
    assert paths == {
        URL: {"GET", "POST"},
        f"{URL}/{{registry_id}}": {"GET", "PATCH", "DELETE"},
        f"{URL}/{{registry_id}}/credentials": {"POST", "DELETE"},
        f"{URL}/{{registry_id}}/verify": {"POST"},
        f"{URL}/{{registry_id}}/credentials/rotate": {"POST"},
        "/v1/regions": {"GET"},
        "/v1/audit_events": {"GET"},
        f"{URL}/{{registry_id}}/repositories": {"GET"},
        f"{URL}/{{registry_id}}/repositories/{{name}}": {"GET", "DELETE"},
        f"{URL}/{{registry_id}}/repositories/{{name}}/tags": {"GET"},
        f"{URL}/{{registry_id}}/repositories/{{name}}/tags/{{tag}}": {"DELETE"},
    }


def test_docs_page_answers(client):
    response = client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
