"""A database that goes away for a while: every request is a 503 that says so, within a
bounded time, never a 500 or a hang; and once it is back the server recovers by itself."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from dockyard.db import Database
from dockyard.unavailable import is_unavailable
from tests.conftest import empty_postgres
from tests.oci_client import assert_error, sha256
from tests.support import Server, free_port, server_client, start_server
from tests.test_faults_storage import BOUND_SECONDS


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the database server. cut() closes every connection and
    stops listening (connects are refused); restore() listens on the same port again."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, target)

    def _drop(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._sockets.discard(sock)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() on Linux
            self._listener.close()
            self._listener = None
        with self._lock:
            connected = list(self._sockets)
        self._drop(*connected)

    def connections(self) -> int:
        with self._lock:
            return len(self._sockets) // 2


def timed(call: Callable[[], httpx.Response]) -> httpx.Response:
    began = time.monotonic()
    response = call()
    assert time.monotonic() - began < BOUND_SECONDS, "the failure took too long to say so"
    return response


def assert_v1_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"errors"} and body["errors"], body
    assert all(isinstance(sentence, str) and sentence for sentence in body["errors"]), body
    assert "retry-after" in response.headers


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.1)


def healthy(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/healthz", timeout=BOUND_SECONDS).status_code == 200
    except httpx.HTTPError:
        return False


# -- PostgreSQL cut off and back -------------------------------------------------------------


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test database, and the database's URL through it."""
    empty_postgres(postgres_url)  # a new install: `serve` creates the first project
    direct = make_url(postgres_url)
    proxy = TcpProxy(direct.host or "127.0.0.1", direct.port or 5432)
    yield proxy, direct.set(port=proxy.port).render_as_string(hide_password=False)
    proxy.cut()


def test_postgres_cut_off_is_503_everywhere_and_the_server_recovers_by_itself(
    tmp_path: Path, postgres_url: str, pg_proxy: tuple[TcpProxy, str]
) -> None:
    proxy, proxied_url = pg_proxy
    server = start_server(tmp_path, proxied_url)
    try:
        oci, project_id = server_client(server, postgres_url)
        http = oci.http
        token = (server.data_dir / "first-project-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        registry = http.get("/v1/container_registries", headers=auth).json()
        registry_id = registry["container_registries"][0]["id"]
        name = f"{project_id}/app"
        manifest, digest = oci.push_image(name, "v1", layers=[b"first layer"])
        assert proxy.connections() >= 2  # the pool's and the change feed's, at least
        oci.token(f"repository:{name}:pull")  # what a client holds when the outage starts

        proxy.cut()
        assert timed(lambda: httpx.get(f"{server.url}/healthz", timeout=30)).status_code == 503
        for v1 in (
            lambda: http.get(f"/v1/container_registries/{registry_id}", headers=auth),
            lambda: http.get("/v1/container_registries", headers=auth),
            lambda: http.post(f"/v1/container_registries/{registry_id}/credentials", headers=auth),
            lambda: oci.token_response([f"repository:{name}:pull"]),
        ):
            assert_v1_unavailable(timed(v1))
        for v2 in (
            lambda: oci.get_manifest(name, "v1"),
            lambda: oci.get_blob(name, sha256(b"first layer")),
            lambda: oci.push_blob(name, b"second layer"),
        ):
            assert_error(timed(v2), 503, "UNAVAILABLE")

        proxy.restore()
        wait_until(lambda: healthy(server), 15, "the server is healthy again")
        assert oci.get_manifest(name, "v1").content == manifest
        assert oci.get_blob(name, sha256(b"first layer")).content == b"first layer"
        oci.push_image(name, "v2", layers=[b"second layer"])
        assert oci.get_manifest(name, f"{digest}").status_code == 200

        # The change feed listens again, and what another process commits is seen at once.
        wait_until(lambda: _feed_listening(postgres_url), 15, "the change feed listens again")

        def status() -> str:
            listed = http.get("/v1/container_registries", headers=auth).json()
            return str(listed["container_registries"][0]["status"])

        assert status() == status() == "available"  # the second answer from the read cache
        _set_status(postgres_url, registry_id, "maintenance")
        wait_until(lambda: status() == "maintenance", 5, "another process's commit is seen")

        # A cut that no request noticed: the pooled connections are dead, and pre-ping
        # replaces them, so that the first request after it already works.
        proxy.cut()
        proxy.restore()
        first = http.get(f"/v1/container_registries/{registry_id}", headers=auth)
        assert first.status_code == 200, first.text
        assert oci.push_blob(name, b"third layer").status_code == 201
        http.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def _feed_listening(url: str) -> bool:
    engine = create_engine(Database(url).url)
    try:
        with engine.connect() as connection:
            count = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'dockyard-changes' AND datname = current_database()"
                )
            )
    finally:
        engine.dispose()
    return bool(count)


def _set_status(url: str, registry_id: str, status: str) -> None:
    """A change by another process (the admin CLI, another replica) behind the server."""
    engine = create_engine(Database(url).url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE container_registries SET status = :status WHERE id = :id"),
                {"status": status, "id": registry_id},
            )
    finally:
        engine.dispose()


# -- SQLite locked by another process --------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_locked_past_the_busy_timeout_is_503_then_works(
    tmp_path: Path, database_url: str
) -> None:
    path = make_url(database_url).database
    assert path is not None
    # A busy timeout of 1 s (?timeout=), not the default 30, to keep the test short.
    server = start_server(tmp_path / "serve", f"{database_url}?timeout=1")
    try:
        oci, project_id = server_client(server, database_url)
        http = oci.http
        token = (server.data_dir / "first-project-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        registry_id = http.get("/v1/container_registries", headers=auth).json()[
            "container_registries"
        ][0]["id"]
        name = f"{project_id}/app"
        oci.token(f"repository:{name}:pull,push")

        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process's long write transaction
        try:
            assert_error(timed(lambda: oci.push_blob(name, b"a layer")), 503, "UNAVAILABLE")
            credentials = f"/v1/container_registries/{registry_id}/credentials"
            assert_v1_unavailable(timed(lambda: http.delete(credentials, headers=auth)))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert oci.push_blob(name, b"a layer").status_code == 201
        assert http.delete(credentials, headers=auth).status_code < 300
        http.close()
    finally:
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_only_an_unreachable_database_is_a_503() -> None:
    """A bug (an integrity error) stays a 500: retrying it cannot help."""
    assert not is_unavailable(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert is_unavailable(OperationalError("SELECT 1", {}, Exception("connection refused")))
