"""POST /v1/container_registries/:id/credentials/rotate: a new password, the old one kept
for a grace period. Time is the `clock` fixture's, moved by hand."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from dockyard.app import build_services, create_app
from dockyard.db import Database
from dockyard.db.models import RobotAccount
from dockyard.domain.projects import list_tokens
from tests.oci_client import OCIClient, bearer
from tests.rotation_support import (
    URL,
    generate,
    generated,
    logs_in,
    managed_id,
    refresh,
    refresh_token_of,
    registry,
    rotate,
    rotated,
)

DAY = 24 * 3600


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def about(shown: str, expected: datetime) -> bool:
    """A time as the API writes it (to the millisecond) is this one."""
    return abs(parse(shown) - expected) < timedelta(milliseconds=1)


def test_rotate_answers_a_new_password_for_the_same_username(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    first = generated(timed, auth, registry_id)
    before = registry(timed, auth, registry_id)

    response = rotate(timed, auth, registry_id)

    assert response.status_code == 200
    assert set(response.json()) == {"container_registry"}
    new = response.json()["container_registry"]
    assert set(new) == {"id", "hostname", "username", "password", "previous_password_valid_until"}
    assert (new["id"], new["hostname"], new["username"]) == (
        first["id"],
        first["hostname"],
        first["username"],
    )
    assert new["password"] != first["password"]
    assert len(new["password"]) >= 32
    assert about(new["previous_password_valid_until"], clock.moment + timedelta(days=1))
    after = registry(timed, auth, registry_id)
    assert after["has_credentials"] is True
    assert after["updated_at"] > before["updated_at"]
    assert after["created_at"] == before["created_at"]
    assert "credentials_expire_at" not in after
    assert new["password"] not in timed.get(URL, headers=auth).text


def test_both_passwords_log_in_during_the_grace_period_and_only_the_new_one_after(
    timed, auth, clock
):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)
    new = rotated(timed, auth, registry_id)
    user = old["username"]

    assert logs_in(timed, user, old["password"])
    assert logs_in(timed, user, new["password"])
    clock.advance(DAY - 1)
    assert logs_in(timed, user, old["password"])
    clock.advance(1)  # the grace period is over

    assert not logs_in(timed, user, old["password"])
    assert logs_in(timed, user, new["password"])


def test_a_form_body_sets_the_grace_period(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)
    response = timed.post(
        f"{URL}/{registry_id}/credentials/rotate", headers=auth, data={"grace_period": "3600"}
    )
    assert response.status_code == 200, response.text
    clock.advance(3599)
    assert logs_in(timed, old["username"], old["password"])
    clock.advance(1)
    assert not logs_in(timed, old["username"], old["password"])


def test_grace_period_0_stops_the_old_password_at_once(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)

    new = rotated(timed, auth, registry_id, grace_period=0)

    assert about(new["previous_password_valid_until"], clock.moment)
    assert not logs_in(timed, old["username"], old["password"])
    assert logs_in(timed, new["username"], new["password"])


def test_a_second_rotation_stops_the_oldest_password_at_once(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    first = generated(timed, auth, registry_id)
    second = rotated(timed, auth, registry_id, grace_period=DAY)
    clock.advance(3600)

    third = rotated(timed, auth, registry_id, grace_period=600)

    user = first["username"]
    assert not logs_in(timed, user, first["password"])  # at most two are ever good
    assert logs_in(timed, user, second["password"])
    assert logs_in(timed, user, third["password"])
    clock.advance(600)
    assert not logs_in(timed, user, second["password"])
    assert logs_in(timed, user, third["password"])


def test_deleting_the_credentials_during_a_grace_period_stops_both_passwords(timed, auth):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)
    new = rotated(timed, auth, registry_id)

    deleted = timed.delete(f"{URL}/{registry_id}/credentials", headers=auth)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["container_registry"]["has_credentials"] is False
    assert not logs_in(timed, old["username"], old["password"])
    assert not logs_in(timed, new["username"], new["password"])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"grace_period": -1}, "grace_period must be a whole number of seconds from 0"),
        ({"grace_period": 7 * DAY + 1}, "604800 (7 days)"),
        ({"grace_period": "a day"}, "grace_period"),
        ({"grace_period": 1.5}, "grace_period"),
        ({"grace_period": True}, "grace_period"),
        ({"grace_period": None}, "grace_period"),
        ({"grace_period": ""}, "grace_period"),
        ({"grace_period": "1e3"}, "grace_period"),
        ({"grace_period": "9" * 5000}, "grace_period"),
        ({"grace_period": [60]}, "grace_period"),
        ({"grace": 0}, "Unknown field 'grace'"),
        ({"expires_in": 0}, "expires_in must be a whole number of seconds from 60"),
    ],
)
def test_a_bad_body_is_refused_with_a_sentence_and_changes_nothing(timed, auth, body, words):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)
    before = registry(timed, auth, registry_id)
    events = timed.get("/v1/audit_events", headers=auth).json()

    response = rotate(timed, auth, registry_id, **body)

    assert response.status_code == 400, response.text
    [sentence] = response.json()["errors"]
    assert words in sentence
    assert registry(timed, auth, registry_id) == before
    assert timed.get("/v1/audit_events", headers=auth).json() == events
    assert logs_in(timed, old["username"], old["password"])


def test_every_problem_of_a_body_is_named_at_once(timed, auth):
    registry_id = managed_id(timed, auth)
    generated(timed, auth, registry_id)
    response = rotate(timed, auth, registry_id, grace_period=-5, expires_in="soon", extra=1)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert len(errors) == 3
    assert [e.split(" ")[0] for e in errors] == ["Unknown", "grace_period", "expires_in"]


def test_a_broken_body_is_refused(timed, auth):
    registry_id = managed_id(timed, auth)
    generated(timed, auth, registry_id)
    headers = {**auth, "Content-Type": "application/json"}
    response = timed.post(f"{URL}/{registry_id}/credentials/rotate", headers=headers, content="{")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["errors"][0]


def test_rotation_needs_a_managed_registry_with_credentials(timed, auth):
    registry_id = managed_id(timed, auth)
    without = rotate(timed, auth, registry_id)
    assert without.status_code == 400
    assert without.json() == {
        "errors": [
            "This registry has no credentials to rotate; generate them with "
            "POST /v1/container_registries/:id/credentials"
        ]
    }
    hub = {"name": "Hub", "registry_type": "docker_hub", "username": "u", "password": "p"}
    external = timed.post(URL, json=hub, headers=auth).json()["container_registry"]
    refused = rotate(timed, auth, external["id"])
    assert refused.status_code == 400
    [sentence] = refused.json()["errors"]
    assert "can only be rotated" in sentence and "external docker_hub" in sentence
    assert registry(timed, auth, external["id"]) == external


def test_a_second_generate_points_at_rotation(timed, auth):
    registry_id = managed_id(timed, auth)
    generated(timed, auth, registry_id)
    again = generate(timed, auth, registry_id)
    assert again.status_code == 400
    assert "/credentials/rotate" in again.json()["errors"][0]


def test_rotation_is_in_the_audit_log(timed, auth, services, project):
    registry_id = managed_id(timed, auth)
    generated(timed, auth, registry_id)
    rotated(timed, auth, registry_id, grace_period=0)

    [event, *_] = timed.get("/v1/audit_events", headers=auth).json()["audit_events"]

    assert event["action"] == "credentials.rotated"
    assert event["actor_type"] == "api_token"
    [token] = list_tokens(services.db, str(project.id))
    assert event["actor"] == str(token.id)
    assert event["registry_id"] == registry_id
    assert event["source_address"]


def test_a_refresh_token_lives_as_long_as_the_password_it_came_from(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)
    user = old["username"]
    from_old = refresh_token_of(timed, user, old["password"])
    new = rotated(timed, auth, registry_id, grace_period=3600)
    # Obtained after the rotation, still with the old password: it is the password that
    # counts, not when the token was made.
    from_old_later = refresh_token_of(timed, user, old["password"])
    from_new = refresh_token_of(timed, user, new["password"])
    for token in (from_old, from_old_later, from_new):
        assert refresh(timed, token).status_code == 200

    clock.advance(3600)

    for token in (from_old, from_old_later):
        refused = refresh(timed, token)
        assert refused.status_code == 401
        assert "revoked or expired" in refused.text
    renewed = refresh(timed, from_new)
    assert renewed.status_code == 200
    # The refresh token a refresh hands out is bound to the same password.
    assert refresh(timed, renewed.json()["refresh_token"]).status_code == 200


def test_access_tokens_of_the_old_password_stop_when_its_grace_period_ends(timed, auth, clock):
    """With robot_check_seconds=0 at once; by default within that many seconds (30)."""
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id)
    old_token = OCIClient(timed, old["username"], old["password"]).token()
    new = rotated(timed, auth, registry_id, grace_period=60)
    new_token = OCIClient(timed, new["username"], new["password"]).token()
    assert timed.get("/v2/", headers=bearer(old_token)).status_code == 200

    clock.advance(60)

    refused = timed.get("/v2/", headers=bearer(old_token))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert timed.get("/v2/", headers=bearer(new_token)).status_code == 200


def test_a_token_from_before_rotation_existed_stops_at_the_first_rotation(
    make_settings, clock, auth
):
    """Tokens issued by an older Dockyard name no secret: good until the robot is first
    rotated, and not through a grace period, since which password made them is unknown."""
    settings = make_settings(robot_check_seconds=0)
    services = build_services(settings, now=clock)
    with TestClient(create_app(settings, services)) as client:
        registry_id = managed_id(client, auth)
        robot = generated(client, auth, registry_id)
        with services.db.read() as session:
            row = session.scalar(select(RobotAccount))
            assert row is not None
            robot_id, service = row.id, robot["hostname"]
        tokens = services.registry.tokens
        legacy = tokens.issue(robot["username"], robot_id, service, []).token
        legacy_refresh = tokens.issue_refresh(robot["username"], robot_id, service, 3600)
        assert client.get("/v2/", headers=bearer(legacy)).status_code == 200
        assert refresh(client, legacy_refresh).status_code == 200

        rotated(client, auth, registry_id)

        assert client.get("/v2/", headers=bearer(legacy)).status_code == 401
        assert refresh(client, legacy_refresh).status_code == 401


def _waiting_on_locks(db: Database, count: int) -> None:
    """Until `count` sessions of this PostgreSQL database wait for a row lock."""
    deadline = time.monotonic() + 30
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while time.monotonic() < deadline:
        with db.read() as session:
            if (session.scalar(query) or 0) >= count:
                return
        time.sleep(0.02)
    pytest.fail(f"{count} rotations never waited for the robot's row")


def test_concurrent_rotations_leave_exactly_the_last_two_passwords_good(
    make_settings, clock, auth, database_url
):
    """Five rotations at once. On PostgreSQL they are held at the robot's row by a
    transaction of the test's until all five wait there: each must then demote the password
    the one before it made, not the one it saw before waiting (which would leave the first
    password good and lose a new one). SQLite's writers queue before they read anyway."""
    settings = make_settings(login_failures_per_account=10_000, login_failures_per_source=10_000)
    services = build_services(settings, now=clock)
    app = create_app(settings, services)
    holder = Database(database_url)

    async def race() -> tuple[dict, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            listed = await http.get(URL, headers=auth)
            registry_id = listed.json()["container_registries"][0]["id"]
            first = await http.post(f"{URL}/{registry_id}/credentials", headers=auth)
            url = f"{URL}/{registry_id}/credentials/rotate"
            if holder.is_sqlite:
                calls = await asyncio.gather(*(http.post(url, headers=auth) for _ in range(5)))
                return first.json()["container_registry"], list(calls)
            with holder.write() as session:
                session.execute(select(RobotAccount).with_for_update())
                tasks = [asyncio.create_task(http.post(url, headers=auth)) for _ in range(5)]
                await asyncio.to_thread(_waiting_on_locks, holder, 5)
            return first.json()["container_registry"], list(await asyncio.gather(*tasks))

    try:
        first, responses = asyncio.run(race())
    finally:
        holder.dispose()

    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    passwords = [first["password"]]
    passwords += [r.json()["container_registry"]["password"] for r in responses]
    assert len(set(passwords)) == 6
    with TestClient(app) as client:  # its lifespan closes the services
        good = [p for p in passwords if logs_in(client, first["username"], p)]
    assert len(good) == 2
    assert first["password"] not in good
