"""What every /v2 handler shares: services, storage per region, and per-process caches."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import Request

from dockyard.config import Region, Settings
from dockyard.domain.credentials import RobotDirectory
from dockyard.domain.manifests import ManifestService
from dockyard.domain.repositories import RepositoryService
from dockyard.domain.uploads import UploadService
from dockyard.registry.errors import RegistryError
from dockyard.registry.tokens import TokenService
from dockyard.storage import BlobStore


class RobotStanding:
    """Whether a robot still exists and the secret a token names is still good,
    remembered for a few seconds.

    Tokens live for many minutes; this is what makes revoked, expired and rotated-out
    credentials stop working within `ttl` seconds for tokens already issued, without a
    query per request.
    """

    def __init__(self, robots: RobotDirectory, ttl: float) -> None:
        self.robots = robots
        self.ttl = ttl
        self._seen: dict[tuple[uuid.UUID, str | None], tuple[bool, float]] = {}

    def known(self, robot_id: uuid.UUID, secret: str | None) -> bool | None:
        """The remembered answer, or None if it is too old: no database, no thread."""
        cached = self._seen.get((robot_id, secret))
        if cached is not None and time.monotonic() - cached[1] < self.ttl:
            return cached[0]
        return None

    def is_active(self, robot_id: uuid.UUID, secret: str | None) -> bool:
        known = self.known(robot_id, secret)
        if known is not None:
            return known
        now = time.monotonic()
        active = self.robots.find(robot_id, secret) is not None
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[(robot_id, secret)] = (active, now)
        return active


class UploadHashers:
    """The running sha256 of uploads whose chunks all came through this process.

    When a chunk arrives elsewhere (another replica, or after a restart) the state here
    no longer matches the upload's offset and the digest is finished by re-reading what
    is stored; nothing is ever pickled or shared.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._states: OrderedDict[uuid.UUID, tuple[int, hashlib._Hash]] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def lock(self, upload_id: uuid.UUID) -> asyncio.Lock:
        """One writer per upload in this process."""
        lock = self._locks.get(upload_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[upload_id] = lock
        return lock

    def take(self, upload_id: uuid.UUID, offset: int) -> hashlib._Hash | None:
        """The hash of the first `offset` bytes, if this process saw all of them."""
        state = self._states.pop(upload_id, None)
        if offset == 0:
            return hashlib.sha256()
        if state is None or state[0] != offset:
            return None
        return state[1]

    def keep(self, upload_id: uuid.UUID, offset: int, hasher: hashlib._Hash) -> None:
        self._states[upload_id] = (offset, hasher)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def drop(self, upload_id: uuid.UUID) -> None:
        self._states.pop(upload_id, None)


@dataclass
class RegistryContext:
    settings: Settings
    stores: dict[uuid.UUID, BlobStore]
    tokens: TokenService
    robots: RobotDirectory
    standing: RobotStanding
    repositories: RepositoryService
    uploads: UploadService
    manifests: ManifestService
    hashers: UploadHashers

    def region_for_host(self, host: str | None) -> Region | None:
        regions = self.settings.effective_regions
        if len(regions) == 1:
            return regions[0]
        wanted = (host or "").lower()
        for region in regions:
            if self.settings.region_hostname(region).lower() == wanted:
                return region
        return None

    def region(self, request: Request) -> Region:
        region = self.region_for_host(request.headers.get("host"))
        if region is None:
            raise RegistryError("NAME_UNKNOWN", "no registry is served at this host name")
        return region

    def service(self, region: Region) -> str:
        return self.settings.region_hostname(region)

    def realm(self, request: Request) -> str:
        base = self.settings.public_url or f"{request.url.scheme}://{request.headers.get('host')}"
        return base.rstrip("/") + "/auth/token"

    def store(self, region: Region) -> BlobStore:
        return self.stores[region.region_id]


def get_context(request: Request) -> RegistryContext:
    context: RegistryContext = request.app.state.registry
    return context
