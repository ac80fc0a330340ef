"""Project B against project A: every /v1 and /v2 operation, refused and revealing nothing.

Each refusal is compared with the same request on objects that do not exist (in A's
project, and in a project that does not exist): same status, same headers, same body once
the names and ids the request itself carried are blanked out. Afterwards A's objects are
as they were.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
import jwt
import pytest

from dockyard.domain.projects import create_project
from dockyard.domain.user_keys import create_key
from dockyard.domain.users import create_user
from tests.oci_client import (
    OCI_EMPTY,
    OCI_MANIFEST,
    OCIClient,
    assert_error,
    bearer,
    descriptor,
    encode,
    generate_credentials,
    image_manifest,
    sha256,
)

URL = "/v1/container_registries"
# Headers that differ between any two responses, whoever asks (x-request-id: a fresh one
# for each request, see dockyard/request_id.py).
VOLATILE = {"date", "content-length", "x-request-id"}
LAYER = b"A's private layer"
CONFIG = b'{"architecture":"amd64","os":"linux","secret":"A"}'


@dataclass(frozen=True)
class Target:
    """The objects one request names: a repository, a tag, digests, an upload."""

    repo: str
    tag: str
    manifest: str  # a manifest's digest
    blob: str  # a layer's digest
    upload: str  # an upload session's id

    def names(self) -> dict[str, str]:
        return {
            "repo": self.repo,
            "tag": self.tag,
            "manifest": self.manifest,
            "blob": self.blob,
            "upload": self.upload,
        }


def ghost(project_id: str) -> Target:
    """Objects that do not exist, in the given project."""
    return Target(
        repo=f"{project_id}/ghost",
        tag="nothing",
        manifest=sha256(secrets.token_bytes(16)),
        blob=sha256(secrets.token_bytes(16)),
        upload=str(uuid.uuid4()),
    )


def normalized(response: httpx.Response, target: Target) -> dict[str, object]:
    """Status, headers and body with the request's own names blanked out."""

    def blank(text: str) -> str:
        # Longest first: the repository's name is inside its blobs' and uploads' URLs.
        for key, value in sorted(target.names().items(), key=lambda kv: -len(kv[1])):
            text = text.replace(value, f"<{key}>")
        return text

    headers = sorted(
        (name, blank(value))
        for name, value in response.headers.items()
        if name.lower() not in VOLATILE
    )
    return {"status": response.status_code, "headers": headers, "body": blank(response.text)}


def upload_id_blanked(response: httpx.Response, target: Target) -> dict[str, object]:
    """As `normalized`, with a fresh upload session's id (random, every time) blanked too."""
    fresh = response.headers.get("docker-upload-uuid")
    if fresh:
        target = replace(target, upload=fresh)
    return normalized(response, target)


# -- the world: project A with things in it, and its neighbour B -----------------------------


@dataclass
class World:
    client: object
    a_project: str
    a_auth: dict[str, str]
    a_oci: OCIClient
    a: Target
    a_registries: list[dict]
    a_robot_username: str
    b_project: str
    b_auth: dict[str, str]
    b_oci: OCIClient
    b_token: str  # what B's robot got when it asked for everything of A's and its own
    b_user_key: str  # a read and write key of a user who is a member of B only


def b_credentials(world: World, kind: str) -> dict[str, str]:
    """B's project API token, or B's user's key acting for B (X-Nodion-Project)."""
    if kind == "project token":
        return world.b_auth
    return {**bearer(world.b_user_key), "X-Nodion-Project": world.b_project}


def a_state(world: World) -> dict[str, object]:
    """What A can see of its own things; compared before and after B's attempts."""
    oci, a = world.a_oci, world.a
    upload = oci.upload_status(f"/v2/{a.repo}/blobs/uploads/{a.upload}")
    managed = next(r for r in world.a_registries if r["registry_type"] == "nodion")
    browse = f"{URL}/{managed['id']}/repositories"
    return {
        "registries": world.client.get(URL, headers=world.a_auth).json(),
        "repositories": world.client.get(browse, headers=world.a_auth).json(),
        "repository_tags": world.client.get(f"{browse}/{a.repo}/tags", headers=world.a_auth).json(),
        "audit": world.client.get("/v1/audit_events", headers=world.a_auth).json(),
        "tags": oci.tags(a.repo).json(),
        "manifest": oci.get_manifest(a.repo, a.tag).content,
        "by_digest": oci.get_manifest(a.repo, a.manifest).status_code,
        "blob": oci.get_blob(a.repo, a.blob).content,
        "upload": (upload.status_code, upload.headers.get("range")),
        "referrers": oci.referrers(a.repo, a.manifest).json(),
        "catalog": oci.catalog().json(),
    }


