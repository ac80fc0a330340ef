"""Two `dockyard serve` replicas on one PostgreSQL database and one S3 bucket."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dockyard.registry.tokens import generate_key_pem
from dockyard.security import generate_key_text
from tests.conftest import empty_postgres, require_or_skip
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support import Server, start_server
from tests.test_registry_clients import build_layout

SERVICE = "registry.replicas.test"


@dataclass
class Pair:
    a: Server
    b: Server
    project: str
    username: str
    password: str


def replica_settings(s3_server: S3Server, **extra: str) -> dict[str, str]:
    """What every replica shares: keys, the region's host name, the bucket."""
    return {
        "encryption_key": generate_key_text(),
        "token_signing_key": generate_key_pem().decode(),
        "regions": json.dumps([{"slug": "local", "name": "Local", "hostname": SERVICE}]),
        "storage__type": "s3",
        "storage__bucket": "dockyard-test",
        "storage__prefix": f"replicas-{uuid.uuid4().hex}",
        "storage__endpoint_url": s3_server.endpoint,
        "storage__region": "us-east-1",
        "storage__access_key_id": ACCESS_KEY,
        "storage__secret_access_key": SECRET_KEY,
        "storage__path_style": "true",
        "storage__part_size_mib": "5",
        **extra,
    }


def _robot(server: Server) -> tuple[str, str, str]:
    token = (server.data_dir / "first-project-token").read_text().strip()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    managed = api.get("/v1/container_registries").json()["container_registries"][0]
    assert managed["hostname"] == SERVICE
    robot = api.post(f"/v1/container_registries/{managed['id']}/credentials").json()
    project = json.loads(server.cli("projects", "list", "--json"))[0]["id"]
    return project, robot["container_registry"]["username"], robot["container_registry"]["password"]


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str, s3_server: S3Server) -> Iterator[Pair]:
    shared = replica_settings(s3_server)
    empty_postgres(postgres_url)
    a = start_server(tmp_path / "a", postgres_url, **shared)
    b = start_server(tmp_path / "b", postgres_url, **shared)
    try:
        yield Pair(a, b, *_robot(a))
    finally:
        a.stop()
        b.stop()


