"""/healthz, /readyz and /metrics: what an operator's probes and Prometheus read."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockyard.storage.filesystem import FilesystemBlobStore
from tests.oci_client import sha256
from tests.support import server_client, start_server


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def value(scraped, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


def requests_of(scraped, method: str, route: str, status: str) -> float:
    return value(scraped, "dockyard_http_requests_total", method=method, route=route, status=status)


def test_readyz_checks_the_database_and_every_store(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert [k for k in body["checks"] if k.startswith("storage:")]


def test_readyz_is_503_and_names_the_store_that_fails(client, services, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")  # a store rooted at a file: every stat fails with ENOTDIR
    [region_id] = services.registry.stores
    services.registry.stores[region_id] = FilesystemBlobStore(blocker)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "checks": {"database": "ok", f"storage:{region_id}": "unreachable"},
    }
    assert client.get("/healthz").status_code == 200  # alive, only not ready


def test_a_database_that_is_down_is_not_ready(make_client) -> None:
    down = make_client(database_url="postgresql://postgres@127.0.0.1:1/dockyard")
    assert down.get("/healthz").status_code == 503
    response = down.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unreachable"
    assert down.get("/metrics").status_code == 200  # what can be counted still is


def test_requests_are_counted_by_route_template_never_by_path(client, oci, robot) -> None:
    name = f"{robot.project_id}/app"
    blob = os.urandom(50_000)
    assert oci.push_blob(name, blob, "post_put").status_code == 201
    assert oci.get_blob(name, sha256(blob)).content == blob
    assert client.get("/v1/container_registries/not-an-id").status_code == 401
    client.get(f"/no/such/{robot.project_id}")

    scraped = scrape(client)
    blob_route = "/v2/{name}/blobs/{digest}"
    assert requests_of(scraped, "GET", blob_route, "200") == 1
    assert requests_of(scraped, "PUT", "/v2/{name}/blobs/uploads/{upload_id}", "201") == 1
    assert requests_of(scraped, "GET", "/v1/container_registries/{registry_id}", "401") == 1
    assert requests_of(scraped, "GET", "unmatched", "404") == 1
    answered = sum(  # the client's first try is a 401 challenge, then it gets a token
        v
        for (metric, pairs), v in scraped.items()
        if metric == "dockyard_http_requests_total"
        and {("method", "GET"), ("route", blob_route)} <= pairs
    )
    assert answered == 2
    timed = value(
        scraped, "dockyard_http_request_duration_seconds_count", method="GET", route=blob_route
    )
    assert timed == answered
    labels = {v for _, pairs in scraped for _, v in pairs}
    assert not [v for v in labels if robot.project_id in v or "app" in v.split("/")]


def test_bytes_pushed_and_pulled_are_counted(client, oci, robot) -> None:
    name = f"{robot.project_id}/app"
    blob = os.urandom(123_457)
    before = scrape(client)
    assert oci.push_blob(name, blob, "chunked", chunk=40_000).status_code == 201
    assert oci.get_blob(name, sha256(blob)).status_code == 200
    assert oci.get_blob(name, sha256(blob), headers={"Range": "bytes=0-99"}).status_code == 206
    after = scrape(client)

    def grew(metric: str) -> float:
        return value(after, metric) - value(before, metric)

    assert grew("dockyard_registry_pushed_bytes_total") == len(blob)
    assert grew("dockyard_registry_pulled_bytes_total") == len(blob) + 100


def test_upload_sessions_are_read_from_the_database(client, oci, robot) -> None:
    name = f"{robot.project_id}/app"
    assert value(scrape(client), "dockyard_upload_sessions") == 0
    location = oci.start_upload(name).headers["location"]
    oci.start_upload(name)
    assert value(scrape(client), "dockyard_upload_sessions") == 2
    assert oci.request("DELETE", location, scope=f"repository:{name}:push").status_code == 204
    assert value(scrape(client), "dockyard_upload_sessions") == 1
    assert value(scrape(client), "dockyard_upload_requests_in_progress") == 0


def test_a_metrics_token_guards_the_scrape(make_client) -> None:
    guarded = make_client(metrics_token="scrape-me-0f3c")
    refused = guarded.get("/metrics")
    assert refused.status_code == 401
    assert "DOCKYARD_METRICS_TOKEN" in refused.json()["errors"][0]
    assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert scrape(guarded, Authorization="Bearer scrape-me-0f3c")


@pytest.fixture
def real_server(tmp_path: Path):
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}")
    yield srv
    srv.stop()
    print(srv.log()[-5000:])  # shown by pytest only when the test failed


def test_a_real_server_answers_its_probes_and_counts_what_it_sends(real_server) -> None:
    """Under granian a blob leaves through the pathsend extension, not as body messages:
    its bytes are still counted."""
    assert httpx.get(f"{real_server.url}/readyz", timeout=10).json()["status"] == "ready"
    oci, project_id = server_client(real_server, real_server.env["DOCKYARD_DATABASE_URL"])
    blob = os.urandom(300_000)
    assert oci.push_blob(f"{project_id}/app", blob).status_code == 201
    assert oci.get_blob(f"{project_id}/app", sha256(blob)).content == blob
    scraped = samples(httpx.get(f"{real_server.url}/metrics", timeout=10).text)
    assert requests_of(scraped, "GET", "/readyz", "200") == 1
    assert value(scraped, "dockyard_registry_pushed_bytes_total") == len(blob)
    assert value(scraped, "dockyard_registry_pulled_bytes_total") == len(blob)
