"""Idle keep-alive connections: how many a server holds, and how fast it answers meanwhile.

K connections each send one `GET /v2/` and read the answer, then sit idle; then fresh
connections send one `GET /v2/` each, one after the other, timed from connect to the last
byte. A connection counts as held if it was answered and the server has not closed it by
the time the probes are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import socket
import struct
import time
from dataclasses import dataclass, field

from _bench import Bench, Server, rotate
from _load import process_tree

REQUEST = b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SPARE = 200  # descriptors this process needs besides the idle connections
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class IdleRow:
    server: str
    wanted: int
    opened: int = 0  # connections whose GET /v2/ was answered
    held: int = 0  # of those, still open after the probes
    open_seconds: float = 0.0
    rss_mb: float = 0.0  # the server's process tree, with the connections held
    probes: list[float] = field(default_factory=list)  # seconds, connect to last byte
    probe_errors: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.probes)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def tree_rss_mb(pid: int) -> float:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in open(f"/proc/{member}/status"):  # noqa: SIM115 (short-lived)
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def room_for_connections() -> int:
    """Lift this process's soft limit of open files to the hard one; the connections that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft - SPARE


async def ask(port: int) -> Stream:
    """Connect, send GET /v2/, read the whole answer (any status); the open connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            await reader.readexactly(int(head[at + 17 : head.index(b"\r\n", at + 2)]))
        elif b"chunked" in lower:
            await reader.readuntil(b"0\r\n\r\n")
        else:
            raise ValueError(f"no length in {head[:200]!r}")
    except BaseException:
        abort(writer)
        raise
    return reader, writer


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, so that thousands of closed connections leave no TIME_WAIT."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def hold_and_probe(server: Server, wanted: int, probes: int) -> IdleRow:
    row = IdleRow(server.name, wanted)
    held: list[Stream] = []
    gate = asyncio.Semaphore(200)  # connects in flight: not more than a listen backlog

    async def one() -> None:
        async with gate:
            with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
                held.append(await asyncio.wait_for(ask(server.port), 60))

    try:
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(wanted)))
        row.open_seconds = time.perf_counter() - start
        row.opened = len(held)
        row.rss_mb = tree_rss_mb(server.pid)
        for _ in range(probes):
            t0 = time.perf_counter()
            try:
                _, writer = await asyncio.wait_for(ask(server.port), 30)
            except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
                row.probe_errors += 1
                continue
            row.probes.append(time.perf_counter() - t0)
            abort(writer)
        await asyncio.sleep(0.2)  # let the loop see any close the server sent meanwhile
        row.held = sum(not r.at_eof() and not w.is_closing() for r, w in held)
    finally:
        for _, writer in held:
            abort(writer)
    await asyncio.sleep(0.5)
    return row


def idle(bench: Bench) -> None:
    """Idle keep-alive connections held, and fresh GET /v2/ probes while they are."""
    args = bench.args
    room = room_for_connections()
    counts = [int(c) for c in args.idle_connections.split(",")]
    fitted = [min(c, room) for c in counts]
    if fitted != counts:
        bench.results.facts["idle capped"] = (
            f"asked for {', '.join(map(str, counts))} connections; this process may open "
            f"{room + SPARE} files (hard limit), so at most {room} were opened"
        )
    work = bench.work / "servers-idle"
    with contextlib.ExitStack() as stack:
        servers = [
            bench.dockyard(stack, work / "dockyard", "idle"),
            bench.distribution(stack, work / "distribution"),
        ]
        for round_, wanted in enumerate(fitted):
            for server in rotate(servers, round_):
                bench.log(f"idle: {server.name}, {wanted:,} connections")
                row = asyncio.run(hold_and_probe(server, wanted, args.probes))
                bench.results.idle.append(row)
                bench.log(
                    f"  held {row.held:,} of {row.opened:,} answered ({row.open_seconds:.1f} s "
                    f"to open), RSS {row.rss_mb:.0f} MB; probes p50 {row.percentile(0.5):.1f} "
                    f"ms, p99 {row.percentile(0.99):.1f} ms, max {row.percentile(1):.1f} ms, "
                    f"{row.probe_errors} failed"
                )
    shutil.rmtree(work)
    bench.results.facts["idle note"] = (
        f"Each of K connections sent one `GET /v2/` (no credentials: the answer is the 401 "
        f"challenge, on both) and read the answer, at most 200 connecting at once; then "
        f"{args.probes} fresh connections sent one `GET /v2/` each, one after another, timed "
        "from connect to the last byte of the answer. Held: answered, and not closed by the "
        "server when the probes were done. RSS: the server's whole process tree with the "
        "connections open. Dockyard closes a keep-alive connection that sends nothing for "
        "its header timeout (20 s by default); distribution keeps idle ones open. The "
        "connections come from the benchmark's own process (one asyncio loop).\n"
    )
