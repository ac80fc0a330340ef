"""A mixed soak: concurrent clients pushing, pulling and listing for a while; nothing may fail.

The clients are asyncio tasks over httpx, spread over one process per core (forked from
this one) so that a single Python loop is not what limits the rate; each task loops
without pause: a push (two blobs, each a POST and one PUT carrying it, then the
manifest PUT), a pull (manifest GET by tag, its layer GET, both checked), a tag listing
(`?n=100`), or a /v1 listing (Dockyard only). Dockyard's clients get a Bearer token per
repository from /auth/token and renew it halfway through its lifetime.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import multiprocessing
import os
import random
import shutil
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from _bench import Bench, Server
from _oci import MANIFEST_TYPE, Image, config_for, digest_of, manifest_for, push, put_url
from _rates import tree_cpu
from _servers import Dockyard

WEIGHTS = {"push": 15, "pull": 50, "tags": 20, "v1": 15}
SHOWN_ERRORS = 5


@dataclass
class SoakResult:
    server: str
    clients: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p50: dict[str, float] = field(default_factory=dict)  # ms
    p99: dict[str, float] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    server_cpu: float = 0.0  # seconds
    client_cpu: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class RequestFailedError(Exception):
    """A request of the soak failed; already counted and recorded."""

    pass


@dataclass
class Shared:
    images: list[Image]
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # repo: header, renew
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_errors: list[str] = field(default_factory=list)


class Client:
    """One client: a connection of its own (httpx's pool shared by a hundred tasks costs more
    CPU than the requests), and what its process's clients share: tokens, images, counts."""

    def __init__(self, plan: dict[str, Any], http: httpx.AsyncClient, shared: Shared) -> None:
        self.plan, self.http = plan, http
        self.images, self.tokens = shared.images, shared.tokens
        self.latencies, self.errors = shared.latencies, shared.errors
        self.first_errors = shared.first_errors

    async def call(
        self, kind: str, method: str, url: str, expect: int, **kwargs: Any
    ) -> httpx.Response:
        """One request, timed; an unexpected status or a transport error is a failure."""
        t0 = time.perf_counter()
        try:
            answer = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            self.fail(kind, f"{method} {url}: {error!r}")
        self.latencies[kind].append(time.perf_counter() - t0)
        if answer.status_code != expect:
            self.fail(kind, f"{method} {url}: {answer.status_code} {answer.text[:200]}")
        return answer

    def fail(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < SHOWN_ERRORS:
            self.first_errors.append(f"{kind}: {message}")
        raise RequestFailedError(message)

    async def auth(self, repo: str) -> dict[str, str]:
        if "basic" in self.plan:
            return {"Authorization": self.plan["basic"]}
        header, renew = self.tokens.get(repo, ("", 0.0))
        if time.monotonic() >= renew:
            params = {"service": self.plan["service"], "scope": f"repository:{repo}:pull,push"}
            answer = await self.call(
                "token GET", "GET", self.plan["realm"], 200, params=params, auth=self.plan["robot"]
            )
            body = answer.json()
            header = f"Bearer {body['token']}"
            self.tokens[repo] = (header, time.monotonic() + body.get("expires_in", 60) / 2)
        return {"Authorization": header}

    async def push(self, name: str) -> None:
        repo = random.choice(self.plan["repos"])
        headers = await self.auth(repo)
        layer = os.urandom(random.randint(1024, self.plan["max_bytes"]))
        config = config_for(layer)
        for blob in (layer, config):
            started = await self.call(
                "blob upload POST", "POST", f"/v2/{repo}/blobs/uploads/", 202, headers=headers
            )
            url = put_url(self.plan["base"], started.headers["location"], digest_of(blob))
            blob_headers = {**headers, "Content-Type": "application/octet-stream"}
            await self.call("blob PUT", "PUT", url, 201, content=blob, headers=blob_headers)
        manifest = manifest_for(config, layer)
        await self.call(
            "manifest PUT",
            "PUT",
            f"/v2/{repo}/manifests/{name}",
            201,
            content=manifest,
            headers={**headers, "Content-Type": MANIFEST_TYPE},
        )
        self.images.append(Image(repo, name, digest_of(manifest), digest_of(layer), len(layer)))

    async def pull(self) -> None:
        image = random.choice(self.images)
        headers = {**await self.auth(image.repo), "Accept": MANIFEST_TYPE}
        answer = await self.call(
            "manifest GET", "GET", f"/v2/{image.repo}/manifests/{image.tag}", 200, headers=headers
        )
        if digest_of(answer.content) != image.digest:
            self.fail("manifest GET", f"{image.repo}:{image.tag}: another manifest came back")
        path = f"/v2/{image.repo}/blobs/{image.layer}"
        blob = await self.call("blob GET", "GET", path, 200, headers=headers)
        if "sha256:" + hashlib.sha256(blob.content).hexdigest() != image.layer:
            self.fail("blob GET", f"{path}: {len(blob.content)} bytes of something else")

    async def run(self, number: int, deadline: float) -> None:
        weights = {k: w for k, w in WEIGHTS.items() if k != "v1" or "api_token" in self.plan}
        kinds, chances = list(weights), list(weights.values())
        pushes = 0
        while time.monotonic() < deadline:
            kind = random.choices(kinds, chances)[0]
            try:
                if kind == "push":
                    pushes += 1
                    await self.push(f"p{self.plan['index']}-{number}-{pushes}")
                elif kind == "pull":
                    await self.pull()
                elif kind == "tags":
                    repo = random.choice(self.plan["repos"])
                    path = f"/v2/{repo}/tags/list?n=100"
                    await self.call("tags list", "GET", path, 200, headers=await self.auth(repo))
                else:
                    headers = {"Authorization": f"Bearer {self.plan['api_token']}"}
                    path = "/v1/container_registries"
                    await self.call("/v1 list", "GET", path, 200, headers=headers)
            except RequestFailedError:
                continue
            except Exception as error:
                self.errors[kind] += 1
                if len(self.first_errors) < SHOWN_ERRORS:
                    self.first_errors.append(f"{kind}: {error!r}")


async def one_client(plan: dict[str, Any], shared: Shared, number: int, deadline: float) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=plan["base"], limits=limits, timeout=60) as http:
        await Client(plan, http, shared).run(number, deadline)