def _token(server: Server, pair: Pair, repo: str) -> str:
    response = httpx.get(
        f"{server.url}/auth/token",
        params={"service": SERVICE, "scope": f"repository:{repo}:pull,push"},
        auth=(pair.username, pair.password),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def test_a_token_from_one_replica_works_on_the_other(pair: Pair) -> None:
    token = _token(pair.a, pair, f"{pair.project}/app")
    answer = httpx.get(f"{pair.b.url}/v2/", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200


def test_an_upload_moves_between_replicas_chunk_by_chunk(pair: Pair) -> None:
    repo = f"{pair.project}/app"
    headers = {"Authorization": f"Bearer {_token(pair.a, pair, repo)}"}
    chunks = [os.urandom(6 * 1024 * 1024), os.urandom(3 * 1024 * 1024), os.urandom(1234)]
    blob = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    started = httpx.post(f"{pair.a.url}/v2/{repo}/blobs/uploads/", headers=headers)
    assert started.status_code == 202
    location = started.headers["Location"]
    offset = 0
    for index, chunk in enumerate(chunks[:2]):
        server = (pair.b, pair.a)[index % 2]
        sent = httpx.patch(
            server.url + location,
            content=chunk,
            headers={
                **headers,
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                "Content-Type": "application/octet-stream",
            },
            timeout=60,
        )
        assert sent.status_code == 202, sent.text
        offset += len(chunk)
        assert sent.headers["Range"] == f"0-{offset - 1}"
        location = sent.headers["Location"]
    status = httpx.get(pair.a.url + location, headers=headers)
    assert (status.status_code, status.headers["Range"]) == (204, f"0-{offset - 1}")
    closed = httpx.put(
        f"{pair.b.url}{location}?digest={digest}",
        content=chunks[2],
        headers={**headers, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert closed.status_code == 201, closed.text

    for server in (pair.a, pair.b):
        fetched = httpx.get(f"{server.url}/v2/{repo}/blobs/{digest}", headers=headers, timeout=60)
        assert fetched.status_code == 200
        assert fetched.content == blob


def test_a_wrong_digest_is_caught_when_chunks_came_through_both_replicas(pair: Pair) -> None:
    repo = f"{pair.project}/app"
    headers = {"Authorization": f"Bearer {_token(pair.b, pair, repo)}"}
    location = httpx.post(f"{pair.b.url}/v2/{repo}/blobs/uploads/", headers=headers).headers[
        "Location"
    ]
    moved = httpx.patch(pair.a.url + location, content=b"some bytes", headers=headers)
    wrong = "sha256:" + hashlib.sha256(b"other bytes").hexdigest()
    closed = httpx.put(f"{pair.b.url}{moved.headers['Location']}?digest={wrong}", headers=headers)
    assert closed.status_code == 400
    assert closed.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert httpx.head(f"{pair.a.url}/v2/{repo}/blobs/{wrong}", headers=headers).status_code == 404


def test_skopeo_pushes_through_one_replica_and_pulls_through_the_other(
    pair: Pair, tmp_path: Path
) -> None:
    if shutil.which("skopeo") is None:
        require_or_skip("skopeo is not installed")
    layout = tmp_path / "layout"
    source = build_layout(layout)
    creds = f"{pair.username}:{pair.password}"
    target = f"{pair.project}/replicated:v1"
    for args in (
        [
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            f"oci:{layout}:v1",
            f"docker://127.0.0.1:{pair.a.port}/{target}",
        ],
        [
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            f"docker://127.0.0.1:{pair.b.port}/{target}",
            f"oci:{tmp_path / 'out'}:v1",
        ],
    ):
        done = subprocess.run(
            ["skopeo", "copy", "--preserve-digests", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    pulled = json.loads((tmp_path / "out" / "index.json").read_text())["manifests"][0]
    assert pulled["digest"] == source


def test_pulls_can_redirect_to_the_object_store(
    tmp_path: Path, postgres_url: str, s3_server: S3Server
) -> None:
    empty_postgres(postgres_url)
    server = start_server(
        tmp_path, postgres_url, **replica_settings(s3_server, storage__redirect="true")
    )
    try:
        project, username, password = _robot(server)
        pair = Pair(server, server, project, username, password)
        repo = f"{project}/app"
        headers = {"Authorization": f"Bearer {_token(server, pair, repo)}"}
        blob = os.urandom(100_000)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        pushed = httpx.post(
            f"{server.url}/v2/{repo}/blobs/uploads/",
            params={"digest": digest},
            content=blob,
            headers={**headers, "Content-Type": "application/octet-stream"},
        )
        assert pushed.status_code == 201
        answer = httpx.get(f"{server.url}/v2/{repo}/blobs/{digest}", headers=headers)
        assert answer.status_code == 307
        assert answer.headers["Location"].startswith(s3_server.endpoint)
        assert answer.headers["Docker-Content-Digest"] == digest
        # The presigned URL needs no credentials of ours: the client follows it alone.
        assert httpx.get(answer.headers["Location"]).content == blob
        head = httpx.head(f"{server.url}/v2/{repo}/blobs/{digest}", headers=headers)
        assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(blob)))
    finally:
        server.stop()


def test_serve_refuses_a_shared_database_without_shared_keys(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env.update(DOCKYARD_DATA_DIR=str(tmp_path / "data"), DOCKYARD_DATABASE_URL=postgres_url)
    done = subprocess.run(
        [sys.executable, "-m", "dockyard", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "DOCKYARD_ENCRYPTION_KEY" in done.stderr
    assert "DOCKYARD_TOKEN_SIGNING_KEY" in done.stderr
    assert not (tmp_path / "data" / "encryption.key").exists()


def test_two_replicas_never_write_one_upload_at_once(pair: Pair) -> None:
    """Two chunks for the same offset, one through each replica: one wins, one gets 416."""
    repo = f"{pair.project}/app"
    headers = {"Authorization": f"Bearer {_token(pair.a, pair, repo)}"}
    location = httpx.post(f"{pair.a.url}/v2/{repo}/blobs/uploads/", headers=headers).headers[
        "Location"
    ]
    first, second = os.urandom(8 * 1024 * 1024), os.urandom(8 * 1024 * 1024)

    def slow(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 1024 * 1024):
            time.sleep(0.05)  # keeps both requests writing at the same time
            yield data[start : start + 1024 * 1024]

    answers: dict[str, httpx.Response] = {}

    def send(name: str, server: Server, data: bytes) -> None:
        answers[name] = httpx.patch(
            server.url + location,
            content=slow(data),
            headers={**headers, "Content-Type": "application/octet-stream"},
            timeout=60,
        )

    threads = [
        threading.Thread(target=send, args=("a", pair.a, first)),
        threading.Thread(target=send, args=("b", pair.b, second)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses == [202, 416], {k: v.text for k, v in answers.items()}
    winner = first if answers["a"].status_code == 202 else second
    digest = "sha256:" + hashlib.sha256(winner).hexdigest()
    closed = httpx.put(f"{pair.b.url}{location}?digest={digest}", headers=headers, timeout=60)
    assert closed.status_code == 201, closed.text
    fetched = httpx.get(f"{pair.a.url}/v2/{repo}/blobs/{digest}", headers=headers, timeout=60)
    assert fetched.content == winner
