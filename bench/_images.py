"""Test images (OCI layouts of random, uncompressed tar layers) and random blobs on disk."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

from push_pull import write_blob

CHUNK = 4 * 1024 * 1024
MiB = 1024 * 1024


def random_layer(size: int) -> Callable[[], Iterable[bytes]]:
    """An uncompressed tar holding one file of `size` random bytes, produced in chunks."""

    def produce() -> Iterable[bytes]:
        info = tarfile.TarInfo("data.bin")
        info.size = size
        yield info.tobuf(format=tarfile.GNU_FORMAT)
        left = size
        while left:
            n = min(CHUNK, left)
            yield os.urandom(n)
            left -= n
        yield b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024

    return produce


def build_layout(layout: Path, layer_sizes: list[int]) -> int:
    """Write an OCI layout with tag v1: one random layer per size. Returns its total bytes."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    layers = []
    for size in layer_sizes:
        digest, length = write_blob(layout, random_layer(size))
        layers.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": length,
            }
        )
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layers]},
        }
    ).encode()
    config_digest, config_size = write_blob(layout, lambda: [config])
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layers,
        }
    ).encode()
    manifest_digest, manifest_size = write_blob(layout, lambda: [manifest])
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return sum(d["size"] for d in layers) + config_size + manifest_size


def random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            n = min(CHUNK, left)
            out.write(os.urandom(n))
            left -= n


def renew(path: Path) -> str:
    """Give the file new content (its first 32 bytes) so that it is a blob nobody has yet;
    return its digest."""
    with path.open("r+b") as handle:
        handle.write(os.urandom(32))
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
