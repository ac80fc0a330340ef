"""Registry reads and token issuance per second with ab, 1 worker against one per core.

Each row is one `ab -k` run (HTTP/1.0 keep-alive connections, ab's own CPU from wait4)
after a warm-up run of the same; the server's CPU is the utime + stime of its whole process
tree (supervisor and workers) from /proc/<pid>/stat, before and after.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from _bench import Bench, Server, rotate
from _load import _cpu_seconds, process_tree
from _oci import MANIFEST_TYPE, push
from _servers import Dockyard

ACCEPT = f"{MANIFEST_TYPE}, application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class RateRow:
    server: str
    what: str
    connections: int
    requests: int = 0
    seconds: float = 0.0
    errors: int = 0
    p50: float = 0.0  # ms
    p99: float = 0.0
    server_cpu: float = 0.0  # CPU seconds of the server's process tree during the run
    client_cpu: float = 0.0  # of ab

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.server_cpu / self.requests * 1000 if self.requests else 0.0


@dataclass
class MemoryRow:
    server: str
    after: str  # which item had just run
    processes: list[tuple[str, float, float]] = field(default_factory=list)  # role, RSS, PSS


def tree_cpu(pid: int) -> float:
    return sum(_cpu_seconds(p) for p in process_tree(pid))


def ab(
    url: str, headers: list[str], connections: int, seconds: int, head: bool, csv: Path
) -> RateRow:
    """One ab run; latencies from its percentile table (-e), errors: failed and non-2xx."""
    cmd = ["ab", "-q", "-k", "-l", "-c", str(connections), "-t", str(seconds)]
    cmd += ["-n", "100000000", "-e", str(csv), "-s", "30"]
    for header in headers:
        cmd += ["-H", header]
    cmd += [*(["-i"] if head else []), url]
    row = RateRow("", "", connections)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"ab failed ({proc.returncode}): {output[-2000:]}")

    def number(label: str) -> float:
        found = re.search(rf"^{label}:\s+([\d.]+)", output, re.M)
        return float(found[1]) if found else 0.0

    row.requests = int(number("Complete requests"))
    row.seconds = number("Time taken for tests")
    row.errors = int(number("Failed requests") + number("Non-2xx responses"))
    row.client_cpu = usage.ru_utime + usage.ru_stime
    table = dict(line.split(",") for line in csv.read_text().splitlines()[1:])
    row.p50, row.p99 = float(table["50"]), float(table["99"])
    return row


def run_row(
    bench: Bench, server: Server, what: str, path: str, auth: str, n: int, head: bool
) -> None:
    args = bench.args
    url, headers = f"{server.base}{path}", [f"Authorization: {auth}", f"Accept: {ACCEPT}"]
    csv = bench.work / "ab.csv"
    ab(url, headers, n, max(1, round(args.warmup)), head, csv)  # warm-up, not counted
    before = tree_cpu(server.pid)
    row = ab(url, headers, n, max(1, round(args.seconds)), head, csv)
    row.server_cpu = tree_cpu(server.pid) - before
    row.server, row.what = server.name, what
    bench.results.reads.append(row)
    bench.log(
        f"  {what}, {server.name}, {n} conn: {row.rate:,.0f}/s, p99 {row.p99:.1f} ms, "
        f"{row.errors} errors, {row.cpu_per_1000:.2f} server CPU s per 1,000"
    )


def memory(bench: Bench, server: Server, after: str) -> None:
    """RSS and PSS of each of the server's processes (PSS splits shared pages among them)."""
    row = MemoryRow(server.name, after)
    for i, pid in enumerate(process_tree(server.pid)):
        role = "process" if not isinstance(server, Dockyard) else "supervisor"
        if i:
            role = f"worker {i}"
        values = {}
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0]) / 1024
        row.processes.append((role, values.get("Rss", 0.0), values.get("Pss", 0.0)))
    bench.results.memory.append(row)
    total = sum(p[1] for p in row.processes)
    bench.log(f"  RSS after {after}: {server.name} {total:.0f} MB in {len(row.processes)}")


def cores() -> int:
    return len(os.sched_getaffinity(0))


def reads(bench: Bench) -> None:
    """Manifest GET/HEAD by tag and by digest, blob HEAD: distribution, Dockyard 1 and N."""
    work = bench.work / "servers-reads"
    with contextlib.ExitStack() as stack:
        servers: list[Server] = [
            bench.distribution(stack, work / "distribution"),
            bench.dockyard(stack, work / "dockyard-1", "reads", workers=1),
            bench.dockyard(stack, work / "dockyard-n", "reads", workers=cores()),
        ]
        auths, paths = {}, {}
        for server in servers:
            repos, creds = server.place()
            auths[server.name] = server.authorization(creds, repos[0])
            headers = {"Authorization": auths[server.name]}
            with httpx.Client(base_url=server.base, headers=headers, timeout=60) as client:
                image = push(client, repos[0], "v1")
            manifests = f"/v2/{image.repo}/manifests"
            paths[server.name] = {
                "manifest GET by tag": (f"{manifests}/{image.tag}", False),
                "manifest GET by digest": (f"{manifests}/{image.digest}", False),
                "manifest HEAD by tag": (f"{manifests}/{image.tag}", True),
                "manifest HEAD by digest": (f"{manifests}/{image.digest}", True),
                "blob HEAD": (f"/v2/{image.repo}/blobs/{image.layer}", True),
            }
        round_ = 0
        for n in (int(c) for c in bench.args.connections.split(",")):
            for what in paths[servers[0].name]:
                bench.log(f"reads: {what} at {n} connection(s)")
                for server in rotate(servers, round_):
                    path, head = paths[server.name][what]
                    run_row(bench, server, what, path, auths[server.name], n, head)
                round_ += 1
        for server in servers:
            memory(bench, server, "reads")
    shutil.rmtree(work)


def tokens(bench: Bench) -> None:
    """GET /auth/token with Basic robot credentials, one scope: Dockyard 1 and N workers."""
    work = bench.work / "servers-tokens"
    with contextlib.ExitStack() as stack:
        servers = [
            bench.dockyard(stack, work / "dockyard-1", "tokens", workers=1),
            bench.dockyard(stack, work / "dockyard-n", "tokens", workers=cores()),
        ]
        requests = {}
        for server in servers:
            project, _, creds = server.project()
            scope = quote(f"repository:{project}/x:pull,push", safe="")
            path = f"/auth/token?service={quote(server.service, safe='')}&scope={scope}"
            requests[server.name] = (path, "Basic " + base64.b64encode(creds.encode()).decode())
        for round_, n in enumerate(int(c) for c in bench.args.connections.split(",")):
            bench.log(f"tokens: GET /auth/token at {n} connection(s)")
            for server in rotate(servers, round_):
                path, auth = requests[server.name]
                run_row(bench, server, "GET /auth/token", path, auth, n, head=False)
        for server in servers:
            memory(bench, server, "tokens")
    shutil.rmtree(work)
