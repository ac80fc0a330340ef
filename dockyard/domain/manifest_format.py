"""Reading a manifest: its media type, what it references, its subject. No storage here."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import DIGEST_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# Layers a client is told to fetch from elsewhere (`urls`); a registry never holds them.
FOREIGN_LAYERS = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
MAX_REFERENCES = 10_000
# RFC 6838, as the image spec requires of media and artifact types; this also keeps them
# within the 255 characters (and free of the NUL bytes) the database can hold, and out of
# a Content-Type header with a line break in it (\Z: "$" allows a final newline).
MEDIA_TYPE_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z"
)
MAX_DIGEST = 150  # the width of the database's digest columns
MAX_SIZE = 2**63 - 1  # descriptor sizes are int64 in the image spec


def _invalid(message: str) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", message)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ParsedManifest:
    digest: str
    media_type: str
    blobs: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] = field(default_factory=dict)


def sha256_digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType must be a non-empty string")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest) or len(digest) > MAX_DIGEST:
        raise _invalid(f"{where}.digest must be a digest such as sha256:<hex>")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise _invalid(f"{where}.size must be a non-negative 64-bit integer")
    return Descriptor(media_type, digest, size)


def _descriptors(document: dict[str, Any], key: str, *, required: bool) -> list[Descriptor]:
    value = document.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{key} must be an array of descriptors")
    if len(value) > MAX_REFERENCES:
        raise _invalid(f"{key} has more than {MAX_REFERENCES} entries")
    return [_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value)]


def _media_type(document: dict[str, Any], content_type: str | None) -> str:
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    header = (content_type or "").split(";")[0].strip() or None
    if declared and header and declared != header:
        raise _invalid(
            f"the manifest's mediaType {declared} differs from its Content-Type {header}"
        )
    media_type = declared or header
    if media_type and not MEDIA_TYPE_RE.match(media_type):
        raise _invalid(f"mediaType {media_type[:300]!r} is not a media type (RFC 6838)")
    if media_type:
        return media_type
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def _annotations(document: dict[str, Any]) -> dict[str, str]:
    value = document.get("annotations")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _invalid("annotations must map strings to strings")
    return value


class _AmbiguousJSONError(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key given twice is read as its last copy here and maybe as its first elsewhere:
    # the layers a client pulls would then differ from those kept from collection.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _AmbiguousJSONError(f"manifest has the key {key[:100]!r} more than once")
        document[key] = value
    return document


def _constant(name: str) -> Any:
    raise _AmbiguousJSONError(f"manifest has {name}, which is not a JSON number")


def parse_manifest(content: bytes, content_type: str | None) -> ParsedManifest:
    try:
        # UTF-8 only, as JSON between systems must be: json.loads would also take UTF-16/32.
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("manifest is not UTF-8 text") from None
    try:
        document = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except _AmbiguousJSONError as exc:
        raise _invalid(str(exc)) from None
    except (ValueError, RecursionError):
        raise _invalid("manifest is not valid JSON") from None
    if not isinstance(document, dict):
        raise _invalid("manifest must be a JSON object")
    media_type = _media_type(document, content_type)
    if media_type in DOCKER_SCHEMA1:
        raise _invalid("Docker schema 1 manifests are not supported; push schema 2")
    if document.get("schemaVersion") != 2 and media_type != OCI_ARTIFACT:
        raise _invalid("schemaVersion must be 2")

    blobs: list[Descriptor] = []
    manifests: list[Descriptor] = []
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    if media_type in INDEX_TYPES or (
        "manifests" in document and "layers" not in document and "config" not in document
    ):
        manifests = _descriptors(document, "manifests", required=True)
    elif media_type == OCI_ARTIFACT:
        blobs = _descriptors(document, "blobs", required=False)
    else:
        required = media_type in (OCI_MANIFEST, DOCKER_MANIFEST)
        if "config" in document or required:
            config = _descriptor(document.get("config"), "config")
            blobs.append(config)
            if artifact_type is None and media_type == OCI_MANIFEST:
                artifact_type = config.media_type
        layers = _descriptors(document, "layers", required=required)
        blobs.extend(layer for layer in layers if layer.media_type not in FOREIGN_LAYERS)

    if artifact_type is not None and not MEDIA_TYPE_RE.match(artifact_type):
        raise _invalid(
            f"artifactType (or the config's mediaType that stands for it) "
            f"{artifact_type[:300]!r} is not a media type (RFC 6838)"
        )
    subject = None
    if document.get("subject") is not None:
        subject = _descriptor(document["subject"], "subject")
    return ParsedManifest(
        digest=sha256_digest(content),
        media_type=media_type,
        blobs=tuple(blobs),
        manifests=tuple(manifests),
        subject=subject,
        artifact_type=artifact_type,
        annotations=_annotations(document),
    )
