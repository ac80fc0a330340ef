"""The seam between the registry and where bytes live: a small, dumb key/value store."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeAlias

# The bytes an append writes, as they arrive.
Chunks: TypeAlias = AsyncIterable[bytes]
# Sees every byte an append writes, off the event loop (a digest being computed), if given.
Observer: TypeAlias = Callable[[bytes], None] | None


class StorageError(Exception):
    """The store could not do what was asked (disk full, backend down): a 5xx, retryable."""


class PathNotFoundError(StorageError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key}")
        self.key = key


class InvalidOffsetError(StorageError):
    """An append did not start where the object ends."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"{key} has {actual} bytes, an append at {expected} does not fit")
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime  # aware UTC: the last write, so a check can tell old from in flight


class BlobStore(Protocol):
    """Keys are '/'-separated relative paths chosen by storage.paths, never by clients."""

    async def stat(self, key: str) -> int | None:
        """The object's size, or None when there is none."""

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the object's bytes from `offset`, `length` of them (all when None)."""

    def local_path(self, key: str) -> Path | None:
        """A file the server may send directly (sendfile/pathsend), when the store has one."""

    async def redirect_url(self, key: str) -> str | None:
        """A URL the client may fetch the object from itself, when the store offers one."""

    async def append(self, key: str, offset: int, chunks: Chunks, observe: Observer = None) -> int:
        """Append to the object at `offset` (bytes past it, from a broken earlier attempt,
        are dropped); `observe` sees every byte written, off the event loop. Returns the
        new size. InvalidOffsetError when the object is shorter than `offset`. What is
        appended becomes readable after seal()."""

    async def seal(self, key: str) -> None:
        """Finish appending to `key`: only then is it sure to stat and read like any object."""

    async def move(self, source: str, destination: str) -> None:
        """Make `source` appear at `destination` atomically, replacing what is there."""

    async def delete(self, key: str) -> None:
        """Remove the object, or every object under the prefix `key/`; no error when absent."""

    async def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`."""

    async def scan(self, prefix: str) -> Sequence[StoredObject]:
        """Every object under `prefix` with its size and last change, appends not yet sealed
        included (under the key they go to): what a consistency check compares with the
        database, and what delete(prefix) removes."""
