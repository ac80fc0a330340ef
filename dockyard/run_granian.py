"""The process `dockyard serve` becomes: granian's supervisor and its worker processes.

granian's standard (multi-process) server: the supervisor only starts, watches and stops
the workers; each worker runs the Rust HTTP stack (with the ASGI pathsend extension that
sends blobs at 1.4-2 GB/s) and builds its own app from the settings, on its own socket
bound with SO_REUSEPORT, so the kernel spreads new connections over the workers. A worker
that dies is started again.

Connections: granian's "backpressure" is how many connections a worker takes on at once;
past it, new ones wait in the listen backlog unanswered. Its default (backlog / workers)
let a few hundred idle keep-alive sockets stall every request, so it is
`max_connections`, and the soft limit of open files is raised to fit.

    python -P -m dockyard.run_granian --workers N [--host H] [--port P] ...
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import resource
import shutil
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from dockyard.log_redaction import protect_access_logs
from dockyard.log_setup import FORMATS, logging_config

DEFAULT_TARGET = "dockyard.asgi:application"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
METRICS_DIR_PREFIX = "dockyard-metrics-"  # what `serve` names the workers' metrics folder
# Descriptors a worker needs besides its connections: the database, blob files, logs.
SPARE_DESCRIPTORS = 256
log = logging.getLogger("dockyard.serve")


def die_with_supervisor(supervisor: int) -> None:
    """A worker ends when its supervisor does, however it ended: workers left behind by a
    supervisor that was SIGKILLed would go on serving, and holding the port, unwatched."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != supervisor:  # it was gone before the line above
        os._exit(1)
    # Forked with the supervisor's own handlers, which only set the supervisor's flags: a
    # stop asked for while this worker builds its app would be lost, and the supervisor
    # would wait for it forever. Until granian installs a worker's handlers, a stop ends it.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def load_app(target: str, *, supervisor: int) -> Any:
    """The app its factory builds, imported from the installed package only: granian's own
    loader puts the working directory first on sys.path, so a `dockyard/` folder there
    would be imported instead of Dockyard, as the server's user."""
    die_with_supervisor(supervisor)
    module, _, name = target.partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module), name)
    return factory()


def raise_open_files(wanted: int) -> int:
    """Lift the soft limit of open files towards the hard one; the connections it fits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    target = min(ceiling, max(soft, wanted + SPARE_DESCRIPTORS))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(16, target - SPARE_DESCRIPTORS)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dockyard.run_granian")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-connections", type=int, default=16384)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--header-timeout", type=float, default=20.0, help="seconds")
    parser.add_argument("--log-level", default="info", choices=[lv.value for lv in LogLevels])
    parser.add_argument("--log-format", default="text", choices=FORMATS)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--access-log-fmt")
    parser.add_argument("target", nargs="?", default=DEFAULT_TARGET, help="module:factory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    protect_access_logs("granian.access")
    connections = raise_open_files(args.max_connections)
    if connections < args.max_connections:
        log.warning(
            "the open-files limit lets each worker hold %d connections, not %d: "
            "raise it (ulimit -n, systemd's LimitNOFILE) to hold more",
            connections,
            args.max_connections,
        )
    server = Server(
        args.target,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        backlog=args.backlog,
        backpressure=connections,
        http1_settings=HTTP1Settings(header_read_timeout=round(args.header_timeout * 1000)),
        log_level=LogLevels(args.log_level),
        log_dictconfig=logging_config(args.log_format, args.log_level),
        log_access=args.access_log,
        log_access_format=args.access_log_fmt,
        respawn_failed_workers=True,
    )
    try:
        server.serve(target_loader=partial(load_app, supervisor=os.getpid()))
    finally:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir and Path(metrics_dir).name.startswith(METRICS_DIR_PREFIX):
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
