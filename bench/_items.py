"""The measurements of bench/compare.py, one function per item of issue 5."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, urljoin

import httpx
from _bench import Bench, Server, rotate
from _images import MiB, build_layout, random_file, renew
from _load import Target, measure
from _servers import BARE_CMDS, Dockyard, command_line, start_bare
from push_pull import PeakRss

BLOB_CACHES = [
    Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb"),
    Path.home() / ".local/share/containers/cache/blob-info-cache-v1.boltdb",
]


def settle() -> None:
    """Write back dirty pages left by the previous step, so that it does not slow this one."""
    os.sync()


def forget_blobs() -> None:
    """skopeo's blob-info cache outlives registries: without it nothing is skipped or mounted."""
    for path in BLOB_CACHES:
        path.unlink(missing_ok=True)


def skopeo_args(direction: str, creds: str, source: str, dest: str) -> list[str]:
    side = "dest" if direction == "push" else "src"
    flags = [f"--{side}-tls-verify=false", f"--{side}-creds", creds]
    return ["skopeo", "copy", "--preserve-digests", *flags, source, dest]


def run_checked(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        shown = [a if ":" not in a or a.startswith(("oci:", "docker:")) else "***" for a in args]
        raise RuntimeError(f"{shown[:3]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def loopback_bytes() -> int:
    """Bytes sent over the loopback interface so far (by anyone on the machine)."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            return int(counters.split()[0])
    return 0


class Moved:
    """Fails if fewer bytes than `expected` crossed loopback: a blob was skipped or mounted
    (skopeo says so only on a terminal)."""

    def __init__(self, expected: int, what: str) -> None:
        self.expected, self.what = expected, what

    def __enter__(self) -> Moved:
        self.before = loopback_bytes()
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        moved = loopback_bytes() - self.before
        if kind is None and moved < 0.95 * self.expected:
            raise RuntimeError(
                f"{self.what}: {moved:,} bytes on loopback, {self.expected:,} expected"
            )


def timed_copy(server: Server, args: list[str], bench: Bench, step: str, size: int) -> None:
    forget_blobs()
    settle()
    with Moved(size, f"{server.name} {step}"), PeakRss(server.pid) as rss:
        start = time.perf_counter()
        run_checked(args)
        seconds = time.perf_counter() - start
    bench.results.add(bench.results.times, step, server.name, seconds)
    bench.results.peak(step, server.name, rss.peak)
    bench.log(f"  {step}: {server.name} {seconds:.2f} s, peak RSS {rss.peak:.0f} MB")


def skopeo_item(bench: Bench, servers: list[Server], layout: Path, label: str, size: int) -> None:
    """Push an image into a fresh place and pull it back, every round, alternating servers."""
    pulled = bench.work / "pulled"
    for round_ in range(bench.args.runs):
        for server in rotate(servers, round_):
            repos, creds = server.place()
            remote = f"docker://{server.host}/{repos[0]}:v1"
            push = skopeo_args("push", creds, f"oci:{layout}:v1", remote)
            timed_copy(server, push, bench, f"push {label}", size)
            pull = skopeo_args("pull", creds, remote, f"oci:{pulled}:v1")
            timed_copy(server, pull, bench, f"pull {label}", size)
            shutil.rmtree(pulled)


def images(bench: Bench) -> None:
    """Item 1 (and 3): skopeo push and pull of a big image and of one of many small layers."""
    args = bench.args
    with contextlib.ExitStack() as stack:
        servers = bench.servers(stack, bench.work / "servers-images")
        for sizes, label in (
            ([args.big_mib * MiB // args.big_layers] * args.big_layers, "big"),
            ([args.small_kib * 1024] * args.small_layers, "small"),
        ):
            layout = bench.work / f"layout-{label}"
            total = build_layout(layout, sizes)
            gib = total / 1024**3
            size = f"{gib:.3g} GiB" if gib >= 1 else f"{total / MiB:,.0f} MiB"
            if label == "big":
                short, long = size, f"{size}, {len(sizes)} layers"
            else:
                short = f"{len(sizes)} layers"
                long = f"{len(sizes)} layers of {sizes[0] // 1024} KiB"
            bench.results.facts[f"label {label}"] = long
            bench.results.facts[f"short {label}"] = short
            name = f"{long} of random bytes, {total / MiB:,.1f} MiB in all"
            bench.log(f"skopeo push/pull: {name}")
            skopeo_item(bench, servers, layout, label, total)
            shutil.rmtree(layout)
    shutil.rmtree(bench.work / "servers-images")


def floor_upload(source: Path, dest: Path) -> float:
    """Read the bytes in 1 MiB chunks, hash them, write them to the same disk, fsync."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    with source.open("rb", buffering=0) as reader, dest.open("wb", buffering=0) as writer:
        while chunk := reader.read(MiB):
            digest.update(chunk)
            writer.write(chunk)
        os.fsync(writer.fileno())
    digest.hexdigest()
    seconds = time.perf_counter() - start
    dest.unlink()
    return seconds


def floor_download(source: Path) -> float:
    """Read the bytes from the page cache in 1 MiB chunks and write them to /dev/null."""
    start = time.perf_counter()
    with source.open("rb", buffering=0) as reader, open(os.devnull, "wb", buffering=0) as sink:
        while chunk := reader.read(MiB):
            sink.write(chunk)
    return time.perf_counter() - start


def curl(bench: Bench, server: Server, step: str, args: list[str], expect: str, size: int) -> None:
    """One curl transfer; its own `time_total` gives MB/s (10^6 bytes per second)."""
    out = run_checked(["curl", "-sS", "-o", os.devnull, *args])
    code, seconds, sent, received = out.stdout.split()
    if code != expect or max(float(sent), float(received)) < size:
        raise RuntimeError(f"{server.name} {step}: HTTP {code} after {sent}/{received} bytes")
    rate = size / 1e6 / float(seconds)
    bench.results.add(bench.results.rates, step, server.name, rate)
    bench.log(f"  {step}: {server.name} {rate:,.0f} MB/s")


def raw_round(bench: Bench, server: Server, blob: Path, digest: str, size: int) -> None:
    repos, creds = server.place()
    auth = server.authorization(creds, repos[0])
    headers = {"Authorization": auth}
    started = httpx.post(f"{server.base}/v2/{repos[0]}/blobs/uploads/", headers=headers)
    if started.status_code != 202:
        raise RuntimeError(f"{server.name}: upload start {started.status_code} {started.text}")
    location = urljoin(server.base + "/", started.headers["location"])
    put = location + ("&" if "?" in location else "?") + "digest=" + quote(digest)
    common = [
        "-H",
        f"Authorization: {auth}",
        "-w",
        "%{http_code} %{time_total} %{size_upload} %{size_download}",
    ]
    settle()
    with PeakRss(server.pid) as rss:
        upload = ["-X", "PUT", "-T", str(blob), "-H", "Expect:"]
        upload += ["-H", "Content-Type: application/octet-stream", *common, put]
        curl(bench, server, "upload", upload, "201", size)
    bench.results.peak("raw upload", server.name, rss.peak)
    settle()
    with PeakRss(server.pid) as rss:
        curl(
            bench,
            server,
            "download",
            [*common, f"{server.base}/v2/{repos[0]}/blobs/{digest}"],
            "200",
            size,
        )
    bench.results.peak("raw download", server.name, rss.peak)


def raw_blobs(bench: Bench) -> None:
    """Item 2 (and 3): monolithic PUT and GET of a big blob with curl, next to the floor."""
    size = bench.args.raw_mib * MiB
    bench.results.facts["raw blob"] = f"a blob of {bench.args.raw_mib} MiB of random bytes"
    bench.log(f"raw blob upload/download with curl: {bench.args.raw_mib} MiB")
    blob, floor_out = bench.work / "raw.bin", bench.work / "floor.out"
    random_file(blob, size)
    with contextlib.ExitStack() as stack:
        servers = bench.servers(stack, bench.work / "servers-raw")
        for round_ in range(bench.args.runs):
            digest = renew(blob)  # a blob no server has seen, in the page cache
            for who in rotate([None, *servers], round_):
                if who is not None:
                    raw_round(bench, who, blob, digest, size)
                    continue
                settle()
                up = size / 1e6 / floor_upload(blob, floor_out)
                down = size / 1e6 / floor_download(blob)
                bench.results.add(bench.results.rates, "upload", "floor", up)
                bench.results.add(bench.results.rates, "download", "floor", down)
                bench.log(f"  floor: upload {up:,.0f} MB/s, download {down:,.0f} MB/s")
    blob.unlink()
    shutil.rmtree(bench.work / "servers-raw")


def run_together(commands: list[list[str]], logs: Path) -> float:
    """Start every command at once, wait for all; the wall time. Output goes to files."""
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        start = time.perf_counter()
        for i, command in enumerate(commands):
            with (logs / f"{i}.log").open("wb") as log:
                procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        codes = [proc.wait(timeout=900) for proc in procs]
        seconds = time.perf_counter() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    outputs = [(logs / f"{i}.log").read_text() for i in range(len(commands))]
    shutil.rmtree(logs)
    for code, output in zip(codes, outputs, strict=True):
        if code:
            raise RuntimeError(f"a concurrent skopeo copy failed ({code}): {output[-2000:]}")
    return seconds


def concurrent(bench: Bench) -> None:
    """Item 4: N skopeo clients pushing N different images at once; the total time."""
    args = bench.args
    step = "push concurrent"
    facts = bench.results.facts
    facts["label concurrent"] = (
        f"{args.clients} images at once, 1 layer of {args.client_mib} MiB each"
    )
    facts["short concurrent"] = f"{args.clients} at once"
    bench.log(f"concurrent: {facts['label concurrent']}")
    layouts = [bench.work / f"layout-c{i}" for i in range(args.clients)]
    for layout in layouts:
        build_layout(layout, [args.client_mib * MiB])
    with contextlib.ExitStack() as stack:
        servers = bench.servers(stack, bench.work / "servers-concurrent")
        for round_ in range(args.runs):
            for server in rotate(servers, round_):
                repos, creds = server.place(args.clients)
                forget_blobs()
                settle()
                pushes = [
                    skopeo_args(
                        "push", creds, f"oci:{layout}:v1", f"docker://{server.host}/{repo}:v1"
                    )
                    for layout, repo in zip(layouts, repos, strict=True)
                ]
                expected = args.clients * args.client_mib * MiB
                with Moved(expected, f"{server.name} {step}"), PeakRss(server.pid) as rss:
                    seconds = run_together(pushes, bench.work / "logs")
                bench.results.add(bench.results.times, step, server.name, seconds)
                bench.results.peak(step, server.name, rss.peak)
                bench.log(f"  {step}: {server.name} {seconds:.2f} s, peak RSS {rss.peak:.0f} MB")
    for layout in layouts:
        shutil.rmtree(layout)
    shutil.rmtree(bench.work / "servers-concurrent")


def api(bench: Bench) -> None:
    """Item 5: the management API and the token endpoint next to a bare endpoint."""
    args = bench.args
    work = bench.work / "servers-api"
    work.mkdir()
    with contextlib.ExitStack() as stack:
        dockyard = Dockyard(stack, work, args.dockyard_cmd, bench.dockyard_env)
        bench.results.sources["api"] = dockyard.source
        process = command_line(dockyard.pid)
        stack_name = "granian" if "granian" in process else "uvicorn"
        bare_cmd = args.bare_cmd or BARE_CMDS[stack_name]
        found = re.search(r"--workers (\d+)", process)
        workers = int(found[1]) if found else 1
        bare, bare_port = start_bare(stack, work, bare_cmd, bench.env, workers)
        bench.results.facts["Bare endpoint process"] = command_line(bare.pid)
        project, api_token, creds = dockyard.project()
        headers = {"Authorization": f"Bearer {api_token}"}
        with httpx.Client(base_url=dockyard.base, headers=headers, timeout=60) as client:
            for i in range(args.external):
                body = {"name": f"bench-{i}", "registry_type": "custom", "username": "u"}
                body |= {"hostname": f"r{i}.example.com", "password": "p"}
                client.post("/v1/container_registries", json=body).raise_for_status()
            listed = client.get("/v1/container_registries").raise_for_status().json()
        count = len(listed["container_registries"])
        basic = "Basic " + base64.b64encode(creds.encode()).decode()
        scope = quote(f"repository:{project}/img:pull,push", safe="")
        token_path = f"/auth/token?service={quote(dockyard.service, safe='')}&scope={scope}"
        targets = [
            Target(
                f"Dockyard GET /v1/container_registries ({count} registries)",
                dockyard.pid,
                dockyard.port,
                "/v1/container_registries",
                token=api_token,
            ),
            Target(
                "Dockyard GET /auth/token (Basic, 1 scope)",
                dockyard.pid,
                dockyard.port,
                token_path,
                authorization=basic,
            ),
            Target(f"bare Starlette GET /ping ({stack_name})", bare.pid, bare_port, "/ping"),
        ]
        for n in (int(c) for c in args.connections.split(",")):
            for target in targets:
                bench.log(f"API: {target.name} at {n} connection(s)")
                result = asyncio.run(measure(target, n, args.warmup, args.seconds))
                bench.results.api.append(result)
                bench.log(
                    f"  {result.rate:,.0f} requests/s, p50 {result.percentile(0.5):.2f} ms, "
                    f"p99 {result.percentile(0.99):.2f} ms, {result.errors} errors"
                )
    shutil.rmtree(work)
    ratios = []
    for n in sorted({r.connections for r in bench.results.api}):
        bare = next(r for r in bench.results.api if r.connections == n and "bare" in r.target.name)
        for result in bench.results.api:
            if result.connections == n and result is not bare and bare.rate:
                ratios.append(
                    f"- {result.target.name} / bare endpoint at {n} connection(s): "
                    f"{result.rate / bare.rate:.1%}\n"
                )
    bench.results.facts["api note"] = (
        "".join(ratios) + f"\n{args.warmup:g} s of warm-up, then {args.seconds:g} s measured per "
        "row. The load generator (bench/_load.py) runs in the benchmark's own process: one "
        "asyncio coroutine per keep-alive connection; every response must be a 200. CPU: cores "
        "used during the measured seconds by the server's process tree, by the load generator, "
        "and by everything else on the machine.\n"
    )
