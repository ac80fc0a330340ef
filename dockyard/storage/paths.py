"""The only place that knows where things are kept inside a BlobStore."""

from __future__ import annotations

import uuid


def blob_key(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}/data"


def upload_key(upload_id: uuid.UUID) -> str:
    return f"uploads/{upload_id}/data"


def upload_prefix(upload_id: uuid.UUID) -> str:
    return f"uploads/{upload_id}"
