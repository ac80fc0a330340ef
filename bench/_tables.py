"""The tables and plot panels of issue 12 (part 8): idle connections, reads and tokens with
1 and N workers, memory per process, the mixed soak."""

from __future__ import annotations

from typing import Any

from _bench import Results
from _rates import RateRow

DIST_COLOR = "#ff7f0e"


def _servers(rows: list[RateRow]) -> list[str]:
    """distribution first, then Dockyard by worker count."""
    names = list(dict.fromkeys(r.server for r in rows))
    return sorted(names, key=lambda n: (n != "distribution", int(n.split()[1]) if " " in n else 0))


def _wide(rows: list[RateRow], cell: Any) -> str:
    servers = _servers(rows)
    out = "| request | connections | " + " | ".join(servers) + " |\n"
    out += "| --- | ---: " + "| ---: " * len(servers) + "|\n"
    keys = list(dict.fromkeys((r.what, r.connections) for r in rows))
    for what, n in keys:
        found = {r.server: r for r in rows if r.what == what and r.connections == n}
        cells = [cell(found[s]) if s in found else "-" for s in servers]
        out += f"| {what} | {n} | " + " | ".join(cells) + " |\n"
    return out + "\n"


def idle_section(results: Results) -> str:
    f = results.facts
    out = [
        "## Idle keep-alive connections held, and fresh requests meanwhile\n\n"
        "| server | connections opened | answered | held | s to open | server RSS MB "
        "| probe p50 ms | probe p99 ms | probe max ms | probes failed |\n"
        "| --- " + "| ---: " * 9 + "|\n"
    ]
    for r in results.idle:
        out.append(
            f"| {r.server} | {r.wanted:,} | {r.opened:,} | {r.held:,} | {r.open_seconds:.1f} "
            f"| {r.rss_mb:,.0f} | {r.percentile(0.5):.1f} | {r.percentile(0.99):.1f} "
            f"| {r.percentile(1):.1f} | {r.probe_errors} |\n"
        )
    out.append(f"\n{f.get('idle note', '')}")
    if "idle capped" in f:
        out.append(f"Capped: {f['idle capped']}.\n")
    return "".join(out) + "\n"


def rates_section(results: Results, seconds: str) -> str:
    rows = results.reads
    reads = [r for r in rows if "token" not in r.what]
    out = ["## Registry reads and tokens per second, 1 worker and one per core\n\n"]
    for title, cell in (
        ("Requests per second", lambda r: f"{r.rate:,.0f}"),
        ("p99 latency, ms", lambda r: f"{r.p99:.1f}"),
        ("Errors (failed or not 2xx)", lambda r: f"{r.errors:,}"),
        ("Server CPU seconds per 1,000 requests (supervisor and workers)", _cpu_cell),
    ):
        out.append(f"### {title}\n\n{_wide(rows, cell)}")
    if reads:
        lowest = min(reads, key=lambda r: r.cpu_per_1000)
        out.append(
            f"Lowest CPU per 1,000 reads: {lowest.server}, {lowest.what} "
            f"({lowest.cpu_per_1000:.2f} s).\n\n"
        )
    out.append(
        f"Each cell is one `ab -k -l -c <connections> -t {seconds}` run (HTTP/1.0 keep-alive; "
        "ab's own CPU in brackets in the CPU table, in cores), after a warm-up run of the "
        "same. The three servers run at once, idle but for the one measured, in rotating "
        "order. Dockyard is sent a Bearer token from its /auth/token (robot, "
        "`repository:<project>/img0:pull,push`), distribution Basic credentials, which it "
        "checks with bcrypt on every request. The image: one 4 KiB layer, an OCI manifest; "
        "`Accept` names the OCI and Docker manifest types. Tokens: `GET /auth/token?service="
        "...&scope=repository:<project>/x:pull,push` with the robot's Basic credentials "
        "(distribution has no token service of its own). Server CPU: utime + stime of the "
        "server's whole process tree from /proc/<pid>/stat, before and after the run, "
        "divided by the requests answered: it should not grow with the workers.\n\n"
    )
    return "".join(out)


def _cpu_cell(r: RateRow) -> str:
    return f"{r.cpu_per_1000:.2f} ({r.client_cpu / r.seconds:.2f})" if r.seconds else "-"


def memory_section(results: Results) -> str:
    out = [
        "## Memory per process, after the rate runs\n\n"
        "| server | after | process | RSS MB | PSS MB |\n| --- | --- | --- | ---: | ---: |\n"
    ]
    for row in results.memory:
        for role, rss, pss in row.processes:
            out.append(f"| {row.server} | {row.after} | {role} | {rss:.0f} | {pss:.0f} |\n")
        rss, pss = sum(p[1] for p in row.processes), sum(p[2] for p in row.processes)
        out.append(f"| {row.server} | {row.after} | **total** | **{rss:.0f}** | **{pss:.0f}** |\n")
    out.append(
        "\nRSS counts every page a process maps, PSS splits the pages several processes share "
        "among them, so the PSS total is what the server costs the machine. Dockyard's "
        "supervisor only starts and watches the workers; each worker is a Python "
        "interpreter of its own with the whole app imported, its own database pool and "
        "caches, so Dockyard's total grows by about one worker's worth per worker. "
        "distribution is one Go process whose goroutines serve every connection.\n\n"
    )
    return "".join(out)


