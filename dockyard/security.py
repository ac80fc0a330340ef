"""Secrets: generating them, hashing them, and encrypting the ones we must give back out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_TOKEN_PREFIX = "dky_"  # noqa: S105 (a prefix, not a secret)
# A user's API key: told apart from a project's token by its prefix alone, so that a request
# is looked up in one table only (and secret scanners can tell them apart too).
USER_API_KEY_PREFIX = "dkyu_"
KEY_FILE = "encryption.key"
_CIPHER_VERSION = "v1"


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_user_api_key() -> str:
    return USER_API_KEY_PREFIX + secrets.token_urlsafe(32)


def is_user_api_key(token: str) -> bool:
    return token.startswith(USER_API_KEY_PREFIX)


def new_robot_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    # API tokens carry 256 random bits, so a plain SHA-256 cannot be brute-forced and lets
    # every request find its token by an indexed lookup; argon2 is for what people choose.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# The stored form of a robot secret: this prefix, then HMAC-SHA256 of the secret in hex, and,
# when it replaced an argon2 hash, "$" and that hash's secret id (see robot_secrets).
ROBOT_DIGEST_PREFIX = "hmac-sha256$"
_ARGON2_PREFIX = "$argon2"
ROBOT_KEY_PURPOSE = b"dockyard robot secret digests v1"


def derive_key(master: bytes, purpose: bytes) -> bytes:
    """A key of its own for one use of the master key: a digest never helps to open a
    ciphertext, nor the other way round."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class SecretHasher:
    """Robot secrets as keyed digests (HMAC-SHA256); argon2id hashes stored before still
    verify, and are replaced on the next login that proves them (see RobotDirectory).

    A robot secret is 256 random bits: no guessing finds one, so a slow hash bought
    nothing but ~20 ms and 19 MiB of every login (GitHub and GitLab keep such tokens as a
    SHA-256 digest). Keyed, a copy of the database alone does not even tell whether a
    secret seen elsewhere (a CI log) belongs to one of its robots.
    """

    def __init__(self, key: bytes, *, argon2_concurrency: int = 4) -> None:
        if len(key) != 32:
            raise ValueError("the digest key must be 32 bytes")
        self._key = key
        # Only verifies, with the parameters each stored hash names.
        self._argon2 = PasswordHasher()
        # A burst of logins of argon2 robots queues here instead of taking 19 MiB each.
        self._slots = threading.BoundedSemaphore(argon2_concurrency)

    def _digest(self, secret: str) -> str:
        data = secret.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def hash(self, secret: str, carried_id: str | None = None) -> str:
        stored = ROBOT_DIGEST_PREFIX + self._digest(secret)
        return stored if carried_id is None else f"{stored}${carried_id}"

    def verify(self, stored_hash: str, secret: str) -> bool:
        if stored_hash.startswith(ROBOT_DIGEST_PREFIX):
            digest = stored_hash[len(ROBOT_DIGEST_PREFIX) :].partition("$")[0]
            return hmac.compare_digest(digest, self._digest(secret))
        if not stored_hash.startswith(_ARGON2_PREFIX):
            return False
        with self._slots:
            try:
                return bool(self._argon2.verify(stored_hash, secret))
            except (VerificationError, InvalidHashError):
                return False

    @staticmethod
    def outdated(stored_hash: str) -> bool:
        """Whether this is a slow hash, to be replaced once its secret is proven."""
        return not stored_hash.startswith(ROBOT_DIGEST_PREFIX)


def carried_id(stored_hash: str) -> str | None:
    """The secret id an upgraded digest kept from the argon2 hash it replaced."""
    if not stored_hash.startswith(ROBOT_DIGEST_PREFIX):
        return None
    _, sep, kept = stored_hash[len(ROBOT_DIGEST_PREFIX) :].partition("$")
    return kept if sep else None


class DecryptionError(Exception):
    """Stored ciphertext could not be opened: wrong key, or the row was tampered with."""


class Cipher:
    """AES-256-GCM for stored external-registry credentials.

    The row id goes in as associated data, so a ciphertext copied into another row
    does not decrypt there.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode())
        return f"{_CIPHER_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        version, _, body = token.partition(":")
        if version != _CIPHER_VERSION:
            raise DecryptionError("unknown ciphertext version")
        try:
            raw = base64.urlsafe_b64decode(body)
            plain = self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("ciphertext does not open with this key") from exc
        return plain.decode("utf-8")


def parse_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError as exc:
        raise ValueError("the encryption key must be 32 bytes in URL-safe base64") from exc
    if len(key) != 32:
        raise ValueError("the encryption key must be 32 bytes in URL-safe base64")
    return key


def generate_key_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def read_or_create_secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's bytes; if it is absent, `make()` written to it with mode 0600."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    content = make()
    # Written aside and linked into place: when two processes start at once, exactly one
    # file wins and the other process reads that one, never a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        tmp.unlink()
    return content


def load_or_create_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, else the one kept in the data dir, created (mode 0600) if absent."""
    if configured:
        return parse_key(configured)
    text = read_or_create_secret_file(
        data_dir / KEY_FILE, lambda: (generate_key_text() + "\n").encode()
    )
    return parse_key(text.decode())
