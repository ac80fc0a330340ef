"""docs/performance.md and docs/performance.png from the results of bench/compare.py."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
from pathlib import Path

from _bench import Results
from _tables import has_panels, panels, sections

ROOT = Path(__file__).resolve().parent.parent
DY, DIST, FLOOR = "Dockyard", "distribution", "floor"
API_HEADER = (
    "| endpoint | connections | requests/s | p50 ms | p99 ms | errors | CPU cores: server "
    "| load generator | other processes |\n" + "| --- " + "| ---: " * 8 + "|\n"
)


def _output(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    except FileNotFoundError:
        return "not installed"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def step_label(step: str, facts: dict[str, str], short: bool = False) -> str:
    """'push big' -> 'push 1 GiB, 4 layers', from the labels the items recorded."""
    verb, _, kind = step.partition(" ")
    key = f"{'short' if short else 'label'} {kind}"
    if key not in facts:
        return step.replace(" ", "\n", 1) if short else step
    return f"{verb}{chr(10) if short else ' '}{facts[key]}"


def machine(work: Path) -> dict[str, str]:
    """Facts about the machine, taken when the run starts."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text()
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    disk = shutil.disk_usage(work)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{found[1].strip() if found else platform.processor()}, {os.cpu_count()} cores",
        "memory": f"{int(mem[1]) / 1024**2:.1f} GiB" if mem else "unknown",
        "disk": f"{disk.free / 1024**3:.0f} GiB free of {disk.total / 1024**3:.0f} GiB "
        f"on the file system of {work.parent} (both servers' storage, the floor's output)",
        "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "load average at start": load_average(),
        "skopeo": _output("skopeo", "--version"),
        "curl": _output("curl", "--version"),
        "ab": _output("ab", "-V"),
    }


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _cell(values: list[float] | None, digits: int = 2) -> str:
    if not values:
        return "-"
    text = f"{statistics.median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}-{max(values):,.{digits}f})"
    return text


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def _rss(results: Results, step: str, who: str) -> str:
    value = results.rss.get(step, {}).get(who)
    return f"{value:.0f}" if value is not None else "-"


def targets(results: Results) -> str:
    rows = []
    for step in ("push big", "pull big", "push small", "pull small"):
        times = results.times.get(step, {})
        dy, dist = _median(times.get(DY)), _median(times.get(DIST))
        if dy is not None and dist:
            rows.append(
                (
                    f"skopeo {step_label(step, results.facts)}: Dockyard / distribution ≤ 1.0x",
                    f"{dy / dist:.2f}x",
                    dy / dist <= 1.0,
                )
            )
    up = results.rates.get("upload", {})
    if up.get(DY) and up.get(FLOOR):
        ratio = _median(up[DY]) / _median(up[FLOOR])  # type: ignore[operator]
        rows.append(("raw upload ≥ 0.8x the floor", f"{ratio:.2f}x", ratio >= 0.8))
    down = results.rates.get("download", {})
    if down.get(DY):
        rate = _median(down[DY]) or 0.0
        rows.append(("raw download ≥ 1,000 MB/s", f"{rate:,.0f} MB/s", rate >= 1000))
    if DY in results.rss.get("push big", {}):
        peak = results.rss["push big"][DY]
        rows.append(("peak RSS during the big push < 150 MB", f"{peak:.0f} MB", peak < 150))
    listing = {r.connections: r for r in results.api if "container_registries" in r.target.name}
    bare = {r.connections: r for r in results.api if "bare" in r.target.name}
    if 32 in listing and 32 in bare and bare[32].rate:
        ratio = listing[32].rate / bare[32].rate
        rows.append(
            ("list at 32 connections ≥ 0.5x the bare endpoint", f"{ratio:.2f}x", ratio >= 0.5)
        )
    body = "".join(f"| {t} | {m} | {'yes' if ok else '**no**'} |\n" for t, m, ok in rows)
    return "| target | measured | met |\n| --- | ---: | :---: |\n" + body