def soak_section(results: Results) -> str:
    out = ["## Mixed soak\n\n"]
    for s in results.soak:
        rate = s.total / s.seconds if s.seconds else 0.0
        out.append(
            f"### {s.server}: {s.clients} clients, {s.seconds:.0f} s, {s.total:,} requests "
            f"({rate:,.0f}/s), **{s.error_count} errors**\n\n"
            "| request | count | errors | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |\n"
        )
        for kind, count in s.counts.items():
            out.append(
                f"| {kind} | {count:,} | {s.errors.get(kind, 0)} | {s.p50[kind]:.1f} "
                f"| {s.p99[kind]:.1f} |\n"
            )
        out.append(
            f"\nCPU: the server {s.server_cpu / s.seconds:.2f} cores, the load generator "
            f"{s.client_cpu / s.seconds:.2f}.\n"
        )
        if s.first_errors:
            out.append("First errors:\n\n" + "".join(f"- `{e}`\n" for e in s.first_errors))
        out.append("\n")
    if results.soak:
        out.append(
            "Every client loops without pause over: a push (15 %: a random layer of 1 KiB up "
            "to the largest size and its config, each a POST and one PUT carrying the blob, "
            "then the manifest PUT under a new tag), a pull (50 %: manifest GET by tag, "
            "checked against its digest, then the layer GET, checked against its digest), a "
            "tag listing (20 %: `?n=100`) and, on Dockyard only, `GET "
            "/v1/container_registries` (15 %). A request that fails or answers an "
            "unexpected status counts as an error. Dockyard's clients get a token per "
            "repository from /auth/token (the token GET rows) and renew it halfway through "
            "its lifetime. The clients are asyncio tasks with an httpx connection each, "
            "spread over forked load processes.\n\n"
        )
    return "".join(out)


def sections(results: Results, seconds: str) -> str:
    out = []
    if results.idle:
        out.append(idle_section(results))
    if results.reads:
        out.append(rates_section(results, seconds))
    if results.memory:
        out.append(memory_section(results))
    if results.soak:
        out.append(soak_section(results))
    return "".join(out)


def has_panels(results: Results) -> bool:
    return bool(results.idle or results.reads)


def panels(results: Results, reads_ax: Any, idle_ax: Any, colors: dict[str, str]) -> None:
    """Reads and tokens per second at the most connections; idle probes' p99 against K."""
    rows = results.reads
    if rows:
        most = max(r.connections for r in rows)
        rows = [r for r in rows if r.connections == most]
        servers = _servers(rows)
        whats = list(dict.fromkeys(r.what for r in rows))
        width = 0.8 / len(servers)
        shades = ["#9ecae1", "#1f77b4", "#08306b", "#6baed6"]
        for i, server in enumerate(servers):
            found = {r.what: r.rate for r in rows if r.server == server}
            xs = [g + (i - (len(servers) - 1) / 2) * width for g in range(len(whats))]
            color = DIST_COLOR if server == "distribution" else shades[i % len(shades)]
            heights = [found.get(w, 0) for w in whats]
            drawn = reads_ax.bar(xs, heights, width, label=server, color=color)
            shown = [f"{h:,.0f}" if h else "" for h in heights]
            reads_ax.bar_label(drawn, labels=shown, fontsize=6)
        labels = [w.replace(" by ", "\nby ").replace("GET /auth", "\nGET /auth") for w in whats]
        reads_ax.set_xticks(range(len(whats)), labels, fontsize=7)
        reads_ax.set_ylabel("requests/s (higher is better)")
        reads_ax.legend(fontsize=8)
        reads_ax.set_title(f"registry reads and tokens, {most} keep-alive connections (ab -k)")
    for server in dict.fromkeys(r.server for r in results.idle):
        mine = [r for r in results.idle if r.server == server]
        idle_ax.plot(
            [r.held for r in mine],
            [r.percentile(0.99) for r in mine],
            marker="o",
            label=server,
            color=colors.get(server, DIST_COLOR if server == "distribution" else "#1f77b4"),
        )
    if results.idle:
        idle_ax.set_xlabel("idle keep-alive connections held")
        idle_ax.set_ylabel("p99 of fresh GET /v2/, ms")
        idle_ax.set_ylim(bottom=0)
        idle_ax.legend(fontsize=8)
        idle_ax.set_title("fresh requests while idle connections are held")
