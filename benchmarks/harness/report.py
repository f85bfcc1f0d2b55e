"""Summaries, the markdown results table, the README section and the plot.

Each number in the table is the median over the repetitions, with min–max;
ratios are medians divided by the websockets (asyncio) peer's median in the
same run.  For "lower is better" metrics (marked ↓) the ratio is still
server / baseline, so below 1.0× is better there.
"""

from __future__ import annotations

import os
import re
import statistics

BASELINE = "websockets-asyncio"

# (scenario, metric, label, show ratio, format)
ROWS = [
    (
        "fanout_max",
        "deliveries_per_s",
        "max fan-out: deliveries/s (200 clients, 1 room)",
        True,
        "{:,.0f}",
    ),
    (
        "fanout_max",
        "server_us_per_delivery",
        "max fan-out: server µs per delivery ↓",
        True,
        "{:.2f}",
    ),
    (
        "fanout_max",
        "deliveries_per_cpu_s",
        "max fan-out: deliveries per server CPU-second",
        True,
        "{:,.0f}",
    ),
    (
        "fanout_rate",
        "delivery_ratio",
        "fixed rate ≈100k deliveries/s: delivery ratio",
        False,
        "{:.4f}",
    ),
    ("fanout_rate", "p50_ms", "fixed rate: p50 latency ms ↓", True, "{:.2f}"),
    ("fanout_rate", "p99_ms", "fixed rate: p99 latency ms ↓", True, "{:.2f}"),
    ("fanout_rate", "max_ms", "fixed rate: max latency ms ↓", True, "{:.1f}"),
    (
        "fanout_rate",
        "server_us_per_delivery",
        "fixed rate: server µs per delivery ↓",
        True,
        "{:.2f}",
    ),
    (
        "many_rooms",
        "deliveries_per_s",
        "many rooms: deliveries/s (200 rooms of 10)",
        True,
        "{:,.0f}",
    ),
    (
        "many_rooms",
        "server_us_per_delivery",
        "many rooms: server µs per delivery ↓",
        True,
        "{:.2f}",
    ),
    (
        "many_rooms",
        "deliveries_per_cpu_s",
        "many rooms: deliveries per server CPU-second",
        True,
        "{:,.0f}",
    ),
    ("echo", "round_trips_per_s", "echo: round trips/s (50 clients)", True, "{:,.0f}"),
    ("echo", "server_us_per_round_trip", "echo: server µs per round trip ↓", True, "{:.1f}"),
    ("handshakes", "handshakes_per_s", "handshakes/s (32 concurrent)", True, "{:,.0f}"),
    (
        "handshakes",
        "server_us_per_handshake",
        "handshakes: server µs per handshake ↓",
        True,
        "{:,.0f}",
    ),
    ("idle_5000", "kb_per_connection", "idle memory, 5,000 connections: KB each ↓", True, "{:.1f}"),
    (
        "idle_10000",
        "kb_per_connection",
        "idle memory, 10,000 connections: KB each ↓",
        True,
        "{:.1f}",
    ),
    ("fanout_max", "server_cpu_frac", "*server's share of its core, max fan-out*", False, "{:.0%}"),
    ("many_rooms", "server_cpu_frac", "*server's share of its core, many rooms*", False, "{:.0%}"),
    (
        "fanout_max",
        "server_wait_frac",
        "*time the server waited for its core (other work), max fan-out*",
        False,
        "{:.0%}",
    ),
    (
        "fanout_max",
        "gen_cpu_frac",
        "*load generator's share of its core, max fan-out*",
        False,
        "{:.0%}",
    ),
    (
        "fanout_rate",
        "gen_cpu_frac",
        "*load generator's share of its core, fixed rate*",
        False,
        "{:.0%}",
    ),
]


def summarize(runs: list[dict]) -> dict:
    """{scenario: {server: {metric: (median, min, max, n)}}} over successful runs."""
    out: dict = {}
    for run in runs:
        if "error" in run["metrics"]:
            continue
        per = out.setdefault(run["scenario"], {}).setdefault(run["server"], {})
        for key, value in run["metrics"].items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and value is not None
            ):
                per.setdefault(key, []).append(value)
    for scen in out.values():
        for server, metrics in scen.items():
            scen[server] = {
                k: (statistics.median(v), min(v), max(v), len(v)) for k, v in metrics.items()
            }
    return out


def errors(runs: list[dict]) -> list[str]:
    return [
        f"{r['server']} / {r['scenario']} (rep {r['rep']}): {r['metrics']['error']}"
        for r in runs
        if "error" in r["metrics"]
    ]


def _cell(stat, fmt: str, base, show_ratio: bool) -> str:
    if stat is None:
        return "n/a"
    med, lo, hi, n = stat
    text = fmt.format(med)
    if n > 1 and lo != hi:
        text += f" ({fmt.format(lo)}–{fmt.format(hi)})"
    if show_ratio and base is not None and base[0]:
        text = f"**{med / base[0]:.2f}×** · " + text
    return text


