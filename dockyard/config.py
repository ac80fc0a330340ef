"""Settings: one object, read from DOCKYARD_* environment variables and an optional TOML file."""

from __future__ import annotations

import ipaddress
import re
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# A fixed namespace so that a region configured by slug alone keeps the same id on every
# start and on every replica: clients store region ids.
REGION_NAMESPACE = uuid.UUID("6f1c1f55-2f0e-4e59-9d8e-3c0b1e0d5a10")
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")


class StorageSettings(BaseModel):
    """Where a region keeps its blobs: a directory, or a bucket of any S3-compatible store."""

    type: Literal["filesystem", "s3"] = "filesystem"
    path: Path | None = None  # filesystem: default <data_dir>/storage/<region slug>
    fsync: bool = True
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    path_style: bool = False
    part_size_mib: int = Field(default=8, ge=5, le=5 * 1024)
    redirect: bool = False  # serve pulls by redirecting to a presigned URL
    redirect_seconds: int = Field(default=600, ge=30, le=7 * 24 * 3600)
    max_attempts: int = Field(default=10, ge=1, le=50)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageSettings:
        if self.type == "s3" and not self.bucket:
            raise ValueError("S3 storage needs a bucket")
        return self


class Region(BaseModel):
    """A place that serves one managed registry per project."""

    slug: str
    name: str
    id: uuid.UUID | None = None
    hostname: str | None = None
    status: str = "available"
    storage: StorageSettings | None = None  # default: the top-level storage setting

    @field_validator("slug")
    @classmethod
    def _slug_shape(cls, value: str) -> str:
        if not SLUG_RE.match(value):
            raise ValueError("a region slug is lower-case letters, digits and dashes, e.g. fra")
        return value

    @model_validator(mode="after")
    def _default_id(self) -> Region:
        if self.id is None:
            self.id = uuid.uuid5(REGION_NAMESPACE, self.slug)
        return self

    @property
    def region_id(self) -> uuid.UUID:
        assert self.id is not None  # set by the validator
        return self.id


