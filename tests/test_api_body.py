"""Request bodies of /v1: JSON, curl's -d and -F forms, their limits and their refusals."""

from __future__ import annotations

import json

import pytest

URL = "/v1/container_registries"
HUB = {"name": "My Hub", "registry_type": "docker_hub", "username": "me", "password": "pw"}
FIELD_LABELS = {
    "name": "Name",
    "hostname": "Hostname",
    "username": "Username",
    "password": "Password",
}


def headers(auth, content_type: str | None) -> dict[str, str]:
    return {**auth, "Content-Type": content_type} if content_type else dict(auth)


def post_raw(client, auth, content: bytes, content_type: str | None):
    return client.post(URL, content=content, headers=headers(auth, content_type))


def created(response) -> dict:
    assert response.status_code == 200, response.text
    registry = response.json()["container_registry"]
    assert registry["name"] == "My Hub"
    assert registry["registry_type"] == "docker_hub"
    assert registry["has_credentials"] is True
    return registry


def errors(response, status: int = 400) -> list[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"errors"}
    assert body["errors"]
    assert all(isinstance(sentence, str) and sentence for sentence in body["errors"])
    return body["errors"]


def listing(client, auth) -> list[dict]:
    return client.get(URL, headers=auth).json()["container_registries"]


# -- accepted shapes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (json.dumps(HUB).encode(), "application/json"),
        (json.dumps(HUB).encode(), "application/json; charset=utf-8"),
        (json.dumps(HUB).encode(), "application/vnd.dockyard+json"),
        (json.dumps(HUB).encode(), None),
        (b"name=My+Hub&registry_type=docker_hub&username=me&password=pw", None),
        (
            b"name=My%20Hub&registry_type=docker_hub&username=me&password=pw",
            "application/x-www-form-urlencoded",
        ),
    ],
    ids=["json", "json-charset", "plus-json", "json-no-type", "form-no-type", "form"],
)
def test_create_accepts_json_and_form_bodies(client, auth, content, content_type):
    created(post_raw(client, auth, content, content_type))


def test_create_accepts_multipart_form(client, auth):
    parts = {key: (None, value) for key, value in HUB.items()}
    created(client.post(URL, files=parts, headers=auth))


def test_update_accepts_a_form_body(client, auth):
    registry = created(client.post(URL, json=HUB, headers=auth))
    response = client.patch(
        f"{URL}/{registry['id']}",
        content=b"name=Renamed&username=&password=",
        headers=headers(auth, "application/x-www-form-urlencoded"),
    )
    assert response.status_code == 200
    assert response.json()["container_registry"]["name"] == "Renamed"
    assert response.json()["container_registry"]["has_credentials"] is False


def test_form_keeps_unicode_and_reserved_characters(client, auth):
    content = b"name=Caf%C3%A9+%26+Co&registry_type=ghcr&username=a%2Bb&password=p%3D%25"
    response = post_raw(client, auth, content, "application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.json()["container_registry"]["name"] == "Café & Co"


# -- refused shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"name": "x",', "not valid JSON"),
        (b"{'name': 'x'}", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'["name", "x"]', "must be a JSON object"),
        (b'"name"', "must be a JSON object"),
        (b"42", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"[" * 50_000, "JSON"),
        (b'{"a":' * 10_000, "JSON"),
    ],
    ids=[
        "truncated",
        "quotes",
        "bad-utf8",
        "array",
        "string",
        "number",
        "null",
        "deep",
        "deep-obj",
    ],
)
def test_malformed_json_is_400(client, auth, content, fragment):
    before = listing(client, auth)
    [sentence] = errors(post_raw(client, auth, content, "application/json"))
    assert fragment in sentence
    assert listing(client, auth) == before


def test_malformed_json_on_update_is_400_and_changes_nothing(client, auth):
    registry = created(client.post(URL, json=HUB, headers=auth))
    response = client.patch(
        f"{URL}/{registry['id']}", content=b"{", headers=headers(auth, "application/json")
    )
    errors(response)
    assert client.get(f"{URL}/{registry['id']}", headers=auth).json()["container_registry"] == (
        registry
    )


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/yaml"])
def test_unsupported_content_type_is_415(client, auth, content_type):
    before = listing(client, auth)
    [sentence] = errors(post_raw(client, auth, json.dumps(HUB).encode(), content_type), 415)
    assert content_type in sentence
    assert listing(client, auth) == before


def test_multipart_file_upload_is_refused(client, auth):
    files = {"name": (None, "My Hub"), "registry_type": (None, "ghcr"), "f": ("a.txt", b"x")}
    [sentence] = errors(client.post(URL, files=files, headers=auth))
    assert "malformed" in sentence or "File" in sentence


def test_multipart_without_boundary_is_400(client, auth):
    errors(post_raw(client, auth, b"name=x", "multipart/form-data"))


