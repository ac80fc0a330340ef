"""Optional expiry of robot credentials: `expires_in` on generating (and rotating) them,
`credentials_expire_at` on the registry only where set. Time is the `clock` fixture's."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

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
    rotated,
)

DAY = 24 * 3600
SPEC_REGISTRY_KEYS = {
    "id",
    "status",
    "registry_type",
    "name",
    "hostname",
    "has_credentials",
    "region_id",
    "created_at",
    "updated_at",
}
HUB = {"name": "Hub", "registry_type": "docker_hub", "username": "u", "password": "p"}


def about(shown: str, expected: datetime) -> bool:
    return abs(datetime.fromisoformat(shown) - expected) < timedelta(milliseconds=1)


def listed(client, auth, registry_id: str) -> dict:
    every = client.get(URL, headers=auth).json()["container_registries"]
    return next(r for r in every if r["id"] == registry_id)


def test_without_expiry_every_shape_is_exactly_the_specs(timed, auth):
    registry_id = managed_id(timed, auth)
    external = timed.post(URL, json=HUB, headers=auth).json()["container_registry"]
    created = generate(timed, auth, registry_id)  # no body at all, as before
    assert created.status_code == 201
    assert set(created.json()["container_registry"]) == {"id", "hostname", "username", "password"}
    patched = timed.patch(f"{URL}/{external['id']}", json={"name": "Hub 2"}, headers=auth)

    shapes = [
        *timed.get(URL, headers=auth).json()["container_registries"],
        registry(timed, auth, registry_id),
        registry(timed, auth, external["id"]),
        external,
        patched.json()["container_registry"],
    ]
    for shape in shapes:
        assert set(shape) == SPEC_REGISTRY_KEYS, shape


def test_expires_in_is_shown_where_set_and_nowhere_else(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    external = timed.post(URL, json=HUB, headers=auth).json()["container_registry"]

    created = generated(timed, auth, registry_id, expires_in=90 * DAY)

    expected = clock.moment + timedelta(days=90)
    assert set(created) == {"id", "hostname", "username", "password", "credentials_expire_at"}
    assert about(created["credentials_expire_at"], expected)
    shown = registry(timed, auth, registry_id)
    assert set(shown) == SPEC_REGISTRY_KEYS | {"credentials_expire_at"}
    assert shown["credentials_expire_at"] == created["credentials_expire_at"]
    assert listed(timed, auth, registry_id) == shown
    # The offset is the configured time zone's, like created_at's.
    assert shown["credentials_expire_at"][-6:] == shown["created_at"][-6:]
    # Not on the external registry, in any answer.
    patched = timed.patch(f"{URL}/{external['id']}", json={"name": "Hub 2"}, headers=auth)
    assert "credentials_expire_at" not in patched.json()["container_registry"]
    assert "credentials_expire_at" not in listed(timed, auth, external["id"])
    # A managed registry can't be patched, with or without an expiry.
    refused = timed.patch(f"{URL}/{registry_id}", json={"expires_in": 60}, headers=auth)
    assert refused.status_code == 400
    # Revoked: no credentials, no expiry.
    revoked = timed.delete(f"{URL}/{registry_id}/credentials", headers=auth)
    assert set(revoked.json()["container_registry"]) == SPEC_REGISTRY_KEYS
    assert set(listed(timed, auth, registry_id)) == SPEC_REGISTRY_KEYS


def test_a_form_body_sets_the_expiry(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    response = timed.post(
        f"{URL}/{registry_id}/credentials", headers=auth, data={"expires_in": "3600"}
    )
    assert response.status_code == 201, response.text
    shown = response.json()["container_registry"]["credentials_expire_at"]
    assert about(shown, clock.moment + timedelta(hours=1))


def test_null_or_empty_expires_in_means_never_and_other_fields_are_ignored(timed, auth):
    registry_id = managed_id(timed, auth)
    created = generated(timed, auth, registry_id, expires_in=None, name="ignored")
    assert "credentials_expire_at" not in created
    timed.delete(f"{URL}/{registry_id}/credentials", headers=auth)
    again = timed.post(f"{URL}/{registry_id}/credentials", headers=auth, data={"expires_in": ""})
    assert again.status_code == 201
    assert "credentials_expire_at" not in again.json()["container_registry"]


@pytest.mark.parametrize(
    "value", [0, 59, 730 * DAY + 1, -60, "soon", "1h", 1.5, True, [3600], {"s": 1}, "9" * 40]
)
def test_nonsense_expires_in_is_refused_and_creates_nothing(timed, auth, value):
    registry_id = managed_id(timed, auth)
    before = registry(timed, auth, registry_id)

    response = generate(timed, auth, registry_id, expires_in=value)

    assert response.status_code == 400, response.text
    [sentence] = response.json()["errors"]
    assert sentence.startswith("expires_in must be a whole number of seconds from 60 to 63072000")
    assert registry(timed, auth, registry_id) == before
    assert before["has_credentials"] is False


def test_an_expired_password_fails_exactly_like_a_wrong_one(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    robot = generated(timed, auth, registry_id, expires_in=3600)
    user, password = robot["username"], robot["password"]
    refresh_token = refresh_token_of(timed, user, password)
    access = OCIClient(timed, user, password).token()
    clock.advance(3599)
    assert logs_in(timed, user, password)
    assert refresh(timed, refresh_token).status_code == 200

    clock.advance(1)

    assert not logs_in(timed, user, password)  # token endpoint and /v2, each like a wrong one
    assert refresh(timed, refresh_token).status_code == 401
    refused = timed.get("/v2/", headers=bearer(access))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    # Still has credentials: they can be rotated or deleted, and the failures are logged.
    assert registry(timed, auth, registry_id)["has_credentials"] is True
    events = timed.get("/v1/audit_events", headers=auth).json()["audit_events"]
    assert events[0]["action"] == "login.failed"
    assert events[0]["actor"] == user


def test_rotating_restarts_the_lifetime_the_credentials_were_given(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id, expires_in=3600)
    clock.advance(1800)

    new = rotated(timed, auth, registry_id)  # grace a day, but the old one ends at 3600

    assert about(new["credentials_expire_at"], clock.moment + timedelta(hours=1))
    assert new["previous_password_valid_until"] == old["credentials_expire_at"]
    assert (
        registry(timed, auth, registry_id)["credentials_expire_at"]
        == (new["credentials_expire_at"])
    )
    clock.advance(1799)
    assert logs_in(timed, old["username"], old["password"])
    clock.advance(1)
    assert not logs_in(timed, old["username"], old["password"])
    assert logs_in(timed, new["username"], new["password"])
    clock.advance(1800)
    assert not logs_in(timed, new["username"], new["password"])


def test_rotating_with_expires_in_changes_or_removes_the_lifetime(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    generated(timed, auth, registry_id, expires_in=3600)

    longer = rotated(timed, auth, registry_id, expires_in=7 * DAY)
    assert about(longer["credentials_expire_at"], clock.moment + timedelta(days=7))
    again = rotated(timed, auth, registry_id)  # keeps the new lifetime
    assert about(again["credentials_expire_at"], clock.moment + timedelta(days=7))

    forever = rotated(timed, auth, registry_id, expires_in=None)

    assert "credentials_expire_at" not in forever
    assert "credentials_expire_at" not in registry(timed, auth, registry_id)
    assert "credentials_expire_at" not in rotated(timed, auth, registry_id)
    clock.advance(800 * DAY)
    assert logs_in(timed, forever["username"], rotated(timed, auth, registry_id)["password"])


def test_rotation_brings_expired_credentials_back_under_the_same_username(timed, auth, clock):
    registry_id = managed_id(timed, auth)
    old = generated(timed, auth, registry_id, expires_in=60)
    clock.advance(120)
    assert not logs_in(timed, old["username"], old["password"])

    new = rotated(timed, auth, registry_id)

    assert new["username"] == old["username"]
    assert new["previous_password_valid_until"] == old["credentials_expire_at"]  # past
    assert logs_in(timed, new["username"], new["password"])
    assert not logs_in(timed, old["username"], old["password"])


def test_an_expiring_rotation_shows_in_the_very_next_cached_list(timed, auth):
    """The list is answered from memory while the database is unchanged: a rotation is a
    change, and the expiry is a stored time, so nothing shown goes stale as time passes."""
    registry_id = managed_id(timed, auth)
    generated(timed, auth, registry_id)
    first = listed(timed, auth, registry_id)
    assert listed(timed, auth, registry_id) == first  # from memory now

    new = rotated(timed, auth, registry_id, expires_in=3600)

    shown = listed(timed, auth, registry_id)
    assert shown["credentials_expire_at"] == new["credentials_expire_at"]
    assert shown["updated_at"] > first["updated_at"]
