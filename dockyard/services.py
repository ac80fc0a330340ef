"""Everything the server needs, built once from the settings and handed to both faces."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from dockyard.config import Settings
from dockyard.db import Database
from dockyard.db.changes import ChangeFeed, NoChangeFeed, change_feed_for
from dockyard.db.models import utcnow
from dockyard.domain.audit import AuditLog
from dockyard.domain.browse import BrowseService
from dockyard.domain.credentials import CredentialService, RobotDirectory
from dockyard.domain.manifests import ManifestService
from dockyard.domain.registries import RegistryService
from dockyard.domain.repositories import RepositoryService
from dockyard.domain.uploads import UploadService
from dockyard.domain.verification import VerificationStore
from dockyard.metrics import Metrics
from dockyard.registry.context import RegistryContext, RobotStanding, UploadHashers
from dockyard.registry.tokens import TokenService, load_or_create_signing_key
from dockyard.security import (
    ROBOT_KEY_PURPOSE,
    Cipher,
    SecretHasher,
    derive_key,
    load_or_create_key,
)
from dockyard.storage import BlobStore
from dockyard.storage.factory import build_store
from dockyard.throttle import Throttle
from dockyard.verification import Verifier


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    changes: ChangeFeed
    registries: RegistryService
    credentials: CredentialService
    registry: RegistryContext
    audit: AuditLog
    throttle: Throttle
    metrics: Metrics
    browse: BrowseService
    verifier: Verifier  # started and stopped by the app's lifespan
    # The wall clock: when user API keys and robot passwords expire. Tests travel in time.
    now: Callable[[], datetime] = utcnow

    def close(self) -> None:
        self.changes.close()
        self.db.dispose()


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return get() if get is not None else None


def build_stores(settings: Settings) -> dict[uuid.UUID, BlobStore]:
    """One store per region; regions sharing the top-level setting get a folder each."""
    stores: dict[uuid.UUID, BlobStore] = {}
    for region in settings.effective_regions:
        own = region.storage is not None
        stores[region.region_id] = build_store(
            region.storage or settings.storage,
            settings.data_dir / "storage" / region.slug,
            "" if own else region.slug,
        )
    return stores


def build_services(
    settings: Settings,
    db: Database | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,  # the throttle's; tests travel in time
    now: Callable[[], datetime] = utcnow,  # the wall clock: expiries and grace periods
) -> Services:
    db = db or Database(settings.resolved_database_url)
    key = load_or_create_key(_secret(settings.encryption_key), settings.data_dir)
    cipher = Cipher(key)
    # From the key every replica shares: a digest stored by one verifies on all.
    hasher = SecretHasher(derive_key(key, ROBOT_KEY_PURPOSE))
    registries = RegistryService(db, settings, cipher)
    robots = RobotDirectory(db, hasher, now)
    tokens = TokenService(
        load_or_create_signing_key(_secret(settings.token_signing_key), settings.data_dir),
        issuer=settings.token_issuer,
        lifetime_seconds=settings.token_lifetime_seconds,
    )
    stores = build_stores(settings)
    registry = RegistryContext(
        settings=settings,
        stores=stores,
        tokens=tokens,
        robots=robots,
        standing=RobotStanding(robots, settings.robot_check_seconds),
        repositories=RepositoryService(db),
        uploads=UploadService(db),
        manifests=ManifestService(db),
        hashers=UploadHashers(),
    )
    return Services(
        settings=settings,
        db=db,
        changes=change_feed_for(db) if settings.read_cache else NoChangeFeed(),
        registries=registries,
        credentials=CredentialService(registries, hasher, now),
        registry=registry,
        audit=AuditLog(db, settings.robot_prefix),
        throttle=Throttle(
            per_source=settings.login_failures_per_source,
            per_account=settings.login_failures_per_account,
            window=settings.login_failure_window_seconds,
            max_keys=settings.login_throttle_max_keys,
            clock=clock,
        ),
        metrics=Metrics(shared_dir=settings.metrics_dir),
        browse=BrowseService(db, registries, stores),
        verifier=Verifier.build(VerificationStore(registries), settings),
        now=now,
    )
