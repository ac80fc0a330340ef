"""The serving runtime: worker processes, many connections, slow clients, the port, the
working directory. Every test drives a real `dockyard serve` subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, free_port, start_server

HOST = "registry.workers.test"  # one region host for every process, so tokens carry over
REGIONS = json.dumps([{"slug": "local", "name": "Local", "hostname": HOST}])


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}"


def _robot(server: Server) -> tuple[str, str, str]:
    """The first project's id and new push/pull credentials of its managed registry."""
    token = (server.data_dir / "first-project-token").read_text().strip()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    managed = api.get("/v1/container_registries").json()["container_registries"][0]
    made = api.post(f"/v1/container_registries/{managed['id']}/credentials").json()
    project = json.loads(server.cli("projects", "list", "--json"))[0]["id"]
    return project, made["container_registry"]["username"], made["container_registry"]["password"]


def _fresh(url: str) -> httpx.Client:
    """A client whose every request opens a new connection: the kernel hands each to any
    worker (SO_REUSEPORT), so a series of them reaches every worker."""
    return httpx.Client(base_url=url, limits=httpx.Limits(max_keepalive_connections=0))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, _sqlite(tmp_path), workers="2", regions=REGIONS)
    yield server
    server.stop()


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two `serve` processes on one data dir: a request lands where the test says."""
    a = start_server(tmp_path / "a", _sqlite(tmp_path / "a"), workers="1", regions=REGIONS)
    b = start_server(
        tmp_path / "b",
        _sqlite(tmp_path / "a"),
        workers="1",
        regions=REGIONS,
        data_dir=str(a.data_dir),
    )
    b.data_dir = a.data_dir
    yield a, b
    a.stop()
    b.stop()


def _token(url: str, username: str, password: str, repo: str) -> str:
    answer = httpx.get(
        f"{url}/auth/token",
        params={"service": HOST, "scope": f"repository:{repo}:pull,push"},
        auth=(username, password),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def test_the_default_is_a_worker_per_core_and_their_counts_add_up(tmp_path: Path) -> None:
    server = start_server(tmp_path, _sqlite(tmp_path))
    try:
        cores = len(os.sched_getaffinity(0))
        deadline = time.monotonic() + 60
        while f"Started worker-{cores}" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.log().count("Started worker-") == cores, server.log()
        with _fresh(server.url) as client:
            for _ in range(20):
                assert client.get("/v2/").status_code == 401
            scraped = client.get("/metrics").text
        line = 'dockyard_http_requests_total{method="GET",route="/v2/",status="401"} 20.0'
        assert line in scraped
    finally:
        server.stop()


def _patch_through(
    servers: tuple[Server, ...], chunks: list[bytes], location: str, headers: dict[str, str]
) -> str:
    """Each chunk through the next server; the upload's location after the last."""
    offset = 0
    for server, chunk in zip(servers, chunks, strict=True):
        sent = httpx.patch(
            server.url + location,
            content=chunk,
            headers={**headers, "Content-Range": f"{offset}-{offset + len(chunk) - 1}"},
            timeout=60,
        )
        assert sent.status_code == 202, sent.text
        offset += len(chunk)
        location = sent.headers["Location"]
    return location


def test_an_upload_whose_chunks_and_put_go_to_different_processes(
    two_servers: tuple[Server, Server],
) -> None:
    a, b = two_servers
    project, username, password = _robot(a)
    repo = f"{project}/app"
    headers = {"Authorization": f"Bearer {_token(a.url, username, password, repo)}"}
    chunks = [os.urandom(3 * 1024 * 1024), os.urandom(1024 * 1024 + 7), os.urandom(4321)]
    blob = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    location = httpx.post(f"{a.url}/v2/{repo}/blobs/uploads/", headers=headers).headers["Location"]
    # a, b, a: the process that ends the upload saw the first chunk and not the second.
    location = _patch_through((a, b, a), chunks, location, headers)
    wrong = "sha256:" + hashlib.sha256(blob[:-1]).hexdigest()
    refused = httpx.put(f"{b.url}{location}?digest={wrong}", headers=headers)
    assert refused.json()["errors"][0]["code"] == "DIGEST_INVALID"

    location = httpx.post(f"{b.url}/v2/{repo}/blobs/uploads/", headers=headers).headers["Location"]
    location = _patch_through((b, a), chunks[:2], location, headers)
    closed = httpx.put(f"{b.url}{location}?digest={digest}", content=chunks[2], headers=headers)
    assert closed.status_code == 201, closed.text
    for server in (a, b):
        pulled = httpx.get(f"{server.url}/v2/{repo}/blobs/{digest}", headers=headers)
        assert pulled.content == blob