@pytest.fixture
def world(client, services, project, auth, robot) -> World:
    a_oci = OCIClient(client, robot.username, robot.password)
    repo = f"{project.id}/app"
    manifest, manifest_digest = a_oci.push_image(repo, "latest", layers=[LAYER], config=CONFIG)
    # A referrer (a signature, say) of A's image.
    a_oci.push_blob(repo, b"{}")
    sbom = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor(OCI_EMPTY, b"{}")],
        "subject": {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest)},
    }
    assert a_oci.push_manifest(repo, sha256(encode(sbom)), sbom).status_code == 201
    # An upload A is in the middle of.
    started = a_oci.start_upload(repo)
    assert started.status_code == 202, started.text
    patched = a_oci.patch(started.headers["location"], b"half of A's blob")
    assert patched.status_code == 202, patched.text
    # An external registry with a stored password.
    hub = {"name": "A's hub", "registry_type": "docker_hub", "username": "a", "password": "pw-A"}
    assert client.post(URL, json=hub, headers=auth).status_code == 200
    # A failed login naming A's robot: an event of A's audit log.
    assert a_oci.token_response(password="wrong").status_code == 401

    b = create_project(services.db, "Globex")
    b_auth = bearer(b.api_token)
    b_robot = generate_credentials(client, b.api_token)
    b_oci = OCIClient(client, b_robot["username"], b_robot["password"])
    create_user(services.db, "b-user@example.com", default_project=str(b.id))
    _, b_user_key = create_key(services.db, "b-user@example.com", scopes=["write"])
    b_oci.push_image(f"{b.id}/app", "latest", layers=[b"B's layer"])
    upload_id = started.headers["docker-upload-uuid"]
    a = Target(repo, "latest", manifest_digest, sha256(LAYER), upload_id)
    everything = "pull,push,delete,*"
    asked = b_oci.token_response(
        [
            f"repository:{a.repo}:{everything}",
            f"repository:{b.id}/app:pull,push",
            "registry:catalog:*",
        ]
    )
    assert asked.status_code == 200, asked.text  # a smaller grant is no error
    return World(
        client=client,
        a_project=str(project.id),
        a_auth=auth,
        a_oci=a_oci,
        a=a,
        a_registries=client.get(URL, headers=auth).json()["container_registries"],
        a_robot_username=robot.username,
        b_project=str(b.id),
        b_auth=b_auth,
        b_oci=b_oci,
        b_token=asked.json()["token"],
        b_user_key=b_user_key,
    )


# -- /v2: every operation on A's repository, with B's token ----------------------------------

MANIFEST_JSON = "application/vnd.oci.image.manifest.v1+json"


def _manifest_for(target: Target) -> bytes:
    return encode(image_manifest(CONFIG, [LAYER]) | {"annotations": {"for": target.tag}})


