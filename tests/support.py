"""Running a real `dockyard serve` subprocess for end-to-end tests."""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dockyard.db import Database
from dockyard.db.models import Project
from dockyard.registry.tokens import generate_key_pem
from dockyard.security import generate_key_text
from tests.oci_client import OCIClient

# The tests' servers listen below Linux's ephemeral range (32768-60999), where the system
# hands out no port by itself, each pytest-xdist worker in a slice of its own. A port from
# bind(0) could be handed to another worker's server while this one's server is down
# between a kill and its restart on that port (the crash test), and the restarted server's
# clients would then talk to a stranger. Another pytest run on the same machine (a test run
# by hand beside the whole suite) has slices of the same numbers: a lock file per port,
# held until this process ends, keeps the runs apart.
_FIRST_PORT, _END_PORT = 20000, 32000
_LOCKS = Path(tempfile.gettempdir()) / "dockyard-test-ports"
_held: list[int] = []  # the lock files' descriptors, open for the life of this process


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = (_END_PORT - _FIRST_PORT) // max(workers, index + 1)
    start = _FIRST_PORT + index * size
    return range(start, start + size)


_candidates = itertools.cycle(_port_slice())


def _claim(port: int) -> bool:
    """Whether this process now holds the port. Never twice: a port is given out once."""
    _LOCKS.mkdir(exist_ok=True)
    try:
        fd = os.open(_LOCKS / str(port), os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:  # another user's lock file
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held.append(fd)
    return True


def free_port() -> int:
    """A port no other test of this run, nor of any other pytest run here, has been given,
    free right now."""
    for _ in range(len(_port_slice())):
        port = next(_candidates)
        if not _claim(port):
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left in this test worker's slice")


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dockyard", "serve", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dockyard serve exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        pytest.fail(f"dockyard serve did not answer within 30 s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "dockyard", *args],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout


def start_server(tmp_path: Path, database_url: str, **settings: str) -> Server:
    """`dockyard serve` on a free port, with DOCKYARD_<KEY> for each extra setting."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env.update(
        DOCKYARD_DATA_DIR=str(tmp_path / "data"),
        DOCKYARD_DATABASE_URL=database_url,
        COLUMNS="200",
        # As in tests' Settings: external registries are checked only where a test asks.
        DOCKYARD_VERIFY_REGISTRIES="false",
    )
    if not database_url.startswith("sqlite"):
        # A shared database means replicas: serve wants the keys as settings.
        env.update(
            DOCKYARD_ENCRYPTION_KEY=generate_key_text(),
            DOCKYARD_TOKEN_SIGNING_KEY=generate_key_pem().decode(),
        )
    env.update({f"DOCKYARD_{key.upper()}": value for key, value in settings.items()})
    srv = Server(f"http://127.0.0.1:{port}", port, tmp_path / "data", env, tmp_path / "serve.log")
    srv.start()
    return srv


def server_client(server: Server, database_url: str) -> tuple[OCIClient, str]:
    """An OCI client with push/pull credentials of the first project of a `dockyard serve`,
    and that project's id (the first part of its repositories' names)."""
    token = (server.data_dir / "first-project-token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=server.url, timeout=60)
    registry = http.get("/v1/container_registries", headers=auth).json()
    registry_id = registry["container_registries"][0]["id"]
    created = http.post(f"/v1/container_registries/{registry_id}/credentials", headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()["container_registry"]
    db = Database(database_url)
    with db.read() as session:
        project_id = str(session.scalars(select(Project.id)).one())
    db.dispose()
    oci = OCIClient(http, body["username"], body["password"], host=f"127.0.0.1:{server.port}")
    return oci, project_id
