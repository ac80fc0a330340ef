"""Brute-force throttling of failed logins, and the address a request comes from.

Counted in this process's memory: each replica behind a load balancer keeps its own
counts, so N replicas together allow up to N times the configured failures. That is
enough for the point of it, which is to keep guessing slow and cheap for us (a blocked
source never reaches the password check), not to keep exact global counts; robot secrets and API
tokens carry 256 random bits, so no rate of guessing finds one anyway.

Only failures count, in a sliding window: a source or an account is refused once its last
`limit` failures all fall within `window` seconds, and is let in again as soon as the
oldest of them leaves the window, without anyone doing anything.

An attacker who knows a robot's username (it is not a secret) could keep that account
blocked for as long as they keep failing. So that this cannot lock the rightful owner out,
a source that logged in to an account successfully in the last `familiar_seconds` is not
held back by that account's block, only by its own (per-source) one: the CI runner that
pushed yesterday keeps pushing while someone guesses from elsewhere.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import HTTPConnection

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
V = TypeVar("V")

# Longer account names are cut to this: no robot's name is longer (the column's length), and
# a guess must not be able to make us keep kilobytes per key.
MAX_ACCOUNT_CHARS = 128
MAX_SOURCE_CHARS = 64
# An IPv6 host usually has a whole /64 to pick addresses from: count the network.
IPV6_SOURCE_PREFIX = 64


@dataclass(frozen=True)
class Block:
    """Why a request is refused, and for how many more seconds (at least 1)."""

    scope: str  # "source" or "account"
    retry_after: int


class Throttle:
    """Failure counts per source address and per account, with a cap on the keys kept.

    When more than `max_keys` keys are tracked, the least recently failing ones are
    forgotten first; a flood of addresses can then make us forget a count early, never
    block anyone who did not fail.
    """

    def __init__(
        self,
        *,
        per_source: int,
        per_account: int,
        window: float,
        max_keys: int = 100_000,
        familiar_seconds: float = 7 * 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"source": per_source, "account": per_account}
        self.window = window
        self.max_keys = max_keys
        self.familiar_seconds = familiar_seconds
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._familiar: OrderedDict[tuple[str, str], float] = OrderedDict()
        # Callers are on the event loop today; the lock keeps a sync caller from a worker
        # thread safe too, for the price of an uncontended acquire.
        self._lock = threading.Lock()

    def blocked(self, source: str, account: str | None = None) -> Block | None:
        """The block that refuses this attempt now, if any; the longer one if both do."""
        now = self.clock()
        with self._lock:
            blocks = [
                Block(scope, wait)
                for scope, name in self._keys(source, account)
                if (wait := self._wait(scope, name, now)) is not None
                and not (scope == "account" and self._is_familiar(name, source, now))
            ]
        return max(blocks, key=lambda block: block.retry_after, default=None)

    def failure(self, source: str, account: str | None = None) -> list[Block]:
        """Count a failed attempt; returns the blocks it started (empty if none did)."""
        now = self.clock()
        started = []
        with self._lock:
            for scope, name in self._keys(source, account):
                was_blocked = self._wait(scope, name, now) is not None
                key = (scope, name)
                times = self._failures.pop(key, None) or deque(maxlen=self.limits[scope])
                times.append(now)
                self._failures[key] = times  # now the most recent key
                wait = self._wait(scope, name, now)
                if wait is not None and not was_blocked:
                    started.append(Block(scope, wait))
            self._trim(self._failures)
        return started

    def success(self, source: str, account: str) -> None:
        """Remember that this source knows the account's password (see the module doc)."""
        key = (_account_key(account), _source_key(source))
        with self._lock:
            self._familiar.pop(key, None)
            self._familiar[key] = self.clock()
            self._trim(self._familiar)

    def _keys(self, source: str, account: str | None) -> list[tuple[str, str]]:
        keys = [("source", _source_key(source))]
        if account is not None:
            keys.append(("account", _account_key(account)))
        return keys

    def _wait(self, scope: str, name: str, now: float) -> int | None:
        times = self._failures.get((scope, name))
        if times is None or len(times) < self.limits[scope]:
            return None
        left = times[0] + self.window - now
        if left <= 0:
            return None
        return max(1, math.ceil(left))

    def _is_familiar(self, account: str, source: str, now: float) -> bool:
        seen = self._familiar.get((account, _source_key(source)))
        return seen is not None and now - seen < self.familiar_seconds

    def _trim(self, table: OrderedDict[tuple[str, str], V]) -> None:
        while len(table) > self.max_keys:
            table.popitem(last=False)

    def tracked_keys(self) -> int:
        """How many keys are held (for tests and metrics)."""
        with self._lock:
            return len(self._failures) + len(self._familiar)


def _account_key(account: str) -> str:
    return account[:MAX_ACCOUNT_CHARS]


def _source_key(source: str) -> str:
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source[:MAX_SOURCE_CHARS]
    if isinstance(address, ipaddress.IPv6Address):
        network = ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False)
        return str(network)
    return str(address)


# -- where a request comes from ---------------------------------------------------------------


def _parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, or with a port (`1.2.3.4:80`, `[::1]:80`)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress | None, proxies: Sequence[IPNetwork]) -> bool:
    return address is not None and any(
        address.version == network.version and address in network for network in proxies
    )


def source_address(
    peer: str | None, forwarded_for: Iterable[str], trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right (each proxy appends the
    address it saw) and the first address that is not a trusted proxy is the client: what
    is left of it was written by the client itself and may be anything. A peer that is not
    trusted cannot make us believe any X-Forwarded-For.
    """
    peer_address = _parse_address(peer) if peer else None
    fallback = str(peer_address) if peer_address else (peer or "unknown")[:MAX_SOURCE_CHARS]
    if not _trusted(peer_address, trusted_proxies):
        return fallback
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        address = _parse_address(hop)
        if address is None:
            # Not an address, so no proxy of ours wrote it: the chain is broken here, and
            # the last hop we can vouch for is the best we know.
            return fallback
        fallback = str(address)
        if not _trusted(address, trusted_proxies):
            return fallback
    return fallback  # every hop is a trusted proxy: the left-most one is where it began


def request_source(connection: HTTPConnection, trusted_proxies: Sequence[IPNetwork]) -> str:
    """source_address of a Starlette request."""
    peer = connection.client.host if connection.client else None
    return source_address(peer, connection.headers.getlist("x-forwarded-for"), trusted_proxies)
