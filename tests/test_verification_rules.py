"""The rules under registry checks: challenges as registries send them, and addresses."""

from __future__ import annotations

import ipaddress

import pytest

from dockyard.config import Settings
from dockyard.verification.addresses import AddressPolicy
from dockyard.verification.challenge import Challenge, parse_challenges


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            # Docker Hub
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
            [
                Challenge(
                    "bearer",
                    {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"},
                )
            ],
        ),
        (
            # GHCR, with a scope
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
            'scope="repository:user/image:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://ghcr.io/token",
                        "service": "ghcr.io",
                        "scope": "repository:user/image:pull",
                    },
                )
            ],
        ),
        ('Basic realm="basic-realm"', [Challenge("basic", {"realm": "basic-realm"})]),
        ("BASIC Realm=plain", [Challenge("basic", {"realm": "plain"})]),
        (
            'Basic realm="a, b", Bearer realm="https://x/token" , service=x',
            [
                Challenge("basic", {"realm": "a, b"}),
                Challenge("bearer", {"realm": "https://x/token", "service": "x"}),
            ],
        ),
        (r'Basic realm="say \"hi\""', [Challenge("basic", {"realm": 'say "hi"'})]),
        ("Negotiate abc==, Basic realm=x", [Challenge("negotiate", {})]),
        ("", []),
        ('="broken"', []),
    ],
)
def test_challenges_are_read_as_registries_send_them(header, expected):
    assert parse_challenges([header]) == expected


def test_a_huge_challenge_is_read_only_so_far():
    header = 'Bearer realm="https://x/token",' + "a=b," * 100_000
    challenge = parse_challenges([header])[0]
    assert challenge.params["realm"] == "https://x/token"
    assert len(challenge.params) < 3000


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64: with DNS64 this is 169.254.169.254
        "64:ff9b:1::a9fe:a9fe",
        "2002:a9fe:a9fe::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254 (obfuscated)
        "::a9fe:a9fe",  # IPv4-compatible
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "ff02::1",
    ],
)
def test_link_local_metadata_and_reserved_addresses_are_always_refused(address):
    for allow_private in (True, False):
        policy = AddressPolicy(allow_private=allow_private, insecure=["0.0.0.0/0", "::/0"])
        assert policy.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.1.10",
        "172.16.0.1",
        "fd12::1",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2002:c0a8:10a::1",  # 6to4 of 192.168.1.10
    ],
)
def test_private_addresses_are_allowed_unless_refused_by_the_setting(address):
    ip = ipaddress.ip_address(address)
    assert AddressPolicy(allow_private=True).refusal(ip) is None
    assert AddressPolicy(allow_private=False).refusal(ip) is not None


def test_public_addresses_are_allowed():
    for address in ("1.1.1.1", "2606:4700:4700::1111"):
        assert AddressPolicy(allow_private=False).refusal(ipaddress.ip_address(address)) is None


def test_plain_http_is_for_loopback_and_listed_hosts_only():
    ip = ipaddress.ip_address
    policy = AddressPolicy(
        allow_private=True,
        insecure=["Mirror.LAN", "reg.example.com:5000", "10.0.0.0/8", "[::2]:80"],
    )
    assert policy.insecure("localhost", 5000, [ip("127.0.0.1"), ip("::1")])
    assert policy.insecure("mirror.lan", 443, [ip("192.168.1.2")])
    assert policy.insecure("reg.example.com", 5000, [ip("203.0.113.5")])
    assert not policy.insecure("reg.example.com", 5001, [ip("203.0.113.5")])
    assert policy.insecure("internal", None, [ip("10.9.8.7")])
    assert policy.insecure("::2", 80, [ip("::2")])
    # Every address must be loopback or listed: a name that also resolves elsewhere is not.
    assert not policy.insecure("mixed", None, [ip("127.0.0.1"), ip("203.0.113.5")])
    assert not policy.insecure("public", None, [ip("203.0.113.5")])


def test_insecure_registries_setting_takes_hosts_and_networks():
    settings = Settings(insecure_registries=["Reg.Example:5000", "10.0.0.0/8", "[::1]:5000"])
    assert settings.insecure_registries == ["reg.example:5000", "10.0.0.0/8", "[::1]:5000"]
    for wrong in ("https://reg.example", "reg example", ""):
        with pytest.raises(ValueError, match="insecure registry"):
            Settings(insecure_registries=[wrong])