V2_OPERATIONS: dict[str, Callable[[httpx.Client, Target, dict[str, str]], httpx.Response]] = {
    "tags list": lambda c, t, h: c.get(f"/v2/{t.repo}/tags/list", headers=h),
    "tags list paged": lambda c, t, h: c.get(f"/v2/{t.repo}/tags/list?n=1&last=a", headers=h),
    "manifest GET tag": lambda c, t, h: c.get(f"/v2/{t.repo}/manifests/{t.tag}", headers=h),
    "manifest GET digest": lambda c, t, h: c.get(f"/v2/{t.repo}/manifests/{t.manifest}", headers=h),
    "manifest HEAD tag": lambda c, t, h: c.head(f"/v2/{t.repo}/manifests/{t.tag}", headers=h),
    "manifest HEAD digest": lambda c, t, h: c.head(
        f"/v2/{t.repo}/manifests/{t.manifest}", headers=h
    ),
    "manifest PUT": lambda c, t, h: c.put(
        f"/v2/{t.repo}/manifests/{t.tag}",
        content=_manifest_for(t),
        headers={**h, "Content-Type": MANIFEST_JSON},
    ),
    "manifest DELETE digest": lambda c, t, h: c.delete(
        f"/v2/{t.repo}/manifests/{t.manifest}", headers=h
    ),
    "manifest DELETE tag": lambda c, t, h: c.delete(f"/v2/{t.repo}/manifests/{t.tag}", headers=h),
    "blob GET": lambda c, t, h: c.get(f"/v2/{t.repo}/blobs/{t.blob}", headers=h),
    "blob GET range": lambda c, t, h: c.get(
        f"/v2/{t.repo}/blobs/{t.blob}", headers={**h, "Range": "bytes=0-3"}
    ),
    "blob HEAD": lambda c, t, h: c.head(f"/v2/{t.repo}/blobs/{t.blob}", headers=h),
    "blob DELETE": lambda c, t, h: c.delete(f"/v2/{t.repo}/blobs/{t.blob}", headers=h),
    "upload start": lambda c, t, h: c.post(f"/v2/{t.repo}/blobs/uploads/", headers=h),
    "upload monolithic": lambda c, t, h: c.post(
        f"/v2/{t.repo}/blobs/uploads/?digest={sha256(b'x')}",
        content=b"x",
        headers={**h, "Content-Type": "application/octet-stream"},
    ),
    "mount": lambda c, t, h: c.post(
        f"/v2/{t.repo}/blobs/uploads/?mount={t.blob}&from={t.repo}", headers=h
    ),
    "upload status": lambda c, t, h: c.get(f"/v2/{t.repo}/blobs/uploads/{t.upload}", headers=h),
    "upload PATCH": lambda c, t, h: c.patch(
        f"/v2/{t.repo}/blobs/uploads/{t.upload}",
        content=b"more",
        headers={**h, "Content-Type": "application/octet-stream"},
    ),
    "upload PUT": lambda c, t, h: c.put(
        f"/v2/{t.repo}/blobs/uploads/{t.upload}?digest={t.blob}",
        content=b"rest",
        headers={**h, "Content-Type": "application/octet-stream"},
    ),
    "upload DELETE": lambda c, t, h: c.delete(f"/v2/{t.repo}/blobs/uploads/{t.upload}", headers=h),
    "referrers": lambda c, t, h: c.get(f"/v2/{t.repo}/referrers/{t.manifest}", headers=h),
    "referrers filtered": lambda c, t, h: c.get(
        f"/v2/{t.repo}/referrers/{t.manifest}?artifactType=application/vnd.example.sbom",
        headers=h,
    ),
}


def test_v2_every_operation_on_a_neighbours_repository_is_refused_alike(world):
    client, a = world.client, world.a
    before = a_state(world)
    headers = bearer(world.b_token)
    granted = jwt.decode(world.b_token, options={"verify_signature": False})["access"]
    assert world.a_project not in json.dumps(granted)
    nobody = str(uuid.uuid4())
    differences = []
    for name, operation in V2_OPERATIONS.items():
        real = operation(client, a, headers)
        if real.request.method == "HEAD":
            assert real.status_code == 401, (name, real.status_code)
        else:
            assert_error(real, 401, "UNAUTHORIZED")
        assert 'error="insufficient_scope"' in real.headers["www-authenticate"], name
        seen = normalized(real, a)
        for other in (ghost(world.a_project), ghost(nobody)):
            expected = normalized(operation(client, other, headers), other)
            if seen != expected:
                differences.append((name, seen, expected))
        # Nothing of A's beyond what the request itself named.
        for secret in (LAYER.decode(), world.a_robot_username, "half of A's blob"):
            assert secret not in real.text, name
    assert not differences, json.dumps(differences, indent=1, default=str)
    assert a_state(world) == before


