"""Verified external registries: each check against a real registry on loopback.

The "custom" registries checked are Dockyard itself (a `dockyard serve` subprocess, with a
robot's credentials) and CNCF distribution (Debian's `docker-registry`) with htpasswd and
with token auth, plus hosts that refuse, hang or misbehave. Statuses are read the way a
client reads them, by polling GET /v1/container_registries (through the read cache) until
the registry is no longer `verifying`, within a bound.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from dockyard.db import Database
from dockyard.db.models import ContainerRegistry
from tests.conftest import require_or_skip
from tests.external_registries import (
    ISSUER,
    SERVICE,
    SilentServer,
    htpasswd_line,
    start_distribution,
    start_recorder,
    start_redirector,
    start_token_server,
)
from tests.support import free_port, start_server

URL = "/v1/container_registries"
TIMEOUT = 3.0  # the checking app's verify_timeout_seconds
SETTLE_WITHIN = 20.0


@pytest.fixture
def checking(make_client):
    """TestClients whose app checks external registries (its lifespan runs the Verifier)."""
    with ExitStack() as stack:

        def make(**overrides):
            values = {
                "verify_registries": True,
                "verify_connect_timeout_seconds": 2,
                "verify_timeout_seconds": TIMEOUT,
            }
            values.update(overrides)
            return stack.enter_context(make_client(**values))

        yield make


def create(client, auth, hostname, username=None, password=None, name="External"):
    body = {"name": name, "registry_type": "custom", "hostname": hostname}
    if username is not None:
        body |= {"username": username, "password": password}
    answer = client.post(URL, json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    registry = answer.json()["container_registry"]
    assert registry["status"] == "verifying"  # the answer does not wait for the check
    return registry


def listed(client, auth, registry_id):
    registries = client.get(URL, headers=auth).json()["container_registries"]
    return next(r for r in registries if r["id"] == registry_id)


def settle(client, auth, registry, within=SETTLE_WITHIN):
    """The registry as the list shows it once its check is done. The list is answered from
    the read cache while the database is unchanged: the check's commit must end that."""
    deadline = time.monotonic() + within
    while True:
        found = listed(client, auth, registry["id"])
        if found["status"] != "verifying":
            return found
        assert time.monotonic() < deadline, f"still verifying after {within} s"
        time.sleep(0.02)  # a poll's pace, not a wait for something to happen


def status_of(client, auth, registry):
    return settle(client, auth, registry)["status"]


def non_loopback_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("198.51.100.1", 9))  # no packet is sent: this picks the route
        except OSError:
            require_or_skip("this machine has no IPv4 address besides loopback")
        address = str(sock.getsockname()[0])
    if address.startswith("127."):
        require_or_skip("this machine has no IPv4 address besides loopback")
    return address


# -- real registries -----------------------------------------------------------------------


def test_dockyard_itself_with_its_robot_credentials(
    tmp_path, database_url, checking, auth, robot, caplog
):
    """A `dockyard serve` on the same database knows the project's robot: Bearer token flow
    against /auth/token, as `docker login` does it."""
    caplog.set_level(logging.DEBUG)
    # The same keys as the project's own server: robot secrets are keyed by them.
    key = (tmp_path / "data" / "encryption.key").read_text().strip()
    external = start_server(tmp_path / "external", database_url, encryption_key=key)
    try:
        client = checking()
        host = f"127.0.0.1:{external.port}"
        right = create(client, auth, host, robot.username, robot.password)
        wrong = create(client, auth, host, robot.username, "not-the-password")
        anonymous = create(client, auth, host)
        assert status_of(client, auth, right) == "available"
        assert status_of(client, auth, wrong) == "authentication_failed"
        # No credentials: the registry answers with its challenge, which is all /v2/ tells.
        assert status_of(client, auth, anonymous) == "available"
        one = client.get(f"{URL}/{right['id']}", headers=auth).json()["container_registry"]
        assert one["status"] == "available"
    finally:
        external.stop()
    assert robot.password not in caplog.text


