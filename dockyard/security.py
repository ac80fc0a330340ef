"""Secrets: generating them, hashing them, and encrypting the ones we must give back out."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

API_TOKEN_PREFIX = "dky_"  # noqa: S105 (a prefix, not a secret)
# A user's API key: told apart from a project's token by its prefix alone, so that a request
# is looked up in one table only (and secret scanners can tell them apart too).
USER_API_KEY_PREFIX = "dkyu_"
KEY_FILE = "encryption.key"
_PROVEN_LIMIT = 10_000
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


class SecretHasher:
    """argon2id for robot secrets, which people paste into CI systems and type."""

    def __init__(
        self,
        *,
        time_cost: int = 2,
        memory_cost: int = 19 * 1024,
        concurrency: int = 4,
        proven_seconds: float = 300.0,
    ) -> None:
        # OWASP's argon2id floor (19 MiB, t=2, p=1): many concurrent logins must not
        # each claim the 64 MiB of the library default.
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)
        # A burst of logins queues here instead of taking memory_cost each at once.
        self._slots = threading.BoundedSemaphore(concurrency)
        self.proven_seconds = proven_seconds
        self._proven: dict[bytes, float] = {}

    def hash(self, secret: str) -> str:
        with self._slots:
            return self._hasher.hash(secret)

    @staticmethod
    def _pair(stored_hash: str, secret: str) -> bytes:
        return hashlib.sha256(f"{stored_hash}\0{secret}".encode("utf-8", "surrogatepass")).digest()

    def proven(self, stored_hash: str, secret: str) -> bool:
        """Whether verify() found this pair right recently: a lookup, never argon2."""
        return self._proven.get(self._pair(stored_hash, secret), 0.0) > time.monotonic()

    def verify(self, stored_hash: str, secret: str) -> bool:
        # Clients ask for a token before nearly every push and pull with the same secret;
        # a pair proven right recently is trusted without another 20 ms of argon2. Only
        # successes are remembered (guessing stays slow), as a digest of the pair (never
        # the secret), and a new hash (new credentials) never matches an old entry.
        key = self._pair(stored_hash, secret)
        now = time.monotonic()
        if self._proven.get(key, 0.0) > now:
            return True
        with self._slots:
            try:
                valid = self._hasher.verify(stored_hash, secret)
            except (VerificationError, InvalidHashError):
                return False
        if valid:
            if len(self._proven) >= _PROVEN_LIMIT:
                self._proven.clear()
            self._proven[key] = now + self.proven_seconds
        return valid


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
