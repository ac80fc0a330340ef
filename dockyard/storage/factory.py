"""Build the BlobStore a StorageSettings describes."""

from __future__ import annotations

from pathlib import Path

from dockyard.config import StorageSettings
from dockyard.storage.base import BlobStore
from dockyard.storage.filesystem import FilesystemBlobStore


def build_store(config: StorageSettings, default_path: Path, default_prefix: str) -> BlobStore:
    """`default_path` / `default_prefix` keep regions apart when they share one setting."""
    if config.type == "filesystem":
        return FilesystemBlobStore(config.path or default_path, fsync=config.fsync)
    # Imported only for S3: boto3 and botocore cost a filesystem-only server ~10 MB.
    import boto3

    from dockyard.storage.s3 import S3BlobStore, client_config

    assert config.bucket is not None  # checked by StorageSettings
    secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
    client = boto3.client(
        "s3",
        endpoint_url=config.endpoint_url,
        region_name=config.region,
        # None lets boto3 use the standard chain: env, shared files, instance roles.
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=secret,
        config=client_config(path_style=config.path_style, max_attempts=config.max_attempts),
    )
    prefix = "/".join(p for p in (config.prefix.strip("/"), default_prefix) if p)
    return S3BlobStore(
        client,
        config.bucket,
        prefix,
        part_size=config.part_size_mib * 1024 * 1024,
        redirect_seconds=config.redirect_seconds if config.redirect else None,
    )
