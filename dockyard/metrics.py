"""Prometheus metrics: requests by route and status, bytes pushed and pulled, uploads, GC.

Each app gets its own CollectorRegistry (no process-wide default registry), so tests and
several apps in one process never share counters. Routes are labelled by their template
(`/v2/{name}/blobs/{digest}`), never by the path a client sent: repository names would
make the label set unbounded and show one project's names to whoever scrapes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("dockyard.metrics")
UNMATCHED = "unmatched"
_CONVERTOR = re.compile(r":\w+}")
_PARAMETER = re.compile(r"\{[^}]+\}")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Where the worker processes of one server keep their counts (prometheus_client's
    # multiprocess mode, which `serve` turns on for them): a scrape lands on any one
    # worker and must answer for all. None: this process's own counts.
    shared_dir: Path | None = None
    _watched: list[Collector] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.shared_dir is not None and not _multiprocess_values():
            raise RuntimeError(
                "metrics shared between processes need PROMETHEUS_MULTIPROC_DIR set "
                "before prometheus_client is imported"
            )
        r = self.registry
        self.requests = Counter(
            "dockyard_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "dockyard_http_request_duration_seconds",
            "Time from the request's start to the end of its answer",
            ["method", "route"],
            registry=r,
        )
        self.pushed = Counter(
            "dockyard_registry_pushed_bytes", "Blob and manifest bytes accepted by /v2", registry=r
        )
        self.pulled = Counter(
            "dockyard_registry_pulled_bytes", "Blob and manifest bytes served by /v2", registry=r
        )
        self.uploading = Gauge(
            "dockyard_upload_requests_in_progress",
            "Blob upload requests (POST, PATCH, PUT) this server is handling now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.gc_runs = Counter(
            "dockyard_gc_runs",
            "Garbage collections started by this process",
            ["outcome"],
            registry=r,
        )

    def watch(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read when Prometheus scrapes (from the database, say)."""
        collector = _ReadOnScrape(name, help_text, read)
        self.registry.register(collector)
        self._watched.append(collector)

    def scrape(self) -> bytes:
        """The text exposition of every metric, summed over the server's processes."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.shared_dir))  # type: ignore[no-untyped-call]
        for collector in self._watched:
            registry.register(collector)
        return generate_latest(registry)


def _multiprocess_values() -> bool:
    # prometheus_client picks where values live once, when it is imported.
    return bool(values.ValueClass.__name__ == "MmapedValue")


class _ReadOnScrape(Collector):
    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help_text, self.read = name, help_text, read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            value = self.read()
        except Exception as exc:  # the database is down: the other metrics still count
            log.warning("metric %s not read: %s", self.name, type(exc).__name__)
            return
        yield GaugeMetricFamily(self.name, self.help_text, value=value)


class RouteLabels:
    """The template a request is labelled with. /v2's routes are Starlette's, found by the
    endpoint routing leaves in the scope; /v1's are matched against the paths of its OpenAPI
    document (FastAPI keeps included routers in private structures); anything else is
    UNMATCHED, so no client-chosen path ever becomes a label."""

    def __init__(self, routes: Iterable[BaseRoute], documented: Iterable[str]) -> None:
        self.by_endpoint = _endpoint_templates(routes)
        self.static = {t for t in self.by_endpoint.values() if "{" not in t}
        self.static.update(t for t in documented if "{" not in t)
        self.patterns = [(_pattern(t), t) for t in documented if "{" in t]

    def of(self, scope: Scope) -> str:
        template = self.by_endpoint.get(scope.get("endpoint"))
        if template is not None:
            return template
        path: str = scope["path"]
        if path in self.static:
            return path
        for pattern, template in self.patterns:
            if pattern.match(path):
                return template
        return UNMATCHED


def _pattern(template: str) -> re.Pattern[str]:
    """`/a/{x}/b` matches `/a/<one segment>/b`."""
    literal = (re.escape(part) for part in _PARAMETER.split(template))
    return re.compile("^" + "[^/]+".join(literal) + r"\Z")


def _endpoint_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[object, str]:
    templates: dict[object, str] = {}
    for route in routes:
        if isinstance(route, Mount):
            for endpoint, template in _endpoint_templates(
                route.routes, prefix + route.path
            ).items():
                templates.setdefault(endpoint, template)
        elif isinstance(route, Route):
            templates.setdefault(route.endpoint, _CONVERTOR.sub("}", prefix + route.path))
    return templates


class RecordRequests:
    """Outermost middleware: counts and times every HTTP request by route template.

    It runs on every request, the cached registry list's ~15 us included, so the labelled
    children are kept in a dict (prometheus_client's labels() costs a few us a call) and the
    request body is counted only where it is image content."""

    def __init__(self, app: ASGIApp, metrics: Metrics, labels: Callable[[], RouteLabels]) -> None:
        self.app = app
        self.metrics = metrics
        self.labels = labels  # built late: the routes are added after the middleware
        self.children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        status = 500  # what the server answers when the app raises before answering
        sent_bytes = received_bytes = 0

        async def counting_receive() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                if method == "GET":
                    for key, value in message.get("headers", ()):
                        if key.lower() == b"content-length":
                            sent_bytes = int(value)
            await send(message)

        registry = scope["path"].startswith("/v2/")
        pushing = registry and method in ("POST", "PATCH", "PUT")
        uploading = pushing and "/blobs/uploads" in scope["path"]
        if uploading:
            self.metrics.uploading.inc()
        try:
            await self.app(scope, counting_receive if pushing else receive, counting_send)
        finally:
            if uploading:
                self.metrics.uploading.dec()
            route = self.labels().of(scope)
            requests, latency = self._children(method, route, status)
            requests.inc()
            latency.observe(time.perf_counter() - started)
            if 200 <= status < 300 and registry:
                if pushing:  # uploads and manifests: the bodies are image content
                    self.metrics.pushed.inc(received_bytes)
                elif method == "GET" and route.endswith(
                    ("/blobs/{digest}", "/manifests/{reference}")
                ):
                    self.metrics.pulled.inc(sent_bytes)

    def _children(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        key = (method, route, status)
        children = self.children.get(key)
        if children is None:
            children = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.latency.labels(method, route),
            )
            self.children[key] = children
        return children
