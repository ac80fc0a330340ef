"""The process `dockyard serve` becomes: granian serving an ASGI factory in this one process.

granian's usual mode keeps a supervisor process beside the worker that serves; the
supervisor only watches, and held ~31 MB of the ~150 MB peak of a 1 GiB push. Its embedded
server runs the same Rust HTTP stack (and the ASGI pathsend extension that sends blobs at
1.4-2 GB/s) on this process's event loop instead. Restarting a process that died is left
to what runs Dockyard (systemd, Kubernetes, Docker's restart policy), as for any server.

    python -m dockyard.run_granian [--host H] [--port P] [--log-level L] [--log-format F]
                                   [--access-log]
                                   [--access-log-fmt F] [module:factory]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
from collections.abc import Callable
from typing import Any

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server.embed import Server

from dockyard.log_redaction import protect_access_logs
from dockyard.log_setup import FORMATS, logging_config

DEFAULT_TARGET = "dockyard.asgi:application"


class _QuietExperimentalNotice(logging.Filter):
    """granian warns at every start that its embedded mode is experimental; Dockyard's
    tests run every client and the conformance suite against it, so say it once, here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "experimental" not in record.getMessage()


def _factory(target: str) -> Callable[[], Any]:
    module, _, name = target.partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module), name)
    return factory


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dockyard.run_granian")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--log-level", default="info", choices=[lv.value for lv in LogLevels])
    parser.add_argument("--log-format", default="text", choices=FORMATS)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--access-log-fmt")
    parser.add_argument("target", nargs="?", default=DEFAULT_TARGET, help="module:factory")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = Server(
        _factory(args.target),
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        factory=True,
        log_level=LogLevels(args.log_level),
        log_dictconfig=logging_config(args.log_format, args.log_level),
        log_access=args.access_log,
        log_access_format=args.access_log_fmt,
    )
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, server.stop)
    await server.serve()


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    logging.getLogger("_granian").addFilter(_QuietExperimentalNotice())
    protect_access_logs("granian.access")
    try:
        import uvloop  # what granian's worker processes run on, when it is installed
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