class Settings(BaseSettings):
    """Everything Dockyard can be told. Build one and pass it down; nothing reads the env later."""

    model_config = SettingsConfigDict(
        env_prefix="DOCKYARD_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=None,
    )

    data_dir: Path = Path("data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=1, le=65535)

    platform_name: str = "Nodion"
    timezone: str = "UTC"
    robot_prefix: str = "robot$"
    registry_domain: str | None = None
    regions: list[Region] = Field(default_factory=list)

    encryption_key: SecretStr | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # All of a request's header lines together; more is 431 (dockyard/header_limit.py).
    max_header_bytes: int = Field(default=64 * 1024, ge=8 * 1024)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # text: lines for people; json: one object a line, with the request id (log_setup.py).
    log_format: Literal["text", "json"] = "text"
    # The HTTP server under the app: granian sends files through the ASGI pathsend
    # extension (blob pulls without copying through Python); uvicorn is the common default.
    server: Literal["uvicorn", "granian"] = "granian"
    # Worker processes of `serve` (granian); 0: one per CPU core. Each has its own event
    # loop, database pool and caches; what they must agree on lives in the database.
    workers: int = Field(default=0, ge=0, le=512)
    # Connections one worker holds at once, idle keep-alive ones included; more wait in
    # the listen backlog. Each takes a file descriptor: `serve` raises its soft limit.
    max_connections: int = Field(default=16384, ge=16, le=1_000_000)
    listen_backlog: int = Field(default=4096, ge=128, le=65535)
    # How long a request's headers may take to arrive; a keep-alive connection waiting
    # for its next request is waiting for headers too, so this also ends idle ones.
    header_timeout_seconds: float = Field(default=20, ge=0.1, le=3600)
    # A request body may keep the server waiting this long in all, plus one second for
    # every `body_min_rate` bytes it has sent (Apache's mod_reqtimeout body=20,MinRate=500):
    # a 5 GiB layer over a slow but live link gets through, a dribble does not.
    body_timeout_seconds: float = Field(default=20, ge=0.1, le=3600)
    body_min_rate: int = Field(default=500, ge=1)
    # Set by `serve` for its workers: where they keep the counts /metrics sums up.
    metrics_dir: Path | None = None
    # Repeated /v1 reads answered from memory while the database is unchanged. Off where
    # changes cannot be seen: PostgreSQL behind a pooler that drops LISTEN/NOTIFY.
    read_cache: bool = True
    # When set, GET /metrics wants `Authorization: Bearer <this>`; unset, it is open (bind
    # it to a private network or let the proxy refuse it from outside).
    metrics_token: SecretStr | None = None
    # The web console at / (dockyard/console); false leaves / to nothing but a 404.
    console: bool = True
    # How long a console sign-in lasts; the API token's revocation ends it sooner.
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)

    # The registry (/v2) and its token service.
    public_url: str | None = None
    token_signing_key: SecretStr | None = None
    token_issuer: str = "dockyard"  # noqa: S105 (a name, not a secret)
    token_lifetime_seconds: int = Field(default=30 * 60, ge=30, le=24 * 3600)
    refresh_token_lifetime_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    robot_check_seconds: float = Field(default=30.0, ge=0, le=60)
    max_manifest_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_page_size: int = Field(default=1000, ge=1)
    # Open (unexpired) upload sessions one repository may have; one more is 429 TOOMANYREQUESTS.
    max_uploads_per_repository: int = Field(default=100, ge=1)
    storage: StorageSettings = Field(default_factory=StorageSettings)

    # Garbage collection.
    gc_grace_seconds: float = Field(default=3600, ge=0)
    upload_ttl_seconds: float = Field(default=24 * 3600, ge=60)
    gc_interval_seconds: float = Field(default=0, ge=0)  # 0: only `dockyard gc`

    # Throttling of failed logins (/auth/token) and API tokens (/v1), counted in each
    # process's memory (dockyard/throttle.py): a replica allows this much on its own.
    login_failures_per_account: int = Field(default=10, ge=1)
    login_failures_per_source: int = Field(default=30, ge=1)
    login_failure_window_seconds: float = Field(default=60, gt=0, le=24 * 3600)
    login_throttle_max_keys: int = Field(default=100_000, ge=100)
    # Proxies whose X-Forwarded-For is believed (CIDRs); behind a load balancer, without
    # this, every request would seem to come from the balancer.
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)

    # Checks of external registries (dockyard/verification/): GET /v2/ and the login it
    # challenges for, in the background, when one is created, its host or credentials
    # change, or on POST .../verify. Off: nothing is checked and status stays `available`.
    verify_registries: bool = True
    verify_connect_timeout_seconds: float = Field(default=5, gt=0, le=60)
    # One whole check (resolving, connecting, every request of the login) takes at most this.
    verify_timeout_seconds: float = Field(default=10, gt=0, le=120)
    verify_concurrency: int = Field(default=8, ge=1, le=256)  # checks at once, per process
    # false: checks refuse loopback and private addresses as well. Link-local and cloud
    # metadata addresses are refused always.
    verify_private_addresses: bool = True
    # As docker's insecure-registries: hosts, host:port or CIDRs checked over HTTPS without
    # certificate verification, then plain HTTP. Loopback addresses always are.
    insecure_registries: list[str] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = settings_cls.model_config.get("toml_file")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}, use an IANA name") from exc
        return value

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, value: list[Region]) -> list[Region]:
        slugs = [r.slug for r in value]
        ids = [r.id for r in value]
        if len(set(slugs)) != len(slugs) or len(set(ids)) != len(ids):
            raise ValueError("region slugs and ids must be unique")
        return value

    @field_validator("insecure_registries")
    @classmethod
    def _plain_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
                continue
            except ValueError:
                pass
            if not entry or "/" in entry or any(ch.isspace() for ch in entry):
                raise ValueError(
                    f"insecure registry {entry!r} is neither a host, host:port nor a CIDR"
                )
        return [entry.lower() for entry in value]

    @property
    def verify_stale_seconds(self) -> float:
        """How long a check may seem to run before it is taken for lost (its process died)
        and done again: well past the longest a check can take."""
        return max(60.0, 3 * self.verify_timeout_seconds)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{(self.data_dir / 'dockyard.db').resolve()}"

    @property
    def shared_database(self) -> bool:
        """Several processes may serve from this database: keys must then be settings."""
        return not self.resolved_database_url.startswith("sqlite")

    def missing_replica_settings(self) -> list[str]:
        """What replicas sharing a database must be given rather than generate each."""
        if not self.shared_database:
            return []
        missing = []
        if self.encryption_key is None:
            missing.append("DOCKYARD_ENCRYPTION_KEY")
        if self.token_signing_key is None:
            missing.append("DOCKYARD_TOKEN_SIGNING_KEY")
        return missing

    @property
    def listen_address(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::", "127.0.0.1", "::1") else self.host  # noqa: S104
        return f"{host}:{self.port}"

    @cached_property
    def effective_regions(self) -> list[Region]:
        """The configured regions, or one local region served by this process."""
        if self.regions:
            return self.regions
        return [Region(slug="local", name="Local", hostname=self.listen_address)]

    def region_hostname(self, region: Region) -> str:
        if region.hostname:
            return region.hostname
        if self.registry_domain:
            return f"registry.{region.slug}.{self.registry_domain}"
        return self.listen_address

    def region_by_id(self, region_id: uuid.UUID) -> Region | None:
        for region in self.effective_regions:
            if region.id == region_id:
                return region
        return None


def normalize_database_url(url: str) -> str:
    """Accept the URLs people copy from their provider and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, an optional TOML file and explicit overrides."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if config_file is None:
        return Settings(**clean)

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return FileSettings(**clean)
