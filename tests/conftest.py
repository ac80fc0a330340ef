"""Shared fixtures: every test runs against SQLite, and against PostgreSQL when it is there."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from dockyard.app import Services, build_services, create_app
from dockyard.config import Settings
from dockyard.db import Database
from dockyard.db.models import Base
from dockyard.domain.projects import NewProject, create_project
from tests.oci_client import OCIClient
from tests.rotation_support import Clock
from tests.s3server import S3Server, start_s3
from tests.support import Server, start_server

PG_ENV = "DOCKYARD_TEST_POSTGRES_URL"
REQUIRE_ENV = "DOCKYARD_REQUIRE_CLIENTS"


def require_or_skip(reason: str) -> None:
    """Skip for a missing tool, except in CI, where a missing tool is a failure."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1 requires it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test instead of migrating each time."""
    path = tmp_path_factory.mktemp("template") / "dockyard.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own on the configured server, migrated once, dropped at the end."""
    base = os.environ.get(PG_ENV)
    if not base:
        require_or_skip(f"{PG_ENV} is not set, so the PostgreSQL backend is not tested")
    server = make_url(Database(base).url)
    name = f"dockyard_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    db.migrate()
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "data" / "dockyard.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


def empty_postgres(url: str) -> None:
    """Every table emptied: each test starts from a fresh database."""
    engine = create_engine(Database(url).url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        # No checks of external registries unless a test turns them on: the registries
        # tests create (docker.io, ghcr.io, made-up hosts) are not there to be reached.
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "verify_registries": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """A TestClient for settings of the test's choosing, on the test's database."""
    built: list[tuple[TestClient, Services]] = []

    def make(**overrides: Any) -> TestClient:
        settings = make_settings(**overrides)
        services = build_services(settings)
        client = TestClient(create_app(settings, services))
        built.append((client, services))
        return client

    yield make
    for client, services in built:
        client.close()
        services.close()


@pytest.fixture
def statements(services: Services) -> Iterator[list[str]]:
    """The SQL the test's services send, as they send it: an answer from memory sends none."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", record)
    yield sent
    event.remove(services.db.engine, "before_cursor_execute", record)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.close()


@pytest.fixture
def client(settings: Settings, services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(settings, services)) as test_client:
        yield test_client


@pytest.fixture
def project(services: Services) -> NewProject:
    return create_project(services.db, "Acme")


@pytest.fixture
def auth(project: NewProject) -> dict[str, str]:
    return {"Authorization": f"Bearer {project.api_token}"}


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    """A real `dockyard serve` subprocess on the test's database."""
    srv = start_server(tmp_path, database_url)
    yield srv
    srv.stop()


@dataclass(frozen=True)
class Robot:
    """Push/pull credentials of the test project's managed registry."""

    username: str
    password: str
    project_id: str
    registry_id: str
    hostname: str


@pytest.fixture
def robot(client: TestClient, auth: dict[str, str], project: NewProject) -> Robot:
    managed = client.get("/v1/container_registries", headers=auth).json()["container_registries"][0]
    created = client.post(f"/v1/container_registries/{managed['id']}/credentials", headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()["container_registry"]
    return Robot(body["username"], body["password"], str(project.id), body["id"], body["hostname"])


@pytest.fixture
def oci(client: TestClient, robot: Robot) -> OCIClient:
    """A registry client logged in as the robot of the test's project."""
    return OCIClient(client, robot.username, robot.password)


@pytest.fixture
def other_robot(client: TestClient, services: Services) -> Robot:
    """The robot of a second project: the neighbour who must see nothing of the first."""
    other = create_project(services.db, "Globex")
    auth = {"Authorization": f"Bearer {other.api_token}"}
    managed = client.get("/v1/container_registries", headers=auth).json()["container_registries"][0]
    created = client.post(f"/v1/container_registries/{managed['id']}/credentials", headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()["container_registry"]
    return Robot(body["username"], body["password"], str(other.id), body["id"], body["hostname"])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS on loopback for the whole session, with a bucket `dockyard-test`."""
    try:
        server = start_s3(tmp_path_factory.mktemp("seaweedfs"))
    except FileNotFoundError as missing:
        require_or_skip(f"no S3 server to test against: {missing}")
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    """The time credentials' expiry and grace periods are judged by, moved by the test."""
    return Clock()


@pytest.fixture
def timed(make_settings, clock: Clock) -> Iterator[TestClient]:
    """A client of an app whose credentials live by `clock`. Robot standing is checked on
    every request (robot_check_seconds=0), so issued tokens answer to the clock at once;
    the tests' many deliberate failed logins are not throttled."""
    settings = make_settings(
        robot_check_seconds=0, login_failures_per_account=10_000, login_failures_per_source=10_000
    )
    services = build_services(settings, now=clock)
    with TestClient(create_app(settings, services)) as client:  # closes the services
        yield client
