"""Dockyard next to CNCF distribution (Debian's `docker-registry`), side by side on loopback.

One command (`make bench`, or `.venv/bin/python bench/compare.py [--runs 5]`) measures, in the
same run and alternating the two servers in every round (issue 5):

1. skopeo push and pull of a 1 GiB image of 4 random layers and of an image of 200 small
   layers: median time of each server and the ratio Dockyard / distribution;
2. a raw 1 GiB blob uploaded (one monolithic PUT) and downloaded with curl, in MB/s, next to
   the machine's floor measured in the same run;
3. each server's peak RSS during 1 and 2 (sampled every 20 ms);
4. eight skopeo clients pushing eight different images at once: total time;
5. Dockyard's GET /v1/container_registries (50 registries) and GET /auth/token at 1 and 32
   connections, next to a bare ASGI endpoint on the same server stack;

and (issue 12, part 8), each item also alone with `--items NAME`:

- idle: 1,000, 5,000 and 10,000 idle keep-alive connections held, and 20 fresh GET /v2/
  timed meanwhile (`--idle-connections`, `--probes`);
- reads: manifest GET and HEAD by tag and by digest, blob HEAD with `ab -k` at 1 and 32
  connections on distribution, Dockyard with 1 worker and with one per core: req/s, p99,
  errors, server CPU seconds per 1,000 requests; then RSS per process;
- tokens: GET /auth/token the same way, Dockyard 1 worker against one per core;
- soak: 200 clients pushing, pulling and listing for `--soak-seconds` (600) on each server.

It writes docs/performance.md (tables, the machine, the date) and docs/performance.png.
Needs skopeo, curl, docker-registry, htpasswd and ab (apt-get install skopeo curl
docker-registry apache2-utils) and matplotlib (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import Bench, Results
from _connections import idle
from _items import api, concurrent, images, raw_blobs
from _rates import reads, tokens
from _report import ROOT, load_average, machine, markdown, plot
from _servers import DOCKYARD_CMD
from _soak import soak

ITEMS = {
    "images": images,
    "raw": raw_blobs,
    "concurrent": concurrent,
    "api": api,
    "idle": idle,
    "reads": reads,
    "tokens": tokens,
    "soak": soak,
}
TOOLS = {
    "skopeo": "skopeo",
    "curl": "curl",
    "docker-registry": "docker-registry",
    "htpasswd": "apache2-utils",
    "ab": "apache2-utils",
}
# Settings that would make Dockyard differ from its defaults or from distribution's setup.
DROPPED = (
    "DOCKYARD_DATA_DIR",
    "DOCKYARD_DATABASE_URL",
    "DOCKYARD_CONFIG",
    "DOCKYARD_HOST",
    "DOCKYARD_PORT",
    "DOCKYARD_STORAGE",
    "DOCKYARD_REGIONS",
    "DOCKYARD_LOG_LEVEL",
    "DOCKYARD_SERVER",
    "DOCKYARD_WORKERS",
    "DOCKYARD_MAX_CONNECTIONS",
    "DOCKYARD_LISTEN_BACKLOG",
    "DOCKYARD_HEADER_TIMEOUT_SECONDS",
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add = parser.add_argument
    add("--runs", type=int, default=5, help="rounds of every copy and transfer")
    add("--items", default=",".join(ITEMS), help="which measurements, comma-separated")
    add(
        "--dockyard-cmd",
        default=DOCKYARD_CMD,
        help="how to start Dockyard; {python}, {port} and {data_dir} are filled in",
    )
    add(
        "--bare-cmd",
        help="how to start the bare endpoint ({python}, {port}, {workers}; module "
        "_bare:create_app); default: the stack Dockyard's process turns out to run",
    )
    add("--big-mib", type=int, default=1024, help="size of the big image")
    add("--big-layers", type=int, default=4)
    add("--small-layers", type=int, default=200)
    add("--small-kib", type=int, default=64, help="size of each small layer")
    add("--raw-mib", type=int, default=1024, help="size of the raw blob")
    add("--clients", type=int, default=8, help="concurrent skopeo pushes")
    add("--client-mib", type=int, default=64, help="size of each concurrent client's image")
    add("--connections", default="1,32", help="API load: connection counts")
    add("--seconds", type=float, default=10.0, help="API load: measured seconds per row")
    add("--warmup", type=float, default=2.0, help="API load: warm-up seconds per row")
    add("--external", type=int, default=49, help="external registries besides the managed one")
    add(
        "--idle-connections",
        default="1000,5000,10000",
        help="idle keep-alive connections held, comma-separated",
    )
    add("--probes", type=int, default=20, help="fresh GET /v2/ probes while they are held")
    add("--soak-seconds", type=float, default=600.0, help="mixed soak: seconds per server")
    add("--soak-clients", type=int, default=200, help="mixed soak: concurrent clients")
    add(
        "--soak-procs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="mixed soak: load generator processes the clients are spread over",
    )
    add("--soak-kib", type=int, default=64, help="mixed soak: largest pushed layer")
    add("--tmp-dir", type=Path, help="where the temp dir goes (default: the system's)")
    add("--output-dir", type=Path, default=ROOT / "docs", help="performance.md/.png go here")
    return parser.parse_args()


def needed_gib(args: argparse.Namespace) -> float:
    """Disk at the worst moment: the source image, both servers' copies, one pulled copy."""
    big = args.big_mib / 1024
    return max(4 * big, 4 * args.raw_mib / 1024, 3 * args.clients * args.client_mib / 1024) + 1


