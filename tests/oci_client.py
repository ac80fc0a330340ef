"""A small OCI distribution client for protocol tests, over any httpx-compatible client.

It does what docker, podman and oras do on the wire: `GET /v2/`, follow the Bearer
challenge to the token realm with Basic credentials and the challenged scope, retry with
the token; then push blobs in every shape the spec allows, push and pull manifests, list
tags, the catalog and referrers. Every call returns the raw response, so that tests
assert on statuses, headers and error bodies themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


# -- small helpers -------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def parse_challenge(header: str) -> dict[str, str]:
    """`Bearer realm="...",service="...",scope="..."` -> its parameters."""
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer", header
    return dict(_CHALLENGE_PARAM.findall(params))


def basic(username: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The OCI error body {"errors":[{"code","message",("detail")}]} with this status and
    first code; returns that error."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"errors"}, body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for error in errors:
        assert {"code", "message"} <= set(error) <= {"code", "message", "detail"}, error
        assert re.fullmatch(r"[A-Z_]+", error["code"]), error
        assert isinstance(error["message"], str) and error["message"], error
    assert errors[0]["code"] == code, body
    return dict(errors[0])


def assert_unauthorized(response: httpx.Response, error: str | None = None) -> dict[str, str]:
    """A 401 UNAUTHORIZED with a Bearer challenge (and `error=` when given); its params."""
    assert_error(response, 401, "UNAUTHORIZED")
    challenge = parse_challenge(response.headers["www-authenticate"])
    assert challenge.get("error") == error, challenge
    return challenge


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_manifest(
    config: bytes,
    layers: Iterable[bytes],
    *,
    media_type: str = OCI_MANIFEST,
    config_type: str | None = None,
    layer_type: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    docker = media_type == DOCKER_MANIFEST
    config_type = config_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
    layer_type = layer_type or (DOCKER_LAYER if docker else OCI_LAYER)
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config),
        "layers": [descriptor(layer_type, layer) for layer in layers],
        **extra,
    }


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# -- the client ----------------------------------------------------------------------------


class OCIClient:
    """One robot's view of one registry host.

    `http` is a TestClient (or any httpx.Client); `host` picks the registry (and so the
    region) the way a real client's URL does.
    """

    def __init__(
        self,
        http: httpx.Client,
        username: str | None = None,
        password: str | None = None,
        *,
        host: str = "testserver",
    ) -> None:
        self.http = http
        self.username = username
        self.password = password
        self.base = f"http://{host}"
        self.tokens: dict[str, str] = {}  # scope -> token

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.base + path_or_url

    # -- the token flow ------------------------------------------------------------------

    def challenge(self) -> dict[str, str]:
        """GET /v2/ without a token: the 401 and its Bearer parameters."""
        response = self.http.get(self.url("/v2/"))
        return assert_unauthorized(response)

    def token_response(
        self,
        scopes: Iterable[str] = (),
        *,
        username: str | None = None,
        password: str | None = None,
        service: str | None = None,
        realm: str | None = None,
        **params: str,
    ) -> httpx.Response:
        """GET <realm>?service=&scope=... with Basic credentials, as docker does."""
        if realm is None or service is None:
            found = self.challenge()
            realm, service = realm or found["realm"], service or found["service"]
        username = self.username if username is None else username
        password = self.password if password is None else password
        headers = basic(username, password) if username is not None and password else {}
        query: list[tuple[str, str]] = [("service", service)]
        query += [("scope", scope) for scope in scopes]
        query += list(params.items())
        return self.http.get(realm, params=query, headers=headers)

    def token(self, *scopes: str) -> str:
        """A token for these scopes (all at once, as docker asks for a mount)."""
        response = self.token_response(scopes)
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        for scope in scopes:
            self.tokens[scope] = token
        return token

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with the token for `scope`; on a Bearer challenge, get a token for the
        challenged scope and retry once (without credentials the 401 is returned)."""
        headers = dict(headers or {})
        token = token or (self.tokens.get(scope) if scope else None)
        streamed = not isinstance(kwargs.get("content", b""), bytes | str)
        if token is None and scope and streamed and self.username is not None:
            token = self.token(scope)  # a streamed body cannot be sent twice
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.http.request(method, self.url(path), headers=headers, **kwargs)
        if response.status_code != 401 or self.username is None or streamed:
            return response
        challenge = parse_challenge(response.headers["www-authenticate"])
        wanted = challenge.get("scope")
        fresh = self.token_response(
            [wanted] if wanted else [], realm=challenge["realm"], service=challenge["service"]
        )
        if fresh.status_code != 200:
            return response
        token = fresh.json()["token"]
        if wanted:
            self.tokens[wanted] = token
        if scope:
            self.tokens[scope] = token
        headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.url(path), headers=headers, **kwargs)

    def ping(self) -> httpx.Response:
        return self.request("GET", "/v2/", scope="")

    # -- blobs and uploads -----------------------------------------------------------------

    def start_upload(self, name: str, **params: str) -> httpx.Response:
        return self.request("POST", f"/v2/{name}/blobs/uploads/", scope=_push(name), params=params)

    def patch(
        self, location: str, data: bytes, *, content_range: str | None = None, stream: bool = False
    ) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream"}
        if content_range is not None:
            headers["Content-Range"] = content_range
        content: bytes | Iterator[bytes] = _pieces(data) if stream else data
        return self.request(
            "PATCH", location, scope=_push_of(location), headers=headers, content=content
        )

    def put_upload(
        self,
        location: str,
        digest: str | None,
        data: bytes = b"",
        *,
        content_range: str | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream"}
        if content_range is not None:
            headers["Content-Range"] = content_range
        params = {"digest": digest} if digest is not None else {}
        return self.request(
            "PUT", location, scope=_push_of(location), params=params, headers=headers, content=data
        )

    def upload_status(self, location: str) -> httpx.Response:
        return self.request("GET", location, scope=_push_of(location))

    def cancel_upload(self, location: str) -> httpx.Response:
        return self.request("DELETE", location, scope=_push_of(location))

    def push_blob(
        self, name: str, data: bytes, how: str = "single_post", *, chunk: int = 4096
    ) -> httpx.Response:
        """Upload `data` in one of the spec's shapes; returns the closing response.

        single_post: POST ?digest= with the body.  post_put: POST, then PUT ?digest= with
        the body.  stream: POST, one PATCH without Content-Length (Transfer-Encoding:
        chunked, as podman), empty PUT.  chunked: POST, PATCHes with Content-Range and
        Content-Length, empty PUT.  chunked_put: the same, the last chunk in the PUT.
        """
        digest = sha256(data)
        if how == "single_post":
            return self.request(
                "POST",
                f"/v2/{name}/blobs/uploads/",
                scope=_push(name),
                params={"digest": digest},
                headers={"Content-Type": "application/octet-stream"},
                content=data,
            )
        started = self.start_upload(name)
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        if how == "post_put":
            return self.put_upload(location, digest, data)
        if how == "stream":
            patched = self.patch(location, data, stream=True)
            assert patched.status_code == 202, patched.text
            return self.put_upload(patched.headers["location"], digest)
        if how in ("chunked", "chunked_put"):
            pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
            last = pieces.pop() if how == "chunked_put" and pieces else None
            offset = 0
            for piece in pieces:
                span = f"{offset}-{offset + len(piece) - 1}"
                patched = self.patch(location, piece, content_range=span)
                assert patched.status_code == 202, patched.text
                offset += len(piece)
                assert patched.headers["range"] == f"0-{offset - 1}"
                location = patched.headers["location"]
            if last is None:  # everything went in PATCHes (or there was nothing at all)
                return self.put_upload(location, digest)
            span = f"{offset}-{offset + len(last) - 1}"
            return self.put_upload(location, digest, last, content_range=span)
        raise ValueError(f"unknown upload shape {how}")

    def mount_blob(self, name: str, digest: str, source: str) -> httpx.Response:
        """POST ?mount=&from=, with a token asked for both repositories (as docker does)."""
        token = self.token(_push(name), f"repository:{source}:pull")
        return self.request(
            "POST",
            f"/v2/{name}/blobs/uploads/",
            token=token,
            params={"mount": digest, "from": source},
        )

    def get_blob(self, name: str, digest: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", f"/v2/{name}/blobs/{digest}", scope=_pull(name), **kwargs)

    def head_blob(self, name: str, digest: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=_pull(name), **kwargs)

    def delete_blob(self, name: str, digest: str) -> httpx.Response:
        return self.request("DELETE", f"/v2/{name}/blobs/{digest}", scope=_delete(name))

    # -- manifests -------------------------------------------------------------------------

    def push_manifest(
        self,
        name: str,
        reference: str,
        manifest: bytes | dict[str, Any],
        media_type: str | None = None,
    ) -> httpx.Response:
        if isinstance(manifest, dict):
            media_type = media_type or manifest.get("mediaType")
            manifest = encode(manifest)
        headers = {"Content-Type": media_type} if media_type else {}
        return self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=_push(name),
            headers=headers,
            content=manifest,
        )

    def get_manifest(
        self, name: str, reference: str, accept: str = ACCEPT_MANIFESTS
    ) -> httpx.Response:
        return self.request(
            "GET",
            f"/v2/{name}/manifests/{reference}",
            scope=_pull(name),
            headers={"Accept": accept},
        )

    def head_manifest(
        self, name: str, reference: str, accept: str = ACCEPT_MANIFESTS
    ) -> httpx.Response:
        return self.request(
            "HEAD",
            f"/v2/{name}/manifests/{reference}",
            scope=_pull(name),
            headers={"Accept": accept},
        )

    def delete_manifest(self, name: str, reference: str) -> httpx.Response:
        return self.request("DELETE", f"/v2/{name}/manifests/{reference}", scope=_delete(name))

    def push_image(
        self,
        name: str,
        reference: str,
        layers: Iterable[bytes] = (b"a layer",),
        config: bytes = b'{"architecture":"amd64","os":"linux"}',
        **manifest: Any,
    ) -> tuple[bytes, str]:
        """Blobs, then the manifest; returns the manifest's bytes and digest."""
        layers = list(layers)
        for blob in [config, *layers]:
            pushed = self.push_blob(name, blob)
            assert pushed.status_code == 201, pushed.text
        document = image_manifest(config, layers, **manifest)
        content = encode(document)
        pushed = self.push_manifest(name, reference, content, document["mediaType"])
        assert pushed.status_code == 201, pushed.text
        assert pushed.headers["docker-content-digest"] == sha256(content)
        return content, sha256(content)

    # -- listings --------------------------------------------------------------------------

    def tags(self, name: str, **params: str | int) -> httpx.Response:
        return self.request("GET", f"/v2/{name}/tags/list", scope=_pull(name), params=params)

    def catalog(self, **params: str | int) -> httpx.Response:
        return self.request("GET", "/v2/_catalog", scope="registry:catalog:*", params=params)

    def referrers(self, name: str, digest: str, artifact_type: str | None = None) -> httpx.Response:
        params = {"artifactType": artifact_type} if artifact_type else {}
        return self.request(
            "GET", f"/v2/{name}/referrers/{digest}", scope=_pull(name), params=params
        )


def _pull(name: str) -> str:
    return f"repository:{name}:pull"


def _push(name: str) -> str:
    return f"repository:{name}:pull,push"


def _delete(name: str) -> str:
    return f"repository:{name}:delete"


def _push_of(location: str) -> str:
    path = httpx.URL(location).path
    return _push(path.removeprefix("/v2/").partition("/blobs/uploads/")[0])


def _pieces(data: bytes, size: int = 1000) -> Iterator[bytes]:
    """A body without a length: httpx sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- set-up through /v1 --------------------------------------------------------------------


def generate_credentials(
    http: httpx.Client, api_token: str, registry_id: str | None = None
) -> dict[str, Any]:
    """Robot credentials of a managed registry (the first one when no id is given)."""
    auth = {"Authorization": f"Bearer {api_token}"}
    if registry_id is None:
        listed = http.get("/v1/container_registries", headers=auth)
        registry_id = listed.json()["container_registries"][0]["id"]
    created = http.post(f"/v1/container_registries/{registry_id}/credentials", headers=auth)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()["container_registry"]
    return body