def test_v2_b_sees_nothing_of_a_through_its_own_repository(world):
    """A's digests and upload ids named in B's own repository: as unknown as random ones."""
    client, a = world.client, world.a
    before = a_state(world)
    headers = bearer(world.b_token)
    b_repo = f"{world.b_project}/app"
    mine = replace(a, repo=b_repo)  # A's ids, B's repository
    unknown = replace(ghost(world.b_project), repo=b_repo)
    operations = {
        name: operation
        for name, operation in V2_OPERATIONS.items()
        if name
        not in ("upload start", "upload monolithic", "mount", "manifest PUT", "tags list paged")
    }
    # B's own tag is "latest" too: what it names is B's, so compare only the digests and ids.
    operations = {k: v for k, v in operations.items() if "tag" not in k and k != "tags list"}
    differences = []
    for name, operation in operations.items():
        seen = normalized(operation(client, mine, headers), mine)
        expected = normalized(operation(client, unknown, headers), unknown)
        if seen != expected:
            differences.append((name, seen, expected))
    assert not differences, json.dumps(differences, indent=1, default=str)

    # A manifest of B's naming A's blobs: they are unknown here, as unknown ones are.
    def put_naming(target: Target) -> httpx.Response:
        document = image_manifest(b"{}", [])
        document["config"]["digest"] = target.blob
        return client.put(
            f"/v2/{b_repo}/manifests/stolen",
            content=encode(document),
            headers={**headers, "Content-Type": MANIFEST_JSON},
        )

    stolen = put_naming(mine)
    assert_error(stolen, 400, "MANIFEST_BLOB_UNKNOWN")
    assert normalized(stolen, mine) == normalized(put_naming(unknown), unknown)

    # Mounting A's layer from A's repository into B's: a plain upload starts, as for a
    # repository that does not exist, and the layer stays A's alone.
    def mount(source: Target) -> httpx.Response:
        return client.post(
            f"/v2/{b_repo}/blobs/uploads/?mount={a.blob}&from={source.repo}", headers=headers
        )

    mounted = mount(a)
    assert mounted.status_code == 202, mounted.text
    assert upload_id_blanked(mounted, a) == upload_id_blanked(
        mount(ghost(world.a_project)), ghost(world.a_project)
    )
    assert_error(client.get(f"/v2/{b_repo}/blobs/{a.blob}", headers=headers), 404, "BLOB_UNKNOWN")

    # B's catalog lists B's repositories, not A's; B's /v2/ is just B being logged in.
    catalog = client.get("/v2/_catalog", headers=headers)
    assert catalog.json() == {"repositories": [b_repo]}
    assert client.get("/v2/", headers=headers).json() == {}
    assert a_state(world) == before


# -- /v1: every route of the API, with B's API token -----------------------------------------


def v1_routes(client) -> list[tuple[str, str]]:
    """Every /v1 operation the app declares (its OpenAPI document lists them all)."""
    paths = client.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    )


# What every /v1 route is, to this matrix: `scoped` routes name an object by id in the path
# and must answer B as for an unknown id; `own` routes act on the caller's project and must
# show B nothing of A's; `global` routes are the same for every project.
ROUTE_KINDS = {
    ("GET", URL): "own",
    ("POST", URL): "own",
    ("GET", f"{URL}/{{registry_id}}"): "scoped",
    ("PATCH", f"{URL}/{{registry_id}}"): "scoped",
    ("DELETE", f"{URL}/{{registry_id}}"): "scoped",
    ("POST", f"{URL}/{{registry_id}}/verify"): "scoped",
    ("POST", f"{URL}/{{registry_id}}/credentials"): "scoped",
    ("DELETE", f"{URL}/{{registry_id}}/credentials"): "scoped",
    ("POST", f"{URL}/{{registry_id}}/credentials/rotate"): "scoped",
    ("GET", "/v1/regions"): "global",
    ("GET", "/v1/audit_events"): "own",
    ("GET", f"{URL}/{{registry_id}}/repositories"): "scoped",
    ("GET", f"{URL}/{{registry_id}}/repositories/{{name}}"): "scoped",
    ("DELETE", f"{URL}/{{registry_id}}/repositories/{{name}}"): "scoped",
    ("GET", f"{URL}/{{registry_id}}/repositories/{{name}}/tags"): "scoped",
    ("DELETE", f"{URL}/{{registry_id}}/repositories/{{name}}/tags/{{tag}}"): "scoped",
}
BODY = {"name": "B's registry", "registry_type": "docker_hub", "username": "b", "password": "pw-B"}


def kind_of(method: str, path: str) -> str:
    if (method, path) in ROUTE_KINDS:
        return ROUTE_KINDS[(method, path)]
    params = set(re.findall(r"{(\w+)", path))
    if "registry_id" in params:
        return "scoped"
    pytest.fail(f"{method} {path} is new: add it to ROUTE_KINDS of the isolation matrix")


def filled(path: str, registry_id: str, target: Target) -> str:
    """A route's path naming this registry, and the target's repository and tag."""
    return (
        path.replace("{registry_id}", registry_id)
        .replace("{name}", target.repo)
        .replace("{tag}", target.tag)
    )


