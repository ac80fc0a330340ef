"""Blob storage: the BlobStore protocol and its implementations. Knows nothing of registries."""

from dockyard.storage.base import BlobStore, InvalidOffsetError, PathNotFoundError

__all__ = ["BlobStore", "InvalidOffsetError", "PathNotFoundError"]