def test_distribution_with_htpasswd(tmp_path, checking, auth):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("alice", "s3cret-alice") + "\n")
    registry = start_distribution(
        tmp_path / "distribution",
        {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}},
    )
    try:
        client = checking()
        right = create(client, auth, registry.host, "alice", "s3cret-alice")
        wrong = create(client, auth, registry.host, "alice", "guess")
        unknown = create(client, auth, registry.host, "mallory", "s3cret-alice")
        anonymous = create(client, auth, registry.host)
        assert status_of(client, auth, right) == "available"
        assert status_of(client, auth, wrong) == "authentication_failed"
        assert status_of(client, auth, unknown) == "authentication_failed"
        assert status_of(client, auth, anonymous) == "available"

        # New credentials are checked again...
        patched = client.patch(
            f"{URL}/{wrong['id']}",
            json={"username": "alice", "password": "s3cret-alice"},
            headers=auth,
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["container_registry"]["status"] == "verifying"
        assert status_of(client, auth, wrong) == "available"
        # ...and so is a stored password found wrong later.
        patched = client.patch(
            f"{URL}/{right['id']}", json={"username": "alice", "password": "old"}, headers=auth
        )
        assert status_of(client, auth, patched.json()["container_registry"]) == (
            "authentication_failed"
        )
        # A new name alone is not.
        renamed = client.patch(f"{URL}/{right['id']}", json={"name": "Renamed"}, headers=auth)
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["container_registry"]["status"] == "authentication_failed"
        assert listed(client, auth, right["id"])["status"] == "authentication_failed"
    finally:
        registry.stop()


def test_distribution_with_token_auth(tmp_path, checking, auth, caplog):
    """distribution's token auth, its realm a token service that knows one user."""
    caplog.set_level(logging.DEBUG)
    tokens, bundle, issued = start_token_server(tmp_path / "tokens", "bob", "b0b-password")
    registry = start_distribution(
        tmp_path / "distribution",
        {
            "token": {
                "realm": f"http://127.0.0.1:{tokens.port}/token",
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(bundle),
            }
        },
    )
    try:
        client = checking()
        right = create(client, auth, registry.host, "bob", "b0b-password")
        assert status_of(client, auth, right) == "available"
        wrong = create(client, auth, registry.host, "bob", "wrong-password")
        assert status_of(client, auth, wrong) == "authentication_failed"
        anonymous = create(client, auth, registry.host)
        assert status_of(client, auth, anonymous) == "available"
    finally:
        registry.stop()
        tokens.stop()
    # Asked as docker asks: Basic credentials, the challenge's service.
    path, query, authorization = tokens.seen.requests[0]
    assert path == "/token"
    assert query["service"] == [SERVICE]
    assert authorization is not None and authorization.startswith("Basic ")
    assert len(tokens.seen.requests) == 2  # one per check with credentials, none anonymous
    assert len(issued) == 1  # and distribution took it: `right` is available
    # Neither the password nor the token reached a log line, at debug level.
    for secret in ("b0b-password", "wrong-password", issued[0], issued[0].split(".")[2]):
        assert secret not in caplog.text


# -- hosts that refuse, hang or misbehave ----------------------------------------------------


def test_a_closed_port_is_unreachable_at_once(checking, auth):
    # Timeouts of a minute: settling within SETTLE_WITHIN means the refusal ended the check.
    client = checking(verify_timeout_seconds=60, verify_connect_timeout_seconds=60)
    registry = create(client, auth, f"127.0.0.1:{free_port()}", "u", "p")
    assert status_of(client, auth, registry) == "unreachable"


def test_requests_never_wait_for_a_check(checking, auth):
    silent = SilentServer()
    try:
        # The check would hang for a minute; every answer below comes while it runs.
        client = checking(verify_timeout_seconds=60, verify_connect_timeout_seconds=60)
        registry = create(client, auth, f"127.0.0.1:{silent.port}", "u", "p")
        first = client.get(URL, headers=auth)
        again = client.get(URL, headers=auth)  # from the read cache: nothing changed
        assert first.json() == again.json()
        assert listed(client, auth, registry["id"])["status"] == "verifying"
        # Asking again while it runs starts no second check.
        for _ in range(3):
            verify = client.post(f"{URL}/{registry['id']}/verify", headers=auth)
            assert verify.status_code == 202, verify.text
            assert verify.json()["container_registry"]["status"] == "verifying"
        assert listed(client, auth, registry["id"])["status"] == "verifying"
        # The host hangs up, and on every connection from then on.
        silent.hang_up()
        assert status_of(client, auth, registry) == "unreachable"
        # One check: HTTPS, then plain HTTP as for any loopback host. A second check would
        # have made connections of its own.
        assert len(silent.accepted) == 2
    finally:
        silent.stop()


def test_a_host_that_never_answers_is_unreachable_after_the_timeout(checking, auth):
    silent = SilentServer()
    try:
        client = checking(verify_timeout_seconds=1, verify_connect_timeout_seconds=30)
        started = time.monotonic()
        registry = create(client, auth, f"127.0.0.1:{silent.port}", "u", "p")
        assert status_of(client, auth, registry) == "unreachable"
        # Not before the check's timeout: the host never closed the connection.
        assert time.monotonic() - started >= 1.0
        assert len(silent.accepted) == 1
    finally:
        silent.stop()


def test_verify_checks_again(tmp_path, checking, auth):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("alice", "pw-alice") + "\n")
    port = free_port()
    client = checking()
    registry = create(client, auth, f"127.0.0.1:{port}", "alice", "pw-alice")
    assert status_of(client, auth, registry) == "unreachable"
    # The registry comes up where it was said to be; a re-check finds it.
    distribution = start_distribution(
        tmp_path / "distribution",
        {"htpasswd": {"realm": "r", "path": str(htpasswd)}},
        port=port,
    )
    try:
        verify = client.post(f"{URL}/{registry['id']}/verify", headers=auth)
        assert verify.status_code == 202, verify.text
        shown = verify.json()["container_registry"]
        assert shown["status"] == "verifying"
        assert {k: v for k, v in shown.items() if k != "status"} == {
            k: v for k, v in registry.items() if k != "status"
        }
        assert status_of(client, auth, registry) == "available"
    finally:
        distribution.stop()
    assert client.post(f"{URL}/{registry['id']}/verify", headers=auth).status_code == 202
    assert status_of(client, auth, registry) == "unreachable"


