"""Small OCI images pushed over the plain registry API: what the rate and soak items read."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from urllib.parse import quote, urljoin

import httpx

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Image:
    repo: str
    tag: str
    digest: str  # the manifest's
    layer: str  # the layer's digest
    layer_size: int


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_for(config: bytes, layer: bytes) -> bytes:
    """An image manifest of one config and one layer (random bytes will do for a registry)."""
    body = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest_of(layer), "size": len(layer)}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def config_for(layer: bytes) -> bytes:
    rootfs = {"type": "layers", "diff_ids": [digest_of(layer)]}
    return json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()


def put_url(base: str, location: str, digest: str) -> str:
    url = urljoin(base + "/", location)
    return url + ("&" if "?" in url else "?") + "digest=" + quote(digest)


def push(client: httpx.Client, repo: str, tag: str, layer_size: int = 4096) -> Image:
    """Upload a random layer and a config (POST, then one PUT carrying the blob), then PUT
    the manifest under `tag`. The client has the base URL and the Authorization header."""
    layer = os.urandom(layer_size)
    config = config_for(layer)
    for blob in (layer, config):
        started = client.post(f"/v2/{repo}/blobs/uploads/")
        if started.status_code != 202:
            raise RuntimeError(f"upload start: {started.status_code} {started.text[:300]}")
        url = put_url(
            str(client.base_url).rstrip("/"), started.headers["location"], digest_of(blob)
        )
        done = client.put(url, content=blob, headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise RuntimeError(f"blob PUT: {done.status_code} {done.text[:300]}")
    manifest = manifest_for(config, layer)
    answer = client.put(
        f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST_TYPE}
    )
    if answer.status_code != 201:
        raise RuntimeError(f"manifest PUT: {answer.status_code} {answer.text[:300]}")
    return Image(repo, tag, digest_of(manifest), digest_of(layer), layer_size)
