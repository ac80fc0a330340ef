"""Robot secret digests: keyed, compared whole, and argon2 hashes of earlier versions."""

from __future__ import annotations

import os

from argon2 import PasswordHasher

from dockyard.domain.robot_secrets import secret_id
from dockyard.security import ROBOT_KEY_PURPOSE, SecretHasher, derive_key

KEY = derive_key(os.urandom(32), ROBOT_KEY_PURPOSE)


def test_a_digest_verifies_its_secret_only() -> None:
    hasher = SecretHasher(KEY)
    stored = hasher.hash("right")
    assert stored.startswith("hmac-sha256$")
    assert "right" not in stored
    assert hasher.verify(stored, "right")
    assert not hasher.verify(stored, "wrong")
    assert not hasher.verify(stored, "right\0")
    assert not hasher.outdated(stored)


def test_a_digest_needs_the_key_it_was_made_with() -> None:
    stored = SecretHasher(KEY).hash("right")
    other = SecretHasher(derive_key(os.urandom(32), ROBOT_KEY_PURPOSE))
    assert not other.verify(stored, "right")
    assert derive_key(KEY, b"another use") != derive_key(KEY, ROBOT_KEY_PURPOSE)


def test_an_argon2_hash_still_verifies_and_is_outdated() -> None:
    hasher = SecretHasher(KEY)
    stored = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash("right")
    assert hasher.verify(stored, "right")
    assert not hasher.verify(stored, "wrong")
    assert hasher.outdated(stored)
    assert not hasher.verify("$argon2id$garbage", "right")
    assert not hasher.verify("", "")


def test_a_digest_replacing_an_argon2_hash_keeps_its_secret_id() -> None:
    hasher = SecretHasher(KEY)
    argon2 = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash("right")
    upgraded = hasher.hash("right", carried_id=secret_id(argon2))
    assert hasher.verify(upgraded, "right")
    assert not hasher.verify(upgraded, "wrong")
    assert secret_id(upgraded) == secret_id(argon2)
    assert secret_id(hasher.hash("right")) != secret_id(argon2)