def markdown(
    results: Results, facts: dict[str, str], command: str, runs: int, seconds: str = "10"
) -> str:
    f = {**facts, **results.facts}
    measured = ", ".join(sorted(set(results.sources.values()))) or "unknown"
    out = [
        "# Performance: Dockyard next to CNCF distribution\n\n",
        f"Dockyard commit measured: `{measured}`.\n\n",
        f"Generated by `{command}` (`make bench`); every number below is from that one run. "
        "Both servers ran on loopback on the same machine, at the same time, with their storage "
        "on the same disk, and were measured in alternation: each round runs every contender "
        "once, and who goes first rotates from round to round, so that drift of the machine "
        "hits both. Medians, with the range over the runs in brackets.\n\n",
        "![Dockyard next to distribution](performance.png)\n\n## Machine\n\n",
    ]
    for key in (
        "date",
        "CPU",
        "memory",
        "disk",
        "system",
        "load average at start",
        "load average at end",
        "other load",
        "wall time of the run",
    ):
        if key in f:
            label = "CPU use by other processes" if key == "other load" else key
            out.append(f"- {label[0].upper()}{label[1:]}: {f[key]}\n")
    out.append("\n## Settings\n\n")
    sources = set(results.sources.values())
    if len(sources) == 1:
        out.append(f"- Dockyard code: {sources.pop()}\n")
    elif sources:
        out.append(
            "- Dockyard code (dockyard/ changed during the run; each item started its own "
            "server): "
            + "; ".join(f"{item}: {src}" for item, src in results.sources.items())
            + "\n"
        )
    for key in (
        "Dockyard process",
        "Dockyard 1 worker process",
        *(k for k in f if k.startswith("Dockyard ") and k.endswith("workers process")),
        "Dockyard auth",
        "distribution version",
        "distribution auth",
        "Bare endpoint process",
        "skopeo",
        "curl",
        "ab",
    ):
        if key in f:
            value = f"`{f[key]}`" if key.endswith("process") else f[key]
            out.append(f"- {key}: {value}\n")
    out.append(
        "- Storage: the filesystem on both, under one temp dir; both fsync a blob before "
        "it is committed (Dockyard's default `storage.fsync = true`; distribution always). "
        "Dockyard's database: SQLite in its data dir. distribution: `blobdescriptor: inmemory` "
        "cache, as in its stock configuration.\n"
        "- Logging: warning level on both, no access log.\n"
        "- Every push goes to a place nothing was pushed to (Dockyard: a new project and "
        "robot per run; distribution: a new repository name) and skopeo's blob-info cache is "
        "deleted before every copy, so no blob is skipped or mounted. skopeo copies with "
        "`--preserve-digests` and TLS verification off (plain HTTP).\n\n"
    )
    out.append(f"## Targets of issue 5\n\n{targets(results)}\n")
    if results.times:
        out.append(f"## skopeo: time per copy, seconds ({runs} runs each)\n\n")
        out.append(
            "| step | Dockyard s | distribution s | Dockyard / distribution "
            "| Dockyard peak RSS MB | distribution peak RSS MB |\n| --- " + "| ---: " * 5 + "|\n"
        )
        for step, times in results.times.items():
            out.append(
                f"| {step_label(step, f)} | {_cell(times.get(DY))} | {_cell(times.get(DIST))} "
                f"| {_ratio(_median(times.get(DY)), _median(times.get(DIST)))} "
                f"| {_rss(results, step, DY)} | {_rss(results, step, DIST)} |\n"
            )
        out.append("\n")
    if results.rates:
        out.append(f"## Raw blob transfer with curl, MB/s ({f.get('raw blob', '')})\n\n")
        out.append(
            "| transfer | Dockyard | distribution | floor | Dockyard / floor "
            "| distribution / floor | Dockyard peak RSS MB | distribution peak RSS MB |\n"
            "| --- " + "| ---: " * 7 + "|\n"
        )
        for step, rates in results.rates.items():
            floor = _median(rates.get(FLOOR))
            out.append(
                f"| {step} | {_cell(rates.get(DY), 0)} | {_cell(rates.get(DIST), 0)} "
                f"| {_cell(rates.get(FLOOR), 0)} | {_ratio(_median(rates.get(DY)), floor)} "
                f"| {_ratio(_median(rates.get(DIST)), floor)} "
                f"| {_rss(results, 'raw ' + step, DY)} | {_rss(results, 'raw ' + step, DIST)} |\n"
            )
        out.append(
            "\nUpload: `POST /v2/<name>/blobs/uploads/`, then one `curl -T <file> -X PUT "
            "<location>?digest=...` carrying the whole blob (monolithic); download: `curl -o "
            "/dev/null` of `GET /v2/<name>/blobs/<digest>`; MB/s from curl's `time_total`, "
            "10^6 bytes. Dockyard is sent a Bearer token from its /auth/token (robot "
            "credentials, scope `repository:<project>/img0:pull,push`), distribution Basic "
            "credentials. Each round the blob gets new bytes, so no server has it yet. The "
            "upload floor is a plain Python loop in this process that reads the same file in "
            "1 MiB chunks, hashes them with `hashlib.sha256` and writes them to a file on the "
            "same disk, then fsyncs it; the download floor reads the same file from the page "
            "cache in 1 MiB chunks and writes it to /dev/null.\n\n"
        )
    if results.api:
        out.append(
            "## API: requests per second on keep-alive HTTP/1.1 connections\n\n"
            f"{API_HEADER}{''.join(r.row() for r in results.api)}\n"
            f"{f.get('api note', '')}\n"
        )
    out.append(sections(results, seconds))
    return "".join(out)