async def load(plan: dict[str, Any]) -> dict[str, Any]:
    shared = Shared([Image(**i) for i in plan["images"]])
    deadline = time.monotonic() + plan["seconds"]
    await asyncio.gather(*(one_client(plan, shared, i, deadline) for i in range(plan["clients"])))
    return {
        "latencies": dict(shared.latencies),
        "errors": dict(shared.errors),
        "first_errors": shared.first_errors,
        "cpu": time.process_time(),
    }


def load_process(plan: dict[str, Any]) -> dict[str, Any]:
    random.seed(plan["index"])
    return asyncio.run(load(plan))


def seed(server: Server, count: int) -> tuple[dict[str, Any], list[Image]]:
    """Repositories with one image each, and what the clients need to reach them."""
    if isinstance(server, Dockyard):
        project, api_token, creds = server.project()
        repos = [f"{project}/soak{i}" for i in range(count)]
        user, _, password = creds.partition(":")
        plan = {"realm": server.realm, "service": server.service, "robot": (user, password)}
        plan["api_token"] = api_token
    else:
        repos, creds = server.place(count)
        plan = {"basic": "Basic " + base64.b64encode(creds.encode()).decode()}
    images = []
    for repo in repos:
        headers = {"Authorization": server.authorization(creds, repo)}
        with httpx.Client(base_url=server.base, headers=headers, timeout=60) as http:
            images.append(push(http, repo, "seed"))
    return {**plan, "base": server.base, "repos": repos}, images


def soak_one(bench: Bench, server: Server) -> SoakResult:
    args = bench.args
    plan, images = seed(server, max(4, args.soak_clients // 10))
    procs = max(1, min(args.soak_procs, args.soak_clients))
    plans = [
        {
            **plan,
            "index": i,
            "clients": len(range(i, args.soak_clients, procs)),
            "seconds": args.soak_seconds,
            "max_bytes": args.soak_kib * 1024,
            "images": [vars(image) for image in images],
        }
        for i in range(procs)
    ]
    bench.log(
        f"soak: {server.name}, {args.soak_clients} clients in {procs} processes, "
        f"{args.soak_seconds:g} s"
    )
    before = tree_cpu(server.pid)
    start = time.perf_counter()
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as pool:
        outcomes = list(pool.map(load_process, plans))
    result = SoakResult(server.name, args.soak_clients, time.perf_counter() - start)
    result.server_cpu = tree_cpu(server.pid) - before
    latencies: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        for kind, values in outcome["latencies"].items():
            latencies[kind].extend(values)
        for kind, count in outcome["errors"].items():
            result.errors[kind] = result.errors.get(kind, 0) + count
        result.first_errors.extend(outcome["first_errors"])
        result.client_cpu += outcome["cpu"]
    result.first_errors = result.first_errors[:SHOWN_ERRORS]
    for kind, values in sorted(latencies.items()):
        values.sort()
        result.counts[kind] = len(values)
        result.p50[kind] = values[len(values) // 2] * 1000
        result.p99[kind] = values[min(len(values) - 1, int(0.99 * len(values)))] * 1000
    return result


def soak(bench: Bench) -> None:
    """Item 5: the mixed soak, on Dockyard (default workers) and then on distribution."""
    work = bench.work / "servers-soak"
    with contextlib.ExitStack() as stack:
        servers: list[Server] = [
            bench.dockyard(stack, work / "dockyard", "soak"),
            bench.distribution(stack, work / "distribution"),
        ]
        for server in servers:
            result = soak_one(bench, server)
            bench.results.soak.append(result)
            bench.log(
                f"  {result.total:,} requests in {result.seconds:.0f} s "
                f"({result.total / result.seconds:,.0f}/s), {result.error_count} errors; "
                f"server {result.server_cpu / result.seconds:.2f} cores, load generator "
                f"{result.client_cpu / result.seconds:.2f}"
            )
            for kind, count in result.counts.items():
                bench.log(
                    f"    {kind}: {count:,}, p50 {result.p50[kind]:.1f} ms, "
                    f"p99 {result.p99[kind]:.1f} ms, {result.errors.get(kind, 0)} errors"
                )
            for message in result.first_errors:
                bench.log(f"    error: {message}")
    shutil.rmtree(work)
