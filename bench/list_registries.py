"""Benchmark GET /v1/container_registries against a bare Starlette endpoint (run by hand).

Starts `dockyard serve` (fresh data dir; SQLite, or a fresh PostgreSQL database with
--database-url) with 1 managed + 49 external registries, and a bare Starlette app under the same
uvicorn settings; an asyncio load generator in this process drives both over keep-alive HTTP/1.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import re
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn
from _load import Result, Target, free_port, measure
from sqlalchemy import Engine, create_engine, make_url, text
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dockyard.registry.tokens import generate_key_pem
from dockyard.security import generate_key_text

DOCKYARD = Path(sys.executable).with_name("dockyard")
HEADER = (
    "| endpoint | connections | requests/s | p50 ms | p99 ms | errors | CPU cores: server "
    "| load generator | other processes |\n" + "| --- " + "| ---: " * 8 + "|\n"
)


def serve_bare(port: int, log_level: str) -> None:
    """The reference: one async route returning a small JSON, as `dockyard serve` runs it."""

    async def ping(_request: object) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/ping", ping)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level=log_level, server_header=False)


def start(
    stack: contextlib.ExitStack, cmd: list[str], env: dict[str, str], log: Path, health: str
) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(health, timeout=2).status_code == 200:
                return proc
        time.sleep(0.1)
    sys.exit(f"{health} did not answer 200 within 60 s:\n{log.read_text()[-3000:]}")


def sql(engine: Engine, statement: str) -> None:
    with engine.connect() as conn:
        conn.execute(text(statement))


def fresh_postgres(stack: contextlib.ExitStack, url: str) -> str:
    """Create dockyard_bench_<random> next to the given database; drop it on exit."""
    base = make_url(url).set(drivername="postgresql+psycopg")
    name = f"dockyard_bench_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    stack.callback(admin.dispose)
    sql(admin, f'CREATE DATABASE "{name}"')
    stack.callback(sql, admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return base.set(database=name).render_as_string(hide_password=False)


def machine(database: str) -> str:
    found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    model = found[1].strip() if found else platform.processor() or "unknown"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- Date: {now}\n- CPU: {model}, {os.cpu_count()} cores\n"
        f"- Python {platform.python_version()}, {platform.system()} {platform.release()}\n"
        f"- Database: {database}\n"
    )


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dockyard-bench-")))
    env = {**os.environ, "DOCKYARD_LOG_LEVEL": args.log_level}
    env.pop("DOCKYARD_DATABASE_URL", None)
    database = "SQLite (the default, in a fresh temp data dir)"
    if args.database_url:
        env["DOCKYARD_DATABASE_URL"] = fresh_postgres(stack, args.database_url)
        # A shared database means replicas, and `serve` then wants the keys as settings.
        env["DOCKYARD_ENCRYPTION_KEY"] = generate_key_text()
        env["DOCKYARD_TOKEN_SIGNING_KEY"] = generate_key_pem().decode()
        database = "PostgreSQL (a fresh dockyard_bench_* database, same machine)"
    port, bare_port, data = free_port(), free_port(), tmp / "data"
    base = f"http://127.0.0.1:{port}"
    cmd = [str(DOCKYARD), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir"]
    server = start(stack, [*cmd, str(data)], env, tmp / "dockyard.log", f"{base}/healthz")
    cmd = [sys.executable, __file__, "--log-level", args.log_level, "--serve-bare", str(bare_port)]
    bare = start(stack, cmd, env, tmp / "bare.log", f"http://127.0.0.1:{bare_port}/ping")

    token = (data / "first-project-token").read_text().strip()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for i in range(args.external):
            body = {"name": f"bench-{i}", "registry_type": "custom", "username": "u"}
            body |= {"hostname": f"r{i}.example.com", "password": "p"}
            client.post("/v1/container_registries", json=body).raise_for_status()
        listed = client.get("/v1/container_registries").raise_for_status().json()
    kinds = [r["registry_type"] for r in listed["container_registries"]]
    managed = kinds.count("nodion")
    label = f"GET /v1/container_registries ({managed} managed + {len(kinds) - managed} external)"
    targets = [
        Target(label, server.pid, port, "/v1/container_registries", token),
        Target("bare Starlette GET /ping", bare.pid, bare_port, "/ping"),
    ]
    results: dict[tuple[str, int], Result] = {}
    connections = [int(n) for n in args.connections.split(",")]
    for target in targets:
        for n in connections:
            print(f"measuring {target.name} at {n} connection(s)...", file=sys.stderr)
            result = asyncio.run(measure(target, n, args.warmup, args.seconds))
            results[target.name, n] = result
    ratios = "".join(
        f"- Dockyard list / bare endpoint, requests/s at {n} connection(s): "
        f"{results[label, n].requests / max(results[targets[1].name, n].requests, 1):.1%}\n"
        for n in connections
    )
    rows = "".join(r.row() for r in results.values())
    command = shlex.join([".venv/bin/python", "bench/list_registries.py", *sys.argv[1:]])
    return (
        f"Command: `{command}`\n\n{machine(database)}"
        f"- {args.warmup:g} s warm-up, then {args.seconds:g} s measured per row; "
        f"uvicorn log level {args.log_level}\n\n{HEADER}{rows}\n{ratios}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up time per row")
    parser.add_argument("--connections", default="1,32", help="comma-separated counts")
    parser.add_argument("--external", type=int, default=49, help="external registries")
    parser.add_argument("--database-url", help="PostgreSQL server to create a fresh database on")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level of both")
    parser.add_argument("--output", type=Path, help="also write the Markdown here")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.log_level)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the ExitStack unwinds
    with contextlib.ExitStack() as stack:
        report = run(args, stack)
    print(report)
    if args.output:
        args.output.write_text(report)


if __name__ == "__main__":
    main()
