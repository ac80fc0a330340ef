"""/v1 checked against its own OpenAPI document: generated requests, valid and invalid,
never get a 5xx, and every answer is one the document declares (status, type and body).

Requests go in-process to the test's app, authenticated as the fixtures' project. Runs are
derandomized and keep no example database, so CI sends the same requests every time.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.python.asgi import ASGIClient

# Hypothesis caches constants it reads from the source under ./.hypothesis, at collection
# and even with database=None: kept out of the work tree, in the system's temp directory.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dockyard-hypothesis")
BASE = "http://testserver"
# Every operation of /v1, so that each is a test of its own; the first test fails when the
# document gains an operation this list lacks.
OPERATIONS = [
    "GET /v1/container_registries",
    "POST /v1/container_registries",
    "GET /v1/container_registries/{registry_id}",
    "PATCH /v1/container_registries/{registry_id}",
    "DELETE /v1/container_registries/{registry_id}",
    "POST /v1/container_registries/{registry_id}/verify",
    "POST /v1/container_registries/{registry_id}/credentials",
    "DELETE /v1/container_registries/{registry_id}/credentials",
    "POST /v1/container_registries/{registry_id}/credentials/rotate",
    "GET /v1/regions",
    "GET /v1/audit_events",
    "GET /v1/container_registries/{registry_id}/repositories",
    "GET /v1/container_registries/{registry_id}/repositories/{name}",
    "DELETE /v1/container_registries/{registry_id}/repositories/{name}",
    "GET /v1/container_registries/{registry_id}/repositories/{name}/tags",
    "DELETE /v1/container_registries/{registry_id}/repositories/{name}/tags/{tag}",
]
WITH_BODY = [
    "POST /v1/container_registries",
    "PATCH /v1/container_registries/{registry_id}",
    "POST /v1/container_registries/{registry_id}/credentials",  # optional: expires_in
    "POST /v1/container_registries/{registry_id}/credentials/rotate",
]
# Those whose request can break the document's rules: a body, or a query of bounded numbers
# (a path segment may be any string).
CAN_BE_INVALID = [
    *WITH_BODY,
    "GET /v1/audit_events",
    "GET /v1/container_registries/{registry_id}/repositories",
    "GET /v1/container_registries/{registry_id}/repositories/{name}/tags",
]
RUNS = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    (label, GenerationMode.NEGATIVE) for label in CAN_BE_INVALID
]
EXAMPLES = 100  # per run: all ten take ~15 s per database
HUB = {"name": "Hub", "registry_type": "docker_hub", "username": "me", "password": "pw"}
# A body the document allows may still be refused for what it means (a name of spaces, a
# managed registry that can't be deleted): that is the documented 400, not a failure.
NOT_CHECKED = [positive_data_acceptance]


@pytest.fixture
def api_schema(client):
    document = client.get("/openapi.json")
    assert document.status_code == 200
    return schemathesis.openapi.from_dict(document.json())


@pytest.fixture
def session(client) -> ASGIClient:
    # Not entered as a context manager: the fixture's TestClient already runs the lifespan.
    return ASGIClient(client.app)


@pytest.fixture
def known_ids(client, auth) -> list[str]:
    """The project's managed registry and an external one: ids that find something."""
    created = client.post("/v1/container_registries", json=HUB, headers=auth)
    assert created.status_code == 200, created.text
    listed = client.get("/v1/container_registries", headers=auth).json()
    return [registry["id"] for registry in listed["container_registries"]]


@pytest.fixture
def known_names(oci, robot) -> list[str]:
    """Repositories of the managed registry, with a slash in the name and a tag `v1`."""
    names = [f"{robot.project_id}/app", f"{robot.project_id}/team/app"]
    for name in names:
        oci.push_image(name, "v1")
    return names


def path_values(path: str, registry_id: str, name: str, tag: str = "v1") -> dict[str, str]:
    values = {"registry_id": registry_id, "name": name, "tag": tag}
    return {key: value for key, value in values.items() if "{" + key + "}" in path}


def listing(session, auth) -> dict:
    response = session.get(f"{BASE}/v1/container_registries", headers=auth)
    assert response.status_code == 200
    return response.json()


def test_the_document_lists_every_operation_tested_here(api_schema):
    documented = sorted(
        f"{operation.ok().method.upper()} {operation.ok().path}"
        for operation in api_schema.get_all_operations()
    )
    assert documented == sorted(OPERATIONS)


