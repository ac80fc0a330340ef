"""Where a check may connect to, and over what: Dockyard connects to hosts its tenants name.

Every name is resolved first and every address it resolves to is checked; the connection
then goes to a checked address (with the name kept for TLS and the Host header), so a name
that resolves differently a moment later (DNS rebinding) cannot take it elsewhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never, whatever the settings: link-local (169.254.169.254 is the metadata service of AWS,
# GCP, Azure and others, with credentials of the machine), AWS's IPv6 metadata address,
# Alibaba Cloud's metadata address, "this host" (0.0.0.0 reaches the local machine),
# multicast, broadcast and the reserved rest.
ALWAYS_REFUSED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "0.0.0.0/8",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "ff00::/8",
    )
)


# NAT64 prefixes (RFC 6052, RFC 8215): on a network with DNS64, 64:ff9b::a9fe:a9fe is
# 169.254.169.254, though Python calls it global.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.ip_network("::/96")  # the deprecated ::a.b.c.d form


def _plain(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries to (::ffff:169.254.169.254, 6to4, Teredo,
    NAT64, ::a.b.c.d), which is what the checks must judge."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64) or (
        address in _COMPATIBLE and int(address) > 1  # not :: and ::1
    ):
        return ipaddress.IPv4Address(address.packed[-4:])
    return address


def parse_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


class AddressPolicy:
    def __init__(self, *, allow_private: bool, insecure: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        entries = [entry.lower() for entry in insecure]
        self._insecure_networks = [net for net in map(_network, entries) if net is not None]
        self._insecure_hosts = frozenset(entry for entry in entries if _network(entry) is None)

    def refusal(self, address: IPAddress) -> str | None:
        """Why a check must not connect to `address`, or None when it may."""
        address = _plain(address)
        if any(address in net for net in ALWAYS_REFUSED if net.version == address.version):
            return "a link-local, metadata or reserved address"
        if not self.allow_private and not address.is_global:
            return "not a public address (DOCKYARD_VERIFY_PRIVATE_ADDRESSES=false)"
        return None

    def insecure(self, host: str, port: int | None, addresses: Sequence[IPAddress]) -> bool:
        """Docker's rule for plain HTTP and unverified TLS: the host (or host:port) is listed
        in DOCKYARD_INSECURE_REGISTRIES, or all its addresses are loopback or in a listed
        network."""
        host = host.lower()
        named = f"[{host}]" if ":" in host else host
        if host in self._insecure_hosts or (
            port is not None and f"{named}:{port}" in self._insecure_hosts
        ):
            return True
        if not addresses:
            return False
        return all(
            _plain(address).is_loopback
            or any(_plain(address) in net for net in self._insecure_networks)
            for address in addresses
        )