def test_a_v1_change_through_one_process_is_read_at_once_through_another(
    two_servers: tuple[Server, Server],
) -> None:
    a, b = two_servers
    token = (a.data_dir / "first-project-token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{a.url}/v1/container_registries", headers=auth).json()
    assert len(listed["container_registries"]) == 1  # now in a's read cache
    made = httpx.post(
        f"{b.url}/v1/container_registries",
        headers=auth,
        json={"name": "Hub", "registry_type": "docker_hub"},
    )
    assert made.status_code == 200, made.text
    again = httpx.get(f"{a.url}/v1/container_registries", headers=auth).json()
    assert [r["name"] for r in again["container_registries"]][-1] == "Hub"
    assert httpx.delete(
        f"{a.url}/v1/container_registries/{made.json()['container_registry']['id']}",
        headers=auth,
    ).is_success
    last = httpx.get(f"{b.url}/v1/container_registries", headers=auth).json()
    assert len(last["container_registries"]) == 1


def test_workers_on_a_new_data_dir_share_one_key_and_every_cache_stays_true(
    workers: Server,
) -> None:
    project, username, password = _robot(workers)
    repo = f"{project}/app"
    with _fresh(workers.url) as client:
        tokens = set()
        for _ in range(10):
            answer = client.get(
                "/auth/token",
                params={"service": HOST, "scope": f"repository:{repo}:pull,push"},
                auth=(username, password),
            )
            tokens.add(answer.json()["token"])
        # Each token, issued by any worker, opens /v2 on every worker.
        for token in tokens:
            for _ in range(4):
                seen = client.get("/v2/", headers={"Authorization": f"Bearer {token}"})
                assert seen.status_code == 200
        api_token = (workers.data_dir / "first-project-token").read_text().strip()
        auth = {"Authorization": f"Bearer {api_token}"}
        for _ in range(6):  # fill every worker's read cache
            assert (
                len(
                    client.get("/v1/container_registries", headers=auth).json()[
                        "container_registries"
                    ]
                )
                == 1
            )
        made = client.post(
            "/v1/container_registries",
            headers=auth,
            json={"name": "Hub", "registry_type": "docker_hub"},
        )
        assert made.status_code == 200
        for _ in range(10):
            seen = client.get("/v1/container_registries", headers=auth).json()
            assert len(seen["container_registries"]) == 2