def test_verify_refusals(checking, client, auth):
    """Managed registries are always available; an unknown id is a 404; a server with checks
    turned off says so."""
    managed = client.get(URL, headers=auth).json()["container_registries"][0]
    for app in (client, checking()):
        refused = app.post(f"{URL}/{managed['id']}/verify", headers=auth)
        assert refused.status_code == 400, refused.text
        assert "always available" in refused.json()["errors"][0]
        missing = app.post(f"{URL}/00000000-0000-4000-8000-000000000000/verify", headers=auth)
        assert missing.status_code == 404
    assert listed(client, auth, managed["id"])["status"] == "available"

    hub = client.post(
        URL, json={"name": "Hub", "registry_type": "docker_hub"}, headers=auth
    ).json()["container_registry"]
    assert hub["status"] == "available"  # checks off: never checked
    off = client.post(f"{URL}/{hub['id']}/verify", headers=auth)
    assert off.status_code == 400
    assert "DOCKYARD_VERIFY_REGISTRIES" in off.json()["errors"][0]
    assert listed(client, auth, hub["id"])["status"] == "available"


def test_link_local_and_metadata_addresses_are_never_contacted(checking, auth, caplog):
    caplog.set_level(logging.INFO, logger="dockyard.verification")
    client = checking()
    for host in ("169.254.169.254", "[::ffff:169.254.169.254]", "[fe80::1]:5000", "0.0.0.0:80"):
        registry = create(client, auth, host, "u", "p")
        assert status_of(client, auth, registry) == "unreachable", host
    refusals = [r.getMessage() for r in caplog.records if "not connected" in r.getMessage()]
    assert len(refusals) == 4, caplog.text


def test_private_addresses_can_be_refused(checking, auth):
    recorder = start_recorder()
    try:
        client = checking(verify_private_addresses=False)
        registry = create(client, auth, f"127.0.0.1:{recorder.port}", "u", "p")
        assert status_of(client, auth, registry) == "unreachable"
        allowed = checking()
        registry = create(allowed, auth, f"localhost:{recorder.port}")
        assert status_of(allowed, auth, registry) == "available"
    finally:
        recorder.stop()
    assert len(recorder.seen.requests) == 1  # the second app's, over plain HTTP on loopback


def test_credentials_never_follow_a_redirect_to_another_host(checking, auth):
    elsewhere = start_recorder("127.0.0.2")
    redirector = start_redirector(f"http://127.0.0.2:{elsewhere.port}/v2/")
    try:
        client = checking()
        registry = create(client, auth, f"127.0.0.1:{redirector.port}", "u", "secret-pw")
        assert status_of(client, auth, registry) == "unreachable"
    finally:
        redirector.stop()
        elsewhere.stop()
    assert elsewhere.seen.requests == []
    assert [auth is not None for _, _, auth in redirector.seen.requests] == [False, True]