def _short_number(value: float | None) -> str:
    if not value:
        return ""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _api_short(name: str) -> str:
    for part, short in (("container_registries", "list"), ("token", "token"), ("bare", "bare")):
        if part in name:
            return short
    return name[:12]


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {DY: "#1f77b4", DIST: "#ff7f0e", FLOOR: "#7f7f7f"}
    more = has_panels(results)
    fig, axes = plt.subplots(3 if more else 2, 2, figsize=(13, 13.5 if more else 9))

    def bars(ax, groups: list[str], series: dict[str, list[float | None]], ylabel: str) -> None:  # type: ignore[no-untyped-def]
        width = 0.8 / max(len(series), 1)
        for i, (who, values) in enumerate(series.items()):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            heights = [v or 0.0 for v in values]
            drawn = ax.bar(xs, heights, width, label=who, color=colors.get(who))
            ax.bar_label(drawn, labels=[_short_number(v) for v in values], fontsize=7)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    steps = list(results.times)
    med = {w: [_median(results.times[s].get(w)) for s in steps] for w in (DY, DIST)}
    bars(
        axes[0][0],
        [step_label(s, results.facts, short=True) for s in steps],
        med,
        "seconds (median, lower is better)",
    )
    axes[0][0].set_title("skopeo copies")
    kinds = list(results.rates)
    rates = {w: [_median(results.rates[k].get(w)) for k in kinds] for w in (DY, DIST, FLOOR)}
    bars(axes[0][1], kinds, rates, "MB/s (median, higher is better)")
    if kinds:
        axes[0][1].set_yscale("log")
    axes[0][1].set_title("raw blob transfer with curl (log scale)")
    rss_steps = list(results.rss)
    rss = {w: [results.rss[s].get(w) for s in rss_steps] for w in (DY, DIST)}
    bars(
        axes[1][0],
        [step_label(s, results.facts, short=True) for s in rss_steps],
        rss,
        "MB",
    )
    axes[1][0].set_title("peak server RSS (process tree)")
    ax = axes[1][1]
    labels = [f"{_api_short(r.target.name)}\n{r.connections} conn" for r in results.api]
    shades = ["#1f77b4" if "bare" not in r.target.name else "#7f7f7f" for r in results.api]
    drawn = ax.bar(range(len(results.api)), [r.rate for r in results.api], color=shades)
    ax.bar_label(drawn, labels=[f"{r.rate:,.0f}" for r in results.api], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=6)
    if results.api:
        ax.set_yscale("log")
    ax.set_ylabel("requests/s (log scale)")
    ax.set_title("API (Dockyard in blue, bare endpoint in grey)")
    if more:
        panels(results, axes[2][0], axes[2][1], colors)
    fig.suptitle("Dockyard next to CNCF distribution, same machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