def _hold(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        connection.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert connection.recv(4096).startswith(b"HTTP/1.1 401")
        held.append(connection)
    return held


def test_two_thousand_idle_keep_alive_connections_and_a_new_request_is_answered(
    workers: Server,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = _hold(workers.port, 2000)
    try:
        # Before, the 129th idle connection made every later request wait in the backlog.
        for _ in range(5):
            assert httpx.get(f"{workers.url}/v2/", timeout=10).status_code == 401
        # The held ones are still open and still served.
        held[0].sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 401")
    finally:
        for connection in held:
            connection.close()


def _closed_by_server(connection: socket.socket, send: bytes, every: float, most: int) -> bytes:
    """Sends `send` a byte at a time, `every` seconds apart, until the server answers or
    closes; what it answered (b"" for a close). Fails after `most` bytes."""
    connection.settimeout(every)
    for index in range(most):
        try:
            connection.sendall(send[index % len(send) : index % len(send) + 1])
        except (BrokenPipeError, ConnectionResetError):
            return b""
        try:
            return connection.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return b""
    pytest.fail(f"still accepted after {most} bytes, {most * every:.0f} s")


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Server]:
    server = start_server(
        tmp_path,
        _sqlite(tmp_path),
        workers="1",
        header_timeout_seconds="1",
        body_timeout_seconds="1",
        body_min_rate="100",
    )
    yield server
    server.stop()


def test_headers_dribbled_a_byte_at_a_time_are_cut_off(impatient: Server) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port)) as connection:
        answered = _closed_by_server(connection, b"GET /v2/ HTTP/1.1\r\nX-Slow: ", 0.25, 40)
    assert not answered.startswith(b"HTTP/1.1 401")


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(
    impatient: Server,
) -> None:
    (connection,) = _hold(impatient.port, 1)
    connection.settimeout(10)
    assert connection.recv(1) == b""  # the server closed it; a timeout would raise
    connection.close()


@pytest.mark.parametrize(
    "path", ["/auth/token", "/v1/container_registries", "/sign-in", "/v2/x/y/blobs/uploads/"]
)
def test_a_body_dribbled_a_byte_at_a_time_is_cut_off_with_408(impatient: Server, path: str) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", impatient.port)) as connection:
        connection.sendall(head.encode())
        answered = _closed_by_server(connection, b"a=b&", 0.25, 40)
    # Routes that refuse before reading (no token) answer at once; none waits forever.
    assert answered.startswith(b"HTTP/1.1 4"), answered
    if path in ("/auth/token", "/sign-in"):  # these read the body of anyone
        assert answered.startswith(b"HTTP/1.1 408"), answered
        assert b"too slowly" in answered
        assert b"connection: close" in answered.lower()
    assert "Traceback" not in impatient.log()


def test_a_slow_but_steady_body_gets_through(impatient: Server) -> None:
    """100 bytes a second are enough, however long the body takes."""
    body = (
        f"grant_type=password&service=localhost:{impatient.port}&username=nobody&password="
    ).encode() + b"p" * 250
    head = (
        f"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=30) as connection:
        connection.sendall(head.encode())
        for start in range(0, len(body), 40):  # 40 bytes every 0.2 s: 200 B/s, 1.5 s in all
            connection.sendall(body[start : start + 40])
            time.sleep(0.2)
        answered = connection.recv(4096)
    assert answered.startswith(b"HTTP/1.1 401"), answered  # the password was wrong, read whole


def _serve(cwd: Path, port: int, data_dir: str, **env: str) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dockyard")), "serve", "--port", str(port)],
        cwd=cwd,
        env={**clean, "DOCKYARD_DATA_DIR": data_dir, "DOCKYARD_WORKERS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_a_second_serve_on_a_port_in_use_exits_and_says_so(workers: Server, tmp_path) -> None:
    second = _serve(tmp_path, workers.port, str(tmp_path / "other"))
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    text = " ".join(out.decode().split())
    assert f"Cannot listen on 127.0.0.1:{workers.port}" in text
    assert "already listens there" in text
    # The first one still serves, alone.
    assert httpx.get(f"{workers.url}/v2/").status_code == 401


def test_serve_refuses_a_port_another_program_listens_on(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        second = _serve(tmp_path, port, str(tmp_path / "data"))
        out, _ = second.communicate(timeout=60)
    assert second.returncode == 1
    assert "already listens there" in " ".join(out.decode().split())


def test_serve_in_a_folder_holding_a_dockyard_package_imports_none_of_it(
    tmp_path: Path,
) -> None:
    planted = tmp_path / "dockyard"
    planted.mkdir()
    marker = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "__main__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    port = free_port()
    # As in `cd /srv && dockyard serve --data-dir dockyard`: the data dir is that folder.
    process = _serve(tmp_path, port, "dockyard")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[0].decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("serve did not answer")
        assert httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 401
        assert (planted / "dockyard.db").exists()
        assert not marker.exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