@pytest.mark.parametrize(
    ("label", "mode"), RUNS, ids=[f"{label}-{mode.value}" for label, mode in RUNS]
)
def test_every_answer_is_documented_and_none_is_a_server_error(
    api_schema, session, auth, known_ids, known_names, label, mode
):
    method, path = label.split(" ")
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if "{registry_id}" in path:
        # Random ids only ever meet a 404: most cases name a registry (and a repository,
        # and a tag) that exists.
        known = st.builds(
            lambda registry_id, name: path_values(path, registry_id, name),
            st.sampled_from(known_ids),
            st.sampled_from(known_names),
        )
        strategy = st.one_of(
            strategy,
            known.flatmap(
                lambda values: operation.as_strategy(generation_mode=mode, path_parameters=values)
            ),
        )

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call_and_validate(
            session=session, base_url=BASE, headers=auth, excluded_checks=NOT_CHECKED
        )
        assert response.status_code < 500, response.text

    run()


# Bodies no generator sends: broken or hostile bytes, each with the header it came with.
RAW_BODIES = {
    "truncated JSON": ("application/json", b'{"name": "Hub", "registry_type": '),
    "a JSON array": ("application/json", b'[{"name": "Hub"}]'),
    "a JSON string": ("application/json", b'"Hub"'),
    "deep nesting": ("application/json", b'{"name": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
    "a huge array": ("application/json", b'{"name": [' + b"0," * 20_000 + b"0]}"),
    "invalid UTF-8": ("application/json", b'{"name": "\xff\xfe"}'),
    "numbers out of range": (
        "application/json",
        b'{"name": 1e999, "password": 1' + b"0" * 5000 + b"}",
    ),
    "NaN": ("application/json", b'{"name": NaN}'),
    "a NUL": ("application/json", b'{"name": "Hub\\u0000"}'),
    "a lone surrogate": ("application/json", b'{"name": "\\ud800"}'),
    "a form of invalid UTF-8": ("application/x-www-form-urlencoded", b"name=%FF%FE"),
    "a multipart cut short": (
        "multipart/form-data; boundary=xyz",
        b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nOther\r\n--xyz\r\nbro',
    ),
    "a multipart field of invalid UTF-8": (
        "multipart/form-data; boundary=xyz",
        b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\n\xff\xfe\r\n--xyz--\r\n',
    ),
    "a multipart without boundary": ("multipart/form-data", b"name=Hub"),
    "a file upload": (
        "multipart/form-data; boundary=xyz",
        b'--xyz\r\nContent-Disposition: form-data; name="name"; filename="a.txt"\r\n\r\nHub\r\n'
        b"--xyz--\r\n",
    ),
    "an unsupported type": ("text/plain", b"name=Hub"),
    "a body over the limit": ("application/json", b'{"name": "' + b"a" * 70_000 + b'"}'),
}


def sent(api_schema, session, label: str, registry_id: str, **kwargs):
    """The answer to a hand-made request, checked against the document like generated ones."""
    method, path = label.split(" ")
    values = path_values(path, registry_id, f"{uuid.uuid4()}/app")
    case = api_schema[path][method].Case(path_parameters=values or None)
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    response = session.request(method, BASE + path, **kwargs)
    case.validate_response(response, excluded_checks=NOT_CHECKED)
    assert response.status_code < 500, response.text
    return response


@pytest.mark.parametrize("label", WITH_BODY)
def test_broken_bodies_get_a_documented_refusal_and_change_nothing(
    api_schema, session, auth, known_ids, label
):
    before = listing(session, auth)
    for kind, (content_type, raw) in RAW_BODIES.items():
        headers = {**auth, "Content-Type": content_type}
        response = sent(api_schema, session, label, known_ids[-1], data=raw, headers=headers)
        assert 400 <= response.status_code < 500, (kind, response.text)
        assert response.json()["errors"], kind
        assert listing(session, auth) == before, kind


@pytest.mark.parametrize("label", OPERATIONS)
def test_every_operation_refuses_a_missing_or_wrong_token(
    api_schema, session, auth, known_ids, label
):
    before = listing(session, auth)
    for authorization in [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-token",
        "Bearer \x7f",
    ]:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = sent(api_schema, session, label, known_ids[-1], headers=headers, json=HUB)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert listing(session, auth) == before


def test_a_throttled_caller_gets_the_documented_429(api_schema, session, auth, known_ids):
    wrong = {"Authorization": "Bearer wrong"}
    for _ in range(200):
        if (
            sent(api_schema, session, OPERATIONS[0], known_ids[-1], headers=wrong).status_code
            == 429
        ):
            break
    else:
        pytest.fail("200 wrong tokens were never throttled")
    for label in OPERATIONS:
        response = sent(api_schema, session, label, known_ids[-1], headers=wrong, json=HUB)
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) > 0