def markdown_table(summary: dict, servers: list[str]) -> str:
    cols = [s for s in servers]
    lines = ["| scenario / metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for scen, metric, label, show_ratio, fmt in ROWS:
        per = summary.get(scen, {})
        if not per:
            continue
        base = per.get(BASELINE, {}).get(metric)
        cells = []
        for server in cols:
            stat = per.get(server, {}).get(metric)
            cells.append(_cell(stat, fmt, base, show_ratio and server != BASELINE))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(sweeps: dict) -> str:
    lines = [
        "| server | offered/s | delivered/s | ratio | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    f = lambda v, fmt: "n/a" if v is None else fmt.format(v)  # noqa: E731
    for server, points in sweeps.items():
        for p in points:
            lines.append(
                f"| {server} | {p['offered_per_s']:,.0f} | {p['deliveries_per_s']:,.0f} | "
                f"{p['delivery_ratio']:.3f} | {f(p['p50_ms'], '{:.2f}')} | "
                f"{f(p['p99_ms'], '{:.2f}')} | {f(p['max_ms'], '{:.1f}')} |"
            )
    return "\n".join(lines)


def plot_latency(sweeps: dict, path: str) -> None:
    """p50 (dashed) and p99 (solid) latency against offered deliveries/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for i, (server, points) in enumerate(sweeps.items()):
        if not points:
            continue
        color = f"C{i}"
        points = [p for p in points if p["p99_ms"] is not None]
        xs = [p["offered_per_s"] / 1000 for p in points]
        ax.plot(xs, [p["p99_ms"] for p in points], "-o", color=color, label=f"{server} p99")
        ax.plot(
            xs, [p["p50_ms"] for p in points], "--", color=color, alpha=0.7, label=f"{server} p50"
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load, thousand deliveries/s (200 clients, one room)")
    ax.set_ylabel("delivery latency, ms (log)")
    ax.set_title("Fan-out latency against offered load (server on one core)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def update_readme(readme: str, section: str, name: str = "results") -> bool:
    """Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.

    Returns False (and changes nothing) if the markers are missing.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if not os.path.exists(readme):
        return False
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return False
    text = pattern.sub(lambda _m: start + "\n" + section.strip() + "\n" + end, text)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def targets(summary: dict, server: str = "trio_chat", naive: str = "trio-naive") -> str:
    """Issue #7's targets, checked against the medians of this run."""

    def med(scen, srv, metric):
        stat = summary.get(scen, {}).get(srv, {}).get(metric)
        return None if stat is None else stat[0]

    def ratio(scen, metric):
        a, b = med(scen, server, metric), med(scen, BASELINE, metric)
        return None if a is None or not b else a / b

    def mark(ok):
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    rows = []

    def add(label, value, ok, note=""):
        rows.append(f"| {label} | {value} | {mark(ok)} | {note} |")

    fmt = lambda v, f="{:.2f}×": "n/a" if v is None else f.format(v)  # noqa: E731
    r = ratio("fanout_max", "deliveries_per_s")
    rc = ratio("fanout_max", "deliveries_per_cpu_s")
    add(
        "max fan-out ≥ 2× websockets (stretch ≥ 4×)",
        f"{fmt(r)} (per CPU-second {fmt(rc)})",
        None if r is None else r >= 2,
        "stretch met" if r and r >= 4 else "",
    )
    d = med("fanout_rate", server, "delivery_ratio")
    add(
        "fixed rate ≈100k/s: delivery ratio 1.0",
        fmt(d, "{:.4f}"),
        None if d is None else d >= 0.9995,
    )
    p = med("fanout_rate", server, "p99_ms")
    add("fixed rate: p99 ≤ 15 ms", fmt(p, "{:.1f} ms"), None if p is None else p <= 15)
    c = ratio("fanout_rate", "server_us_per_delivery")
    add(
        "fixed rate: server CPU per delivery ≤ websockets'",
        f"{fmt(c)} of websockets'",
        None if c is None else c <= 1,
    )
    m = med("idle_10000", server, "kb_per_connection")
    add(
        "idle memory at 10,000 connections ≤ 20 KB (stretch ≤ 15 KB)",
        fmt(m, "{:.1f} KB"),
        None if m is None else m <= 20,
        "stretch met" if m and m <= 15 else "",
    )
    e = ratio("echo", "round_trips_per_s")
    ec = ratio("echo", "server_us_per_round_trip")
    ec = 1 / ec if ec else None
    add(
        "echo ≥ 0.8× websockets (stretch ≥ 1.0×)",
        f"{fmt(e)} (per CPU-second {fmt(ec)})",
        None if e is None else e >= 0.8,
        "stretch met" if e and e >= 1 else "",
    )
    mr = ratio("many_rooms", "deliveries_per_s")
    mrc = ratio("many_rooms", "deliveries_per_cpu_s")
    add(
        "many rooms ≥ 1.5× websockets",
        f"{fmt(mr)} (per CPU-second {fmt(mrc)})",
        None if mr is None else mr >= 1.5,
    )
    below, compared = [], 0
    for scen, metric, label, show_ratio, _fmt in ROWS:
        if not show_ratio:
            continue
        a, b = med(scen, server, metric), med(scen, naive, metric)
        if a is None or b is None:
            continue
        compared += 1
        lower_better = "↓" in label
        if (a > b) if lower_better else (a < b):
            below.append(label.replace(" ↓", ""))
    add(
        "never below the naive trio design",
        "; ".join(below) if below else "—",
        None if not compared else not below,
        "rows where it is below" if below else "",
    )
    head = ["| target (issue #7) | measured | status | |", "|---|---|---|---|"]
    return "\n".join(head + rows)