def busy_seconds() -> tuple[float, float]:
    """CPU seconds so far: of the whole machine (not idle), and of this process and the
    children it has waited for (the servers, skopeo, curl, and their own children)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split(maxsplit=11)[1:9]]
    machine = (sum(ticks) - ticks[3] - ticks[4] - ticks[7]) / os.sysconf("SC_CLK_TCK")
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return machine, own


def main() -> None:
    args = parse()
    missing = [pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)]
    if missing:
        sys.exit(f"needed: apt-get install {' '.join(sorted(set(missing)))}")
    unknown = set(args.items.split(",")) - set(ITEMS)
    if unknown:
        sys.exit(f"unknown items {sorted(unknown)}; known: {', '.join(ITEMS)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks run
    started = time.monotonic()
    cpu_before = busy_seconds()
    work = Path(tempfile.mkdtemp(prefix="dockyard-compare-", dir=args.tmp_dir))
    try:
        print(
            subprocess.run(["df", "-h", str(work)], capture_output=True, text=True).stdout,
            file=sys.stderr,
        )
        free = shutil.disk_usage(work).free / 1024**3
        if free < needed_gib(args):
            sys.exit(f"{free:.1f} GiB free next to {work}; this run needs {needed_gib(args):.0f}")
        facts = machine(work)
        env = dict(os.environ)
        dockyard_env = {k: v for k, v in env.items() if not k.startswith(DROPPED)}
        dockyard_env["DOCKYARD_LOG_LEVEL"] = "warning"
        bench = Bench(args, work, env, dockyard_env, Results())
        for name in args.items.split(","):
            ITEMS[name](bench)
        facts["load average at end"] = load_average()
        wall = time.monotonic() - started
        machine_cpu, own_cpu = (b - a for a, b in zip(cpu_before, busy_seconds(), strict=True))
        facts["other load"] = (
            f"{max(0.0, machine_cpu - own_cpu) / wall:.2f} cores on average were busy with "
            f"processes other than this benchmark's (of {os.cpu_count()}); this one used "
            f"{own_cpu / wall:.2f}"
        )
        minutes, seconds = divmod(wall, 60)
        facts["wall time of the run"] = f"{minutes:.0f} min {seconds:.0f} s"
        command = shlex.join([".venv/bin/python", "bench/compare.py", *sys.argv[1:]])
        args.output_dir.mkdir(parents=True, exist_ok=True)
        text = markdown(bench.results, facts, command, args.runs, f"{max(1, round(args.seconds))}")
        (args.output_dir / "performance.md").write_text(text)
        plot(bench.results, args.output_dir / "performance.png")
        print(text)
        print(f"wrote {args.output_dir / 'performance.md'} and performance.png", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