def call(client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    if method in ("POST", "PATCH") and not path.endswith("/credentials"):
        return client.request(method, path, json=BODY, headers=headers)
    return client.request(method, path, headers=headers)


def test_v1_every_route_is_covered(client):
    routes = v1_routes(client)
    assert routes, "no /v1 routes found"
    assert {kind_of(method, path) for method, path in routes} == {"own", "scoped", "global"}


CREDENTIALS = ["project token", "user key"]


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("registry", ["managed", "external"])
def test_v1_every_route_on_a_neighbours_registry_is_a_404_like_an_unknown_id(
    world, registry, credential
):
    client = world.client
    b_auth = b_credentials(world, credential)
    a_registry = next(
        r for r in world.a_registries if (r["registry_type"] == "nodion") == (registry == "managed")
    )
    before = a_state(world)
    checked = 0
    for method, path in v1_routes(client):
        if kind_of(method, path) != "scoped":
            continue
        real = call(client, method, filled(path, a_registry["id"], world.a), b_auth)
        missing = str(uuid.uuid4())
        unknown = call(client, method, filled(path, missing, world.a), b_auth)
        assert real.status_code == 404, (method, path, real.text)
        assert real.json() == unknown.json(), (method, path)
        assert set(real.json()) == {"errors"}
        for name in {*real.headers, *unknown.headers} - VOLATILE:
            assert real.headers.get(name) == unknown.headers.get(name), (method, path, name)
        assert a_registry["id"] not in real.text
        checked += 1
    assert checked >= 10
    assert a_state(world) == before


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_v1_b_naming_as_repositories_in_its_own_registry_finds_nothing(world, credential):
    """A's repository and tag named through B's own managed registry: answered like a
    repository that exists nowhere, once the names the request carried are blanked out."""
    client = world.client
    b_auth = b_credentials(world, credential)
    before = a_state(world)
    b_registry = client.get(URL, headers=b_auth).json()["container_registries"][0]
    checked = 0
    for method, path in v1_routes(client):
        if "{name}" not in path:
            continue
        nowhere = ghost(world.a_project)
        real = call(client, method, filled(path, b_registry["id"], world.a), b_auth)
        unknown = call(client, method, filled(path, b_registry["id"], nowhere), b_auth)
        assert real.status_code == 404, (method, path, real.text)
        assert normalized(real, world.a) == normalized(unknown, nowhere), (method, path)
        checked += 1
    assert checked == 4
    b_listing = client.get(f"{URL}/{b_registry['id']}/repositories", headers=b_auth)
    assert world.a_project not in b_listing.text
    assert a_state(world) == before


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_v1_own_and_global_routes_show_b_nothing_of_a(world, credential):
    client = world.client
    b_auth = b_credentials(world, credential)
    before = a_state(world)
    a_secrets = [
        world.a_project,
        world.a_robot_username,
        "A's hub",
        *(r["id"] for r in world.a_registries),
    ]
    for method, path in v1_routes(client):
        kind = kind_of(method, path)
        if kind == "scoped":
            continue
        answer = call(client, method, path, b_auth)
        assert answer.status_code in (200, 201), (method, path, answer.text)
        for secret in a_secrets:
            assert secret not in answer.text, (method, path, secret)
        if kind == "global":
            assert answer.json() == call(client, method, path, world.a_auth).json()
    # What B created is B's: it is in B's list and nowhere in A's.
    b_list = client.get(URL, headers=b_auth).json()["container_registries"]
    assert "B's registry" in [r["name"] for r in b_list]
    b_events = client.get("/v1/audit_events", headers=b_auth).json()["audit_events"]
    assert {e["project_id"] for e in b_events} == {world.b_project}
    assert a_state(world) == before


def test_v1_a_user_key_naming_a_project_of_which_its_user_is_no_member_learns_nothing(world):
    """B's user names A's project in X-Nodion-Project: every route answers exactly as for a
    project that does not exist, or a header that is no project id at all."""
    client = world.client
    before = a_state(world)
    a_registry = world.a_registries[0]["id"]
    checked = 0
    for method, path in v1_routes(client):
        path = path.replace("{registry_id}", a_registry)
        answers = []
        for named in (world.a_project, str(uuid.uuid4()), "not-a-project"):
            headers = {**bearer(world.b_user_key), "X-Nodion-Project": named}
            answer = call(client, method, path, headers)
            answers.append(
                (
                    answer.status_code,
                    answer.text,
                    sorted(set(answer.headers.items()) - _volatile(answer)),
                )
            )
        assert answers[0][0] == 404, (method, path, answers[0])
        assert answers[1:] == [answers[0]] * 2, (method, path)
        assert world.a_project not in answers[0][1]
        checked += 1
    assert checked >= 9
    assert a_state(world) == before


def _volatile(response: httpx.Response) -> set[tuple[str, str]]:
    return {(k, v) for k, v in response.headers.items() if k.lower() in VOLATILE}