def test_plain_http_and_unverified_tls_only_for_insecure_registries(tmp_path, checking, auth):
    """Off loopback, as docker: HTTPS with a certificate that verifies, unless the host is
    listed in DOCKYARD_INSECURE_REGISTRIES."""
    address = non_loopback_address()
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("alice", "pw-alice") + "\n")
    basic = {"htpasswd": {"realm": "r", "path": str(htpasswd)}}
    plain = start_distribution(tmp_path / "plain", basic, address=address)
    self_signed = start_distribution(tmp_path / "tls", basic, address=address, tls=True)
    try:
        strict = checking()
        lenient = checking(insecure_registries=[plain.host, self_signed.host])
        for registry in (plain, self_signed):
            refused = create(strict, auth, registry.host, "alice", "pw-alice")
            assert status_of(strict, auth, refused) == "unreachable", registry.host
            allowed = create(lenient, auth, registry.host, "alice", "pw-alice")
            assert status_of(lenient, auth, allowed) == "available", registry.host
        by_network = checking(insecure_registries=[f"{address}/32"])
        registry = create(by_network, auth, plain.host, "alice", "pw-alice")
        assert status_of(by_network, auth, registry) == "available"
    finally:
        plain.stop()
        self_signed.stop()


# -- a process that dies mid-check ---------------------------------------------------------


def test_a_check_cut_off_by_a_crash_is_done_again_after_a_restart(tmp_path, database_url):
    silent = SilentServer()
    server = start_server(
        tmp_path,
        database_url,
        VERIFY_REGISTRIES="true",
        VERIFY_TIMEOUT_SECONDS="120",
        VERIFY_CONNECT_TIMEOUT_SECONDS="60",
    )
    try:
        api_token = json.loads(server.cli("projects", "create", "Acme", "--json"))["api_token"]
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {api_token}"}, timeout=30
        )
        body = {"name": "Hangs", "registry_type": "custom", "hostname": f"127.0.0.1:{silent.port}"}
        registry = http.post(URL, json=body).json()["container_registry"]
        deadline = time.monotonic() + 10
        while not silent.accepted:  # the check is running
            assert time.monotonic() < deadline, "the check never connected"
            time.sleep(0.02)
        assert server.process is not None
        server.process.kill()  # SIGKILL: no shutdown, the row stays `verifying`
        server.process.wait(timeout=10)

        # Left `verifying`; once that is older than any check takes (time travel: its start
        # is moved back an hour), the next process to start takes the check on.
        db = Database(database_url)
        with db.write() as session:
            session.execute(
                update(ContainerRegistry)
                .where(ContainerRegistry.id == uuid.UUID(registry["id"]))
                .values(verification_started_at=datetime.now(UTC) - timedelta(hours=1))
            )
        db.dispose()
        server.env["DOCKYARD_VERIFY_TIMEOUT_SECONDS"] = "1"
        server.start()
        deadline = time.monotonic() + SETTLE_WITHIN
        while True:
            shown = http.get(f"{URL}/{registry['id']}").json()["container_registry"]
            if shown["status"] != "verifying":
                break
            assert time.monotonic() < deadline, "the stale check was never done again"
            time.sleep(0.05)
        assert shown["status"] == "unreachable"
        http.close()
    finally:
        server.stop()
        silent.stop()


def test_a_server_with_checks_off_ends_every_check_left_running(
    client, services, make_client, auth
):
    """A registry left `verifying` moments ago (a replica with checks on, stopped mid-check)
    is never finished by a server with checks off, which sweeps nothing: it ends them all
    when it starts, so none stays `verifying`."""
    hub = client.post(
        URL, json={"name": "Hub", "registry_type": "docker_hub"}, headers=auth
    ).json()["container_registry"]
    with services.db.write() as session:
        session.execute(
            update(ContainerRegistry)
            .where(ContainerRegistry.id == uuid.UUID(hub["id"]))
            .values(status="verifying", verification_started_at=datetime.now(UTC))
        )
    assert listed(client, auth, hub["id"])["status"] == "verifying"

    with make_client() as restarted:  # checks are off in the tests' settings
        assert listed(restarted, auth, hub["id"])["status"] == "available"
