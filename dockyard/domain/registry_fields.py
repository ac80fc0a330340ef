"""What a client may set on an external registry, checked all at once into plain sentences."""

from __future__ import annotations

import enum
import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockyard.domain.errors import RefusedError

EXTERNAL_TYPES = ("docker_hub", "ghcr", "custom")
MANAGED_TYPE = "nodion"
DEFAULT_HOSTNAMES = {"docker_hub": "docker.io", "ghcr": "ghcr.io"}

# A registry's `status`. Managed ones are always available; an external one is what its
# last check found (dockyard.verification), or available when checks are turned off.
AVAILABLE = "available"
VERIFYING = "verifying"
AUTHENTICATION_FAILED = "authentication_failed"
UNREACHABLE = "unreachable"

MAX_NAME = 255
MAX_HOSTNAME = 253 + 6  # a full DNS name and ":65535"
MAX_USERNAME = 255
MAX_PASSWORD = 4096

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\Z")
_HOST_EXAMPLE = "e.g. registry.example.com or registry.example.com:5000"

_LABELS = {
    "name": "Name",
    "registry_type": "Registry type",
    "hostname": "Hostname",
    "username": "Username",
    "password": "Password",
}


class Keep(enum.Enum):
    """A credential field that a PATCH left out, so its stored value stays."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class ExternalFields:
    """A new external registry, checked."""

    name: str
    registry_type: str
    hostname: str
    username: str | None
    password: str | None


@dataclass(frozen=True)
class StoredFields:
    """What an update is checked against: the stored values, secrets only as presence."""

    name: str
    registry_type: str
    hostname: str
    has_username: bool
    has_password: bool


@dataclass(frozen=True)
class ExternalUpdate:
    """The fields after a PATCH; KEEP where a credential was not sent."""

    name: str
    hostname: str
    username: str | Keep | None
    password: str | Keep | None


# Bidirectional overrides and isolates make text display differently from what it is.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS


def _text(fields: Mapping[str, Any], key: str, limit: int, errors: list[str]) -> str | None:
    """The field as a string, None when null or empty; appends a sentence when it is bad."""
    value = fields.get(key)
    label = _LABELS[key]
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"{label} must be a string")
        return None
    if value == "":
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        errors.append(f"{label} must be valid UTF-8 text")
        return None
    if any(_invisible(ch) for ch in value):
        errors.append(
            f"{label} must not contain control characters such as line breaks "
            "or text-direction overrides"
        )
        return None
    if len(value) > limit:
        errors.append(f"{label} is too long (maximum is {limit} characters)")
        return None
    return value


def hostname_problem(value: str) -> str | None:
    """Why `value` is not a host with an optional port, or None when it is one."""
    if "://" in value or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", value):
        return (
            "Hostname must not include a scheme such as https://; "
            f"give only the host, {_HOST_EXAMPLE}"
        )
    if any(ch.isspace() for ch in value):
        return f"Hostname must not contain spaces; give only the host, {_HOST_EXAMPLE}"
    if "/" in value or "?" in value or "#" in value:
        return f"Hostname must not include a path; give only the host, {_HOST_EXAMPLE}"
    if "@" in value:
        return "Hostname must not include credentials; send them as username and password"
    host, port = value, None
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[1:end], value[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return f"Hostname is not a valid host: {_HOST_EXAMPLE}"
        port = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"Hostname is not a valid host: {_HOST_EXAMPLE}"
    else:
        if value.count(":") > 1:
            return "Hostname with an IPv6 address must put it in brackets, e.g. [2001:db8::1]:5000"
        host, sep, port_text = value.partition(":")
        port = port_text if sep else None
        if not _DNS_NAME.match(host.lower()):
            return f"Hostname is not a valid host: {_HOST_EXAMPLE}"
    if port is not None and not (port.isdigit() and port.isascii() and 1 <= int(port) <= 65535):
        return "Hostname has an invalid port; a port is a number from 1 to 65535"
    return None


def _hostname(
    fields: Mapping[str, Any], registry_type: str | None, errors: list[str]
) -> str | None:
    value = _text(fields, "hostname", MAX_HOSTNAME, errors)
    if value is None:
        if "hostname" in fields and fields["hostname"] not in (None, ""):
            return None  # _text already said what was wrong
        if registry_type in DEFAULT_HOSTNAMES:
            return DEFAULT_HOSTNAMES[registry_type]
        if registry_type == "custom":
            errors.append(
                "Hostname can't be blank for a custom registry; "
                f"give the registry's host, {_HOST_EXAMPLE}"
            )
        return None
    problem = hostname_problem(value)
    if problem:
        errors.append(problem)
        return None
    return value.lower()


def _check_pair(has_username: bool, has_password: bool, errors: list[str]) -> None:
    if _complained(errors, "username") or _complained(errors, "password"):
        return  # the field's own sentence says enough
    if has_username != has_password:
        errors.append(
            "Username and password must be given together; send both, "
            "or set both to null to remove the stored credentials"
        )


def _complained(errors: list[str], key: str) -> bool:
    prefix = _LABELS[key] + " "
    return any(error.startswith(prefix) for error in errors)


def parse_create(fields: Mapping[str, Any], platform_name: str) -> ExternalFields:
    errors: list[str] = []
    name = _text(fields, "name", MAX_NAME, errors)
    if (name is None or not name.strip()) and not _complained(errors, "name"):
        errors.append("Name can't be blank")

    raw_type = fields.get("registry_type")
    registry_type: str | None = None
    if raw_type is None or raw_type == "":
        errors.append(f"Registry type can't be blank; use one of {', '.join(EXTERNAL_TYPES)}")
    elif raw_type == MANAGED_TYPE:
        errors.append(
            f"Registry type {MANAGED_TYPE} can't be created: {platform_name} registries are "
            "created automatically, one for every region of your project"
        )
    elif raw_type not in EXTERNAL_TYPES:
        errors.append(f"Registry type must be one of {', '.join(EXTERNAL_TYPES)}")
    else:
        registry_type = raw_type

    hostname = _hostname(fields, registry_type, errors)
    username = _text(fields, "username", MAX_USERNAME, errors)
    password = _text(fields, "password", MAX_PASSWORD, errors)
    _check_pair(username is not None, password is not None, errors)
    if errors:
        raise RefusedError(*errors)
    assert name is not None and registry_type is not None and hostname is not None
    return ExternalFields(name.strip(), registry_type, hostname, username, password)


def parse_update(fields: Mapping[str, Any], current: StoredFields) -> ExternalUpdate:
    """Apply a PATCH: omitted fields keep their value, null or "" clears credentials."""
    errors: list[str] = []
    name = current.name
    if "name" in fields:
        given = _text(fields, "name", MAX_NAME, errors)
        if given is not None and given.strip():
            name = given.strip()
        elif not _complained(errors, "name"):
            errors.append("Name can't be blank")

    given_type = fields.get("registry_type", current.registry_type)
    if not isinstance(given_type, str):
        errors.append(f"Registry type must be a string, one of {', '.join(EXTERNAL_TYPES)}")
    elif given_type != current.registry_type:
        errors.append("Registry type can't be changed; delete this registry and create a new one")

    hostname = current.hostname
    if "hostname" in fields:
        hostname = _hostname(fields, current.registry_type, errors) or hostname

    username: str | Keep | None = KEEP
    password: str | Keep | None = KEEP
    if "username" in fields:
        username = _text(fields, "username", MAX_USERNAME, errors)
    if "password" in fields:
        password = _text(fields, "password", MAX_PASSWORD, errors)
    _check_pair(
        current.has_username if username is KEEP else username is not None,
        current.has_password if password is KEEP else password is not None,
        errors,
    )
    kept = username is KEEP and password is KEEP and (current.has_username or current.has_password)
    if hostname != current.hostname and kept:
        # Stored credentials go only to the host they were given for (as docker keys them by
        # host): else a new hostname would have the check send them to whoever runs it.
        errors.append(
            "Username and password must be sent again (or set to null) when the hostname "
            "changes: stored credentials are only sent to the host they were given for"
        )
    if errors:
        raise RefusedError(*errors)
    return ExternalUpdate(name, hostname, username, password)
