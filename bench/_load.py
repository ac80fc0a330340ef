"""A lean asyncio HTTP/1.1 load generator, shared by the benchmarks.

One coroutine per keep-alive connection: send, read the headers, read Content-Length bytes,
time it with `time.perf_counter`. CPU is counted for the server's whole process tree (a server
may serve from worker processes).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    pid: int
    port: int
    path: str
    token: str | None = None  # sent as `Authorization: Bearer <token>`
    authorization: str | None = None  # or this whole header value (e.g. "Basic ...")


@dataclass
class Result:
    target: Target
    connections: int
    seconds: float
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # cores: server, load generator, rest

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def row(self) -> str:
        rate, p50, p99 = self.rate, self.percentile(0.5), self.percentile(0.99)
        cells = f"| {self.connections} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {self.errors} |"
        return f"| {self.target.name} {cells}" + "".join(f" {c:.2f} |" for c in self.cpu) + "\n"

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def worker(target: Target, request: bytes, start: float, end: float, out: Result) -> None:
    """One keep-alive connection: request, headers, Content-Length bytes, again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        while (t0 := time.perf_counter()) < end:
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"\r\ncontent-length:")
                if at < 0:
                    raise ValueError("no Content-Length")
                await reader.readexactly(int(head[at + 17 : head.index(b"\r\n", at + 2)]))
            except (OSError, ValueError, asyncio.IncompleteReadError):
                out.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
                continue
            t1 = time.perf_counter()
            if t0 >= start and t1 <= end:
                out.requests += 1
                out.latencies.append(t1 - t0)
                out.errors += head[9:12] != b"200"
    finally:
        writer.close()


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants that are still alive."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_now(pid: int) -> tuple[float, float, float]:
    """CPU seconds so far of the server (its process tree), of this process, of the machine."""
    server = sum(_cpu_seconds(p) for p in process_tree(pid))
    ticks = [int(x) for x in Path("/proc/stat").read_text().split(maxsplit=11)[1:9]]
    machine = sum(ticks) - ticks[3] - ticks[4] - ticks[7]  # less idle, iowait and steal
    return server, time.process_time(), machine / TICKS


async def measure(target: Target, n: int, warmup: float, seconds: float) -> Result:
    authorization = target.authorization or (f"Bearer {target.token}" if target.token else "")
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    request = f"GET {target.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    start = time.perf_counter() + warmup
    end = start + seconds
    result = Result(target, n, seconds)
    tasks = [asyncio.create_task(worker(target, request, start, end, result)) for _ in range(n)]
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    before = cpu_now(target.pid)
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    after = cpu_now(target.pid)
    server, client, machine = ((b - a) / seconds for a, b in zip(before, after, strict=True))
    result.cpu = (server, client, max(0.0, machine - server - client))
    await asyncio.gather(*tasks)
    return result


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])
