"""Brute-force throttling: failed robot logins on /auth/token and bad API tokens on /v1.

Time never passes by sleeping: the throttle's clock is injected and moved by hand.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dockyard.app import Services, build_services, create_app
from dockyard.config import Settings
from dockyard.domain.projects import NewProject, create_project
from dockyard.throttle import Throttle, source_address

ATTACKER = "203.0.113.66"
OWNER = "198.51.100.7"
STRANGER = "192.0.2.44"
PER_ACCOUNT = 3
PER_SOURCE = 6
WINDOW = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the throttle on its own -----------------------------------------------------------------


def make_throttle(clock: Clock, **overrides: Any) -> Throttle:
    values: dict[str, Any] = {
        "per_source": PER_SOURCE,
        "per_account": PER_ACCOUNT,
        "window": WINDOW,
        "clock": clock,
    }
    values.update(overrides)
    return Throttle(**values)


def test_a_source_is_blocked_after_its_limit_and_let_in_when_the_window_passes():
    clock = Clock()
    throttle = make_throttle(clock)
    for attempt in range(PER_SOURCE):
        assert throttle.blocked(ATTACKER) is None, attempt
        started = throttle.failure(ATTACKER)
        clock.advance(1)
    assert [block.scope for block in started] == ["source"]  # the last failure started it
    block = throttle.blocked(ATTACKER)
    assert block is not None and block.scope == "source"
    assert block.retry_after == WINDOW - PER_SOURCE
    assert throttle.blocked(OWNER) is None
    clock.advance(block.retry_after)
    assert throttle.blocked(ATTACKER) is None


def test_the_window_slides_failures_out_one_by_one():
    clock = Clock()
    throttle = make_throttle(clock)
    throttle.failure(ATTACKER)
    clock.advance(50)
    for _ in range(PER_SOURCE - 1):
        throttle.failure(ATTACKER)
    assert throttle.blocked(ATTACKER).retry_after == 10  # when the first failure leaves
    clock.advance(10)
    assert throttle.blocked(ATTACKER) is None
    throttle.failure(ATTACKER)  # a full window again: blocked until the second one leaves
    assert throttle.blocked(ATTACKER).retry_after == 50


def test_only_failures_count():
    clock = Clock()
    throttle = make_throttle(clock)
    for _ in range(100):
        throttle.success(OWNER, "robot$project-aaaaaaaa")
    assert throttle.blocked(OWNER, "robot$project-aaaaaaaa") is None


def test_an_account_is_blocked_for_every_unfamiliar_source_but_not_for_its_owner():
    clock = Clock()
    throttle = make_throttle(clock)
    account = "robot$project-aaaaaaaa"
    throttle.success(OWNER, account)
    for n in range(PER_ACCOUNT):  # a different address each time: no source is blocked
        throttle.failure(f"203.0.113.{n}", account)
    block = throttle.blocked(STRANGER, account)
    assert block is not None and block.scope == "account"
    assert throttle.blocked(STRANGER, "robot$project-bbbbbbbb") is None
    assert throttle.blocked(OWNER, account) is None
    clock.advance(WINDOW)
    assert throttle.blocked(STRANGER, account) is None


def test_a_block_is_reported_as_started_once():
    clock = Clock()
    throttle = make_throttle(clock)
    started = [throttle.failure(ATTACKER, "robot$project-aaaaaaaa") for _ in range(PER_SOURCE)]
    assert [[b.scope for b in blocks] for blocks in started] == [
        [],
        [],
        ["account"],
        [],
        [],
        ["source"],
    ]


def test_memory_is_bounded_by_forgetting_the_oldest_keys():
    clock = Clock()
    throttle = make_throttle(clock, max_keys=100)
    for n in range(5000):
        throttle.failure(str(ipaddress.IPv4Address(0x0A000000 + n)), f"user{n}")
        throttle.success(str(ipaddress.IPv4Address(0x0B000000 + n)), f"user{n}")
    assert throttle.tracked_keys() <= 200
    for _ in range(PER_SOURCE):  # the newest keys still count
        throttle.failure(ATTACKER)
    assert throttle.blocked(ATTACKER) is not None


def test_an_ipv6_source_is_counted_by_its_64_network():
    clock = Clock()
    throttle = make_throttle(clock)
    for n in range(PER_SOURCE):
        throttle.failure(f"2001:db8:1:2::{n + 1:x}")
    assert throttle.blocked("2001:db8:1:2:ffff::1") is not None
    assert throttle.blocked("2001:db8:1:3::1") is None


def test_the_settings_default_to_10_per_account_and_30_per_source_a_minute():
    settings = Settings()
    assert settings.login_failures_per_account == 10
    assert settings.login_failures_per_source == 30
    assert settings.login_failure_window_seconds == 60
    assert settings.trusted_proxies == []


def test_trusted_proxies_must_be_networks():
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies=["not-a-network"])


# -- the source address ----------------------------------------------------------------------

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # X-Forwarded-For is believed only from a trusted proxy.
        ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),
        ("10.1.2.3", ["203.0.113.1"], "203.0.113.1"),
        # Read from the right: whatever the client wrote to the left is not believed.
        ("10.1.2.3", ["1.1.1.1, 203.0.113.1, 10.9.9.9"], "203.0.113.1"),
        ("10.1.2.3", ["1.1.1.1, 203.0.113.1", "10.9.9.9"], "203.0.113.1"),
        # Only trusted hops: the left-most one is where the request began.
        ("10.1.2.3", ["10.4.4.4, 10.9.9.9"], "10.4.4.4"),
        ("10.1.2.3", [], "10.1.2.3"),
        # Something that is no address: the last hop we can vouch for.
        ("10.1.2.3", ["203.0.113.1, garbage"], "10.1.2.3"),
        ("10.1.2.3", ["garbage, 10.9.9.9"], "10.9.9.9"),
        # Ports and IPv6 as proxies write them.
        ("10.1.2.3", ["203.0.113.1:4711"], "203.0.113.1"),
        ("fd00::1", ["[2001:db8::5]:443"], "2001:db8::5"),
        ("::ffff:10.1.2.3", ["203.0.113.1"], "203.0.113.1"),
        ("testclient", ["203.0.113.1"], "testclient"),
        (None, ["203.0.113.1"], "unknown"),
    ],
)
def test_source_address(peer, forwarded, expected):
    assert source_address(peer, forwarded, PROXIES) == expected


def test_without_trusted_proxies_forwarded_for_is_ignored():
    assert source_address("10.1.2.3", ["203.0.113.1"], []) == "10.1.2.3"


# -- over HTTP -------------------------------------------------------------------------------


@dataclass
class Setup:
    app: FastAPI
    services: Services
    clock: Clock
    project: NewProject
    username: str
    password: str

    def client(self, address: str) -> TestClient:
        return TestClient(self.app, client=(address, 40000))

    def login(self, address: str, password: str | None = None, username: str | None = None):
        return self.client(address).get(
            "/auth/token",
            params={"scope": f"repository:{self.project.id}/app:pull"},
            auth=(username or self.username, password or self.password),
        )


@pytest.fixture
def make_setup(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Setup]]:
    built: list[Services] = []

    def make(**overrides: Any) -> Setup:
        values = {
            "login_failures_per_account": PER_ACCOUNT,
            "login_failures_per_source": PER_SOURCE,
            **overrides,
        }
        settings = make_settings(**values)
        clock = Clock()
        services = build_services(settings, clock=clock)
        built.append(services)
        app = create_app(settings, services)
        project = create_project(services.db, "Acme")
        owner = TestClient(app, client=(OWNER, 40000))
        auth = {"Authorization": f"Bearer {project.api_token}"}
        managed = owner.get("/v1/container_registries", headers=auth).json()
        registry_id = managed["container_registries"][0]["id"]
        created = owner.post(f"/v1/container_registries/{registry_id}/credentials", headers=auth)
        assert created.status_code == 201, created.text
        body = created.json()["container_registry"]
        return Setup(app, services, clock, project, body["username"], body["password"])

    yield make
    for services in built:
        services.close()


@pytest.fixture
def setup(make_setup: Callable[..., Setup]) -> Setup:
    return make_setup()


def assert_too_many(response) -> int:
    assert response.status_code == 429, response.text
    [error] = response.json()["errors"]
    assert error["code"] == "TOOMANYREQUESTS"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW
    return retry_after


def count_password_checks(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    checked: list[str] = []
    robots = setup.services.registry.robots
    real = robots.authenticate

    def counting(username: str, password: str):
        checked.append(username)
        return real(username, password)

    monkeypatch.setattr(robots, "authenticate", counting)
    return checked


def test_brute_force_on_a_robot_is_refused_until_the_window_passes(setup, monkeypatch):
    assert setup.login(OWNER).status_code == 200  # the owner's CI runner, before the attack
    checked = count_password_checks(setup, monkeypatch)
    for guess in range(PER_ACCOUNT):
        assert setup.login(ATTACKER, f"guess-{guess}").status_code == 401
    refused = setup.login(ATTACKER, "guess-next")
    assert_too_many(refused)
    assert "account" in refused.json()["errors"][0]["message"]
    assert "guess" not in refused.text
    assert len(checked) == PER_ACCOUNT  # the refused attempt was never checked

    # The right password still works from where it worked before...
    assert setup.login(OWNER).status_code == 200
    # ...but not from a new address while the account is under attack,
    wait = assert_too_many(setup.login(STRANGER))
    assert assert_too_many(setup.login(ATTACKER)) == wait
    # and the block lifts by itself.
    setup.clock.advance(wait)
    assert setup.login(STRANGER).status_code == 200
    assert setup.login(ATTACKER).status_code == 200


def test_a_source_guessing_many_usernames_is_blocked_by_itself(setup, monkeypatch):
    for n in range(PER_SOURCE):  # under every account's limit, over the source's
        response = setup.login(ATTACKER, "guess", username=f"robot$project-{n:08x}")
        assert response.status_code == 401, response.text
    checked = count_password_checks(setup, monkeypatch)
    wait = assert_too_many(setup.login(ATTACKER, "guess", username="robot$project-ffffffff"))
    assert "address" in setup.login(ATTACKER).json()["errors"][0]["message"]
    assert checked == []
    assert setup.login(STRANGER).status_code == 200  # the account itself is not blocked
    setup.clock.advance(wait)
    assert setup.login(ATTACKER).status_code == 200


def test_form_logins_are_throttled_too(setup):
    def form_login(password: str):
        return setup.client(ATTACKER).post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": setup.username,
                "password": password,
                "scope": f"repository:{setup.project.id}/app:pull",
            },
        )

    for _ in range(PER_ACCOUNT):
        assert form_login("wrong").status_code == 401
    assert_too_many(form_login(setup.password))


def test_bad_api_tokens_are_throttled_per_source(setup):
    good = {"Authorization": f"Bearer {setup.project.api_token}"}
    attacker = setup.client(ATTACKER)
    headers: list[dict[str, str]] = [{}, {"Authorization": "Basic eDp5"}]
    headers += [{"Authorization": f"Bearer dky_guess{n}"} for n in range(PER_SOURCE - 2)]
    for header in headers:
        assert attacker.get("/v1/container_registries", headers=header).status_code == 401
    for path in ("/v1/container_registries", "/v1/audit_events", "/v1/regions"):
        refused = attacker.get(path, headers=good)  # a good token is not even looked at
        assert refused.status_code == 429, refused.text
        [sentence] = refused.json()["errors"]
        assert "try again in" in sentence
        assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
    assert attacker.post("/v1/container_registries", headers=good, json={}).status_code == 429
    assert setup.client(OWNER).get("/v1/container_registries", headers=good).status_code == 200
    setup.clock.advance(WINDOW)
    assert attacker.get("/v1/container_registries", headers=good).status_code == 200


def test_forwarded_for_is_believed_only_from_trusted_proxies(make_setup):
    setup = make_setup(trusted_proxies=["10.0.0.0/8"])
    proxy = setup.client("10.0.0.5")

    def guess(client: TestClient, forwarded_for: str, n: int):
        # A new username each time: only the source's limit applies.
        return client.get(
            "/auth/token",
            auth=(f"robot$project-{n:08x}", "wrong"),
            headers={"X-Forwarded-For": forwarded_for},
        )

    for n in range(PER_SOURCE):  # one client behind the balancer...
        assert guess(proxy, f"{ATTACKER}, 10.0.0.9", n).status_code == 401
    assert_too_many(guess(proxy, ATTACKER, 100))
    # ...is blocked alone: the others behind the same balancer are not.
    assert guess(proxy, STRANGER, 101).status_code == 401

    # An untrusted peer cannot pick a new address for each guess.
    direct = setup.client("192.0.2.200")
    for n in range(PER_SOURCE):
        assert guess(direct, f"203.0.113.{n}", n).status_code == 401
    assert_too_many(guess(direct, "203.0.113.250", 100))
