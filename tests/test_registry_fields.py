"""dockyard.domain.registry_fields: the checks on what a client may set, without HTTP."""

from __future__ import annotations

import pytest

from dockyard.domain.errors import RefusedError
from dockyard.domain.registry_fields import (
    KEEP,
    StoredFields,
    hostname_problem,
    parse_create,
    parse_update,
)


@pytest.mark.parametrize(
    "host",
    [
        "docker.io",
        "ghcr.io",
        "registry.example.com:5000",
        "10.0.0.1:443",
        "[2001:db8::1]:5000",
        "[::1]",
        "localhost",
        "localhost:65535",
        "my-registry.internal:1",
        "Registry.Example.COM",
        "a" * 63 + ".example.com",
    ],
)
def test_hostname_accepts_a_host_with_an_optional_port(host):
    assert hostname_problem(host) is None


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("https://x", "scheme"),
        ("http://registry.example.com:5000", "scheme"),
        ("oci:/x", "scheme"),
        ("x/y", "path"),
        ("registry.example.com/v2/", "path"),
        ("x?y", "path"),
        ("a b", "spaces"),
        ("a\tb", "spaces"),
        ("user:pw@x.io", "credentials"),
        ("x:0", "port"),
        ("x:99999", "port"),
        ("x:abc", "port"),
        ("x:", "port"),
        ("x:-1", "port"),
        ("x:\u0665", "port"),
        ("-bad.com", "not a valid host"),
        ("bad-.com", "not a valid host"),
        ("a..b", "not a valid host"),
        (".example.com", "not a valid host"),
        ("example.com.", "not a valid host"),
        ("", "not a valid host"),
        ("under_score.io", "not a valid host"),
        ("ex\u00e4mple.com", "not a valid host"),
        ("a" * 64 + ".example.com", "not a valid host"),
        ("2001:db8::1", "brackets"),
        ("[2001:db8::1", "not a valid host"),
        ("[nothost]:5000", "not a valid host"),
        ("[2001:db8::1]5000", "not a valid host"),
    ],
)
def test_hostname_refuses_anything_else_and_says_why(host, fragment):
    problem = hostname_problem(host)
    assert problem is not None
    assert fragment in problem
    assert problem.startswith("Hostname")


# -- parse_create --------------------------------------------------------------------------


def test_create_defaults_and_normalizes():
    checked = parse_create({"name": "  Hub ", "registry_type": "docker_hub"}, "Nodion")
    assert (checked.name, checked.registry_type, checked.hostname) == (
        "Hub",
        "docker_hub",
        "docker.io",
    )
    assert checked.username is None
    assert checked.password is None
    custom = parse_create(
        {"name": "C", "registry_type": "custom", "hostname": "CR.Example.com:5000"}, "Nodion"
    )
    assert custom.hostname == "cr.example.com:5000"


def test_create_keeps_credentials_exactly():
    fields = {"name": "G", "registry_type": "ghcr", "username": " me ", "password": " p w "}
    checked = parse_create(fields, "Nodion")
    assert (checked.hostname, checked.username, checked.password) == ("ghcr.io", " me ", " p w ")


def test_create_empty_credentials_mean_none():
    fields = {"name": "G", "registry_type": "ghcr", "username": "", "password": ""}
    checked = parse_create(fields, "Nodion")
    assert checked.username is None
    assert checked.password is None


def test_create_collects_every_problem():
    fields = {
        "name": 7,
        "registry_type": "nodion",
        "hostname": "https://x",
        "username": "u\x00",
        "password": "p" * 4097,
    }
    with pytest.raises(RefusedError) as refused:
        parse_create(fields, "Acme Cloud")
    messages = refused.value.messages
    assert len(messages) == 5
    assert messages[0] == "Name must be a string"
    assert "Acme Cloud registries are created automatically" in messages[1]
    assert "scheme" in messages[2]
    assert messages[3].startswith("Username must not contain control characters")
    assert messages[4] == "Password is too long (maximum is 4096 characters)"


def test_create_limits_are_inclusive():
    fields = {"name": "n" * 255, "registry_type": "ghcr", "username": "u" * 255, "password": "p"}
    assert parse_create(fields, "Nodion").name == "n" * 255
    with pytest.raises(RefusedError, match="Name is too long"):
        parse_create({**fields, "name": "n" * 256}, "Nodion")
    with pytest.raises(RefusedError, match="Username is too long"):
        parse_create({**fields, "username": "u" * 256}, "Nodion")


# -- parse_update --------------------------------------------------------------------------

STORED = StoredFields(
    name="Hub",
    registry_type="docker_hub",
    hostname="docker.io",
    has_username=True,
    has_password=True,
)


def test_update_with_nothing_keeps_everything():
    change = parse_update({}, STORED)
    assert (change.name, change.hostname) == ("Hub", "docker.io")
    assert change.username is KEEP
    assert change.password is KEEP


def test_update_sets_what_is_sent():
    change = parse_update(
        {"name": " New ", "hostname": "Mirror.Example.com", "username": "u", "password": "p"},
        STORED,
    )
    assert (change.name, change.hostname, change.username, change.password) == (
        "New",
        "mirror.example.com",
        "u",
        "p",
    )


@pytest.mark.parametrize("empty", [None, ""])
def test_update_clears_both_credentials(empty):
    change = parse_update({"username": empty, "password": empty}, STORED)
    assert change.username is None
    assert change.password is None


def test_update_hostname_null_goes_back_to_the_default():
    assert parse_update({"hostname": None}, STORED).hostname == "docker.io"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"username": None}, "together"),
        ({"password": ""}, "together"),
        ({"registry_type": "ghcr"}, "can't be changed"),
        ({"name": "  "}, "Name can't be blank"),
        ({"name": None}, "Name can't be blank"),
        ({"hostname": "x/y"}, "path"),
    ],
)
def test_update_refusals(fields, fragment):
    with pytest.raises(RefusedError) as refused:
        parse_update(fields, STORED)
    assert fragment in " ".join(refused.value.messages)


def test_update_without_stored_credentials_needs_both():
    bare = StoredFields("C", "custom", "cr.example.com", has_username=False, has_password=False)
    with pytest.raises(RefusedError, match="together"):
        parse_update({"username": "u"}, bare)
    with pytest.raises(RefusedError, match="Hostname can't be blank"):
        parse_update({"hostname": ""}, bare)
    assert parse_update({"username": "u", "password": "p"}, bare).password == "p"


def test_update_may_change_the_password_alone():
    change = parse_update({"password": "rotated"}, STORED)
    assert change.username is KEEP
    assert change.password == "rotated"
