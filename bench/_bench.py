"""What every item of bench/compare.py shares: its settings, the servers, the results."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _load import Result, process_tree
from _servers import Distribution, Dockyard, command_line

if TYPE_CHECKING:
    from _connections import IdleRow
    from _rates import MemoryRow, RateRow
    from _soak import SoakResult

Server = Dockyard | Distribution


@dataclass
class Results:
    times: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(dict))
    rss: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    rates: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(dict))
    api: list[Result] = field(default_factory=list)
    idle: list[IdleRow] = field(default_factory=list)
    reads: list[RateRow] = field(default_factory=list)  # manifests, blobs and tokens
    memory: list[MemoryRow] = field(default_factory=list)
    soak: list[SoakResult] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # item -> the code Dockyard ran

    def add(
        self, table: dict[str, dict[str, list[float]]], step: str, who: str, value: float
    ) -> None:
        table[step].setdefault(who, []).append(value)

    def peak(self, step: str, who: str, mb: float) -> None:
        self.rss[step][who] = max(self.rss[step].get(who, 0.0), mb)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    env: dict[str, str]  # for distribution, curl, skopeo
    dockyard_env: dict[str, str]
    results: Results

    def servers(self, stack: contextlib.ExitStack, work: Path) -> list[Server]:
        work.mkdir()
        dockyard = Dockyard(stack, work, self.args.dockyard_cmd, self.dockyard_env)
        self.results.sources[work.name.removeprefix("servers-")] = dockyard.source
        distribution = Distribution(stack, work, self.env)
        self.results.facts["Dockyard process"] = command_line(dockyard.pid)
        self.results.facts["Dockyard auth"] = dockyard.auth
        self.results.facts["distribution auth"] = distribution.auth
        self.results.facts["distribution version"] = distribution.version
        return [dockyard, distribution]

    def dockyard(
        self, stack: contextlib.ExitStack, work: Path, item: str, workers: int | None = None
    ) -> Dockyard:
        """Dockyard in a folder of its own, with `workers` worker processes (None: its
        default, one per core); returns once every worker runs."""
        work.mkdir(parents=True)
        env = dict(self.dockyard_env)
        if workers is not None:
            env["DOCKYARD_WORKERS"] = str(workers)
        server = Dockyard(stack, work, self.args.dockyard_cmd, env)
        wanted = workers or len(os.sched_getaffinity(0))
        deadline = time.monotonic() + 60
        while len(process_tree(server.pid)) < wanted + 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        server.workers = len(process_tree(server.pid)) - 1
        server.name = f"Dockyard {server.workers} worker{'s' if server.workers > 1 else ''}"
        self.results.sources[item] = server.source
        self.results.facts[f"{server.name} process"] = command_line(server.pid)
        self.results.facts["Dockyard auth"] = server.auth
        return server

    def distribution(self, stack: contextlib.ExitStack, work: Path) -> Distribution:
        work.mkdir(parents=True)
        server = Distribution(stack, work, self.env)
        self.results.facts["distribution auth"] = server.auth
        self.results.facts["distribution version"] = server.version
        return server

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rotate(items: list[Any], round_: int) -> list[Any]:
    """Round 0: a, b, c; round 1: b, c, a; ... so that no one always goes first."""
    shift = round_ % len(items)
    return items[shift:] + items[:shift]