def test_invalid_utf8_form_is_400(client, auth):
    before = listing(client, auth)
    for content in (b"name=\xff&registry_type=ghcr", b"name=%FF&registry_type=ghcr"):
        [sentence] = errors(post_raw(client, auth, content, "application/x-www-form-urlencoded"))
        assert "UTF-8" in sentence
    assert listing(client, auth) == before


# -- size limit ----------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid create body of exactly `size` bytes."""
    base = json.dumps({**HUB, "padding": ""}).encode()
    body = json.dumps({**HUB, "padding": "x" * (size - len(base))}).encode()
    assert len(body) == size
    return body


def test_default_limit_is_64_kib(client, auth):
    created(post_raw(client, auth, padded(64 * 1024), "application/json"))
    [sentence] = errors(post_raw(client, auth, padded(64 * 1024 + 1), "application/json"), 413)
    assert "65536" in sentence


def test_limit_follows_the_setting_and_holds_without_content_length(make_client, auth):
    client = make_client(max_body_bytes=2048)
    created(post_raw(client, auth, padded(2048), "application/json"))
    before = listing(client, auth)
    big = padded(3000)
    errors(post_raw(client, auth, big, "application/json"), 413)

    def chunks():
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    chunked = client.post(URL, content=chunks(), headers=headers(auth, "application/json"))
    assert "content-length" not in chunked.request.headers
    errors(chunked, 413)
    files = {"name": (None, "x" * 3000), "registry_type": (None, "ghcr")}
    errors(client.post(URL, files=files, headers=auth), 413)
    assert listing(client, auth) == before


# -- field values --------------------------------------------------------------------------


@pytest.mark.parametrize("field", list(FIELD_LABELS))
@pytest.mark.parametrize("value", [5, 1.5, True, ["a"], {"a": "b"}])
def test_non_string_values_are_400_naming_the_field(client, auth, field, value):
    before = listing(client, auth)
    body = {"name": "N", "registry_type": "custom", "hostname": "cr.example.com", field: value}
    sentences = errors(client.post(URL, json=body, headers=auth))
    assert any(sentence.startswith(FIELD_LABELS[field]) for sentence in sentences), sentences
    assert listing(client, auth) == before


@pytest.mark.parametrize("value", [5, None, ["docker_hub"], {"a": 1}])
def test_non_string_registry_type_is_400_naming_the_field(client, auth, value):
    sentences = errors(client.post(URL, json={"name": "N", "registry_type": value}, headers=auth))
    assert any(sentence.startswith("Registry type") for sentence in sentences)


@pytest.mark.parametrize("field", list(FIELD_LABELS))
@pytest.mark.parametrize(
    "escaped",
    [
        "\\u0000",
        "\\n",
        "\\t",
        "\\u001b[31m",
        "\\u007f",
        "\\ud800",
        "\\udfff",
        "\\u202e",
        "\\u2028",
    ],
    ids=[
        "nul",
        "newline",
        "tab",
        "escape",
        "del",
        "high-surrogate",
        "low-surrogate",
        "bidi-override",
        "line-separator",
    ],
)
def test_control_characters_and_lone_surrogates_are_400(client, auth, field, escaped):
    body = {"name": "N", "registry_type": "custom", "hostname": "cr.example.com"}
    if field in ("username", "password"):
        body.update(username="u", password="p")
    raw = json.dumps(body)[:-1] + f', "{field}": "x{escaped}y"}}'
    before = listing(client, auth)

    response = post_raw(client, auth, raw.encode(), "application/json")

    sentences = errors(response)
    assert any(sentence.startswith(FIELD_LABELS[field]) for sentence in sentences), sentences
    assert listing(client, auth) == before


@pytest.mark.parametrize("field", list(FIELD_LABELS))
@pytest.mark.parametrize("escaped", ["\\u0000", "\\r\\n", "\\ud83d"])
def test_control_characters_on_update_are_400(client, auth, field, escaped):
    body = {"name": "N", "registry_type": "custom", "hostname": "cr.example.com"}
    registry = client.post(URL, json=body, headers=auth).json()["container_registry"]
    raw = f'{{"{field}": "x{escaped}"}}'.encode()

    response = client.patch(
        f"{URL}/{registry['id']}", content=raw, headers=headers(auth, "application/json")
    )

    assert any(s.startswith(FIELD_LABELS[field]) for s in errors(response))
    assert client.get(f"{URL}/{registry['id']}", headers=auth).json()["container_registry"] == (
        registry
    )


@pytest.mark.parametrize("encoded", ["%00", "%0A", "%1B"])
def test_control_characters_in_a_form_are_400(client, auth, encoded):
    content = f"name=a{encoded}b&registry_type=ghcr".encode()
    sentences = errors(post_raw(client, auth, content, "application/x-www-form-urlencoded"))
    assert sentences[0].startswith("Name")
