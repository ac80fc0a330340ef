"""Secret hashing: argon2id, with recently proven secrets remembered only as digests."""

from __future__ import annotations

from dockyard.security import SecretHasher


def test_a_proven_secret_stays_right_and_wrong_ones_stay_wrong() -> None:
    hasher = SecretHasher()
    stored = hasher.hash("right")
    assert hasher.verify(stored, "right")
    assert hasher.verify(stored, "right")  # the remembered pair
    assert not hasher.verify(stored, "wrong")
    assert not hasher.verify(stored, "right\0")


def test_new_credentials_do_not_inherit_an_old_proof() -> None:
    hasher = SecretHasher()
    old = hasher.hash("same-secret")
    assert hasher.verify(old, "same-secret")
    new = hasher.hash("other-secret")
    assert not hasher.verify(new, "same-secret")
    assert hasher.verify(new, "other-secret")


def test_nothing_remembered_holds_the_secret() -> None:
    hasher = SecretHasher()
    stored = hasher.hash("s3cret-value")
    hasher.verify(stored, "s3cret-value")
    remembered = b"".join(hasher._proven)
    assert b"s3cret-value" not in remembered


def test_a_proof_expires() -> None:
    hasher = SecretHasher(proven_seconds=0)
    stored = hasher.hash("right")
    assert hasher.verify(stored, "right")
    assert hasher.verify(stored, "right")  # verified again by argon2, still right
    assert not hasher.verify(stored, "wrong")
