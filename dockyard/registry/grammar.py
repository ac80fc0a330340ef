"""The grammar of repository names, tags and digests: the one place that knows it."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from dockyard.ids import canonical_uuid
from dockyard.registry.errors import RegistryError

# OCI distribution-spec: path components joined by "/", each lower-case alphanumerics with
# single separators (".", "_", "__", or runs of "-").
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# Anchored with \Z, not $: "$" also matches before a final newline, and "latest\n" (from
# /manifests/latest%0A) would be stored as a tag.
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
_ENCODED = {"sha256": re.compile(r"^[a-f0-9]{64}\Z"), "sha512": re.compile(r"^[a-f0-9]{128}\Z")}
MAX_NAME = 255


@dataclass(frozen=True)
class RepoName:
    """`<project-id>/<path>`: every repository lives under its project's id."""

    full: str
    project_id: uuid.UUID


def _shown(value: str) -> str:
    """`value` as it can be echoed in an error body: a lone surrogate (which a server that
    decodes paths with surrogateescape lets through) can't be encoded as UTF-8."""
    return value.encode("utf-8", "replace").decode("utf-8")


def parse_name(name: str) -> RepoName:
    if len(name) > MAX_NAME:
        raise RegistryError("NAME_INVALID", f"repository name is longer than {MAX_NAME} characters")
    if not NAME_RE.match(name):
        raise RegistryError(
            "NAME_INVALID",
            "repository name must be lower-case path components of letters and digits "
            "joined by '.', '_', '__' or '-', separated by '/'",
            detail={"name": _shown(name)},
        )
    head, sep, _ = name.partition("/")
    project_id = canonical_uuid(head)  # in lower case: NAME_RE refused upper case
    if not sep or project_id is None:
        raise RegistryError(
            "NAME_INVALID",
            "repository name must start with your project id: <project-id>/<image>",
            detail={"name": _shown(name)},
        )
    return RepoName(name, project_id)


def is_digest(reference: str) -> bool:
    return ":" in reference


def parse_digest(value: str) -> str:
    """A digest this registry can verify (sha256 or sha512), or DIGEST_INVALID."""
    if not DIGEST_RE.match(value):
        raise RegistryError("DIGEST_INVALID", "digest is not of the form algorithm:hex")
    algorithm, _, encoded = value.partition(":")
    pattern = _ENCODED.get(algorithm)
    if pattern is None:
        raise RegistryError(
            "DIGEST_INVALID", f"digest algorithm {algorithm} is not supported; use sha256"
        )
    if not pattern.match(encoded):
        raise RegistryError(
            "DIGEST_INVALID", f"{algorithm} digest must be lower-case hex of the right length"
        )
    return value


def parse_reference(reference: str) -> str:
    """A tag or a digest, as used in /manifests/<reference>."""
    if is_digest(reference):
        return parse_digest(reference)
    if not TAG_RE.match(reference):
        raise RegistryError(
            "TAG_INVALID",
            "tag must be 1 to 128 characters of letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'",
        )
    return reference
