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
        "fanout_max",
        "bytes_per_delivery",
        "max fan-out: bytes received per delivery ↓",
        False,
        "{:.0f}",
    ),
    (
        "fanout_deflate",
        "deliveries_per_s",
        "compressed fan-out: deliveries/s (permessage-deflate offered, 200 clients)",
        True,
        "{:,.0f}",
    ),
    (
        "derived",
        "deflate_vs_plain",
        "compressed fan-out ÷ max fan-out, same server (deliveries/s)",
        False,
        "{:.2f}×",
    ),
    (
        "fanout_deflate",
        "server_us_per_delivery",
        "compressed fan-out: server µs per delivery ↓",
        True,
        "{:.2f}",
    ),
    (
        "fanout_deflate",
        "bytes_per_delivery",
        "compressed fan-out: bytes received per delivery ↓",
        True,
        "{:.0f}",
    ),
    (
        "fanout_deflate",
        "deflate_negotiated",
        "compressed fan-out: connections that negotiated deflate",
        False,
        "{:.0%}",
    ),
    (
        "fanout_deflate",
        "compressed_share",
        "compressed fan-out: messages received compressed",
        False,
        "{:.0%}",
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
    ("echo_1", "round_trips_per_s", "echo: round trips/s (1 client)", True, "{:,.0f}"),
    (
        "echo_1",
        "server_us_per_round_trip",
        "echo, 1 client: server µs per round trip ↓",
        True,
        "{:.1f}",
    ),
    ("echo", "round_trips_per_s", "echo: round trips/s (50 clients)", True, "{:,.0f}"),
    (
        "echo",
        "server_us_per_round_trip",
        "echo, 50 clients: server µs per round trip ↓",
        True,
        "{:.1f}",
    ),
    ("handshakes", "handshakes_per_s", "handshakes/s (32 concurrent)", True, "{:,.0f}"),
    (
        "handshakes",
        "server_us_per_handshake",
        "handshakes: server µs per handshake ↓",
        True,
        "{:,.0f}",
    ),
    (
        "connect_10000",
        "seconds_to_all_joined",
        "10,000 clients connect at once: seconds until all joined ↓",
        True,
        "{:.2f}",
    ),
    (
        "connect_10000",
        "p99_join_ms",
        "10,000 at once: p99 ms from connect() to joined ↓",
        True,
        "{:,.0f}",
    ),
    (
        "connect_10000",
        "server_us_per_connection",
        "10,000 at once: server µs per connection ↓",
        True,
        "{:,.0f}",
    ),
    (
        "connect_10000",
        "listen_overflows",
        "10,000 at once: listen-queue overflows (SYNs dropped, retried)",
        False,
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
        "fanout_deflate",
        "gen_cpu_frac",
        "*load generator's share of its core, compressed fan-out*",
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
    # Ratios between scenarios of one server, from the medians.
    plain, packed = out.get("fanout_max", {}), out.get("fanout_deflate", {})
    for server, metrics in packed.items():
        a = metrics.get("deliveries_per_s")
        b = plain.get(server, {}).get("deliveries_per_s")
        if a and b and b[0]:
            r = a[0] / b[0]
            out.setdefault("derived", {}).setdefault(server, {})["deflate_vs_plain"] = (r, r, r, 1)
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
    cols = list(servers)
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


def variant_table(summary: dict, base: str, variant: str) -> str:
    """The rows of ``ROWS`` measured for ``variant``, beside ``base``."""
    lines = [f"| scenario / metric | {base} | {variant} |", "|---|---|---|"]
    for scen, metric, label, show_ratio, fmt in ROWS:
        stat = summary.get(scen, {}).get(variant, {}).get(metric)
        if stat is None or label.startswith("*"):
            continue
        ref = summary.get(scen, {}).get(base, {}).get(metric)
        lines.append(
            f"| {label} | {_cell(ref, fmt, None, False)} | {_cell(stat, fmt, ref, show_ratio)} |"
        )
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
        shown = [p for p in points if p["p99_ms"] is not None]
        xs = [p["offered_per_s"] / 1000 for p in shown]
        ax.plot(xs, [p["p99_ms"] for p in shown], "-o", color=color, label=f"{server} p99")
        ax.plot(
            xs, [p["p50_ms"] for p in shown], "--", color=color, alpha=0.7, label=f"{server} p50"
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


def targets(
    summary: dict,
    server: str = "trio_chat",
    fastest: str = "picows",
    deflate_note: str = "",
    missed: list[str] | None = None,
) -> str:
    """The performance targets, checked against the medians of this run.

    Each row gives trio_chat's ratio to websockets (asyncio) and, where the
    target names it, to picows.  ``deflate_note`` explains a compressed
    fan-out that could not be measured (trio_chat did not negotiate).
    The scenarios of the targets not met are appended to ``missed``.
    """

    def med(scen, srv, metric):
        stat = summary.get(scen, {}).get(srv, {}).get(metric)
        return None if stat is None else stat[0]

    def ratio(scen, metric, base=BASELINE):
        a, b = med(scen, server, metric), med(scen, base, metric)
        return None if a is None or not b else a / b

    def mark(ok):
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    fmt = lambda v, f="{:.2f}×": "n/a" if v is None else f.format(v)  # noqa: E731
    rows = []

    def add(label, value, ok, note="", scenario=None):
        rows.append(f"| {label} | {value} | {mark(ok)} | {note} |")
        if ok is False and scenario and missed is not None and scenario not in missed:
            missed.append(scenario)

    def stretch(ok, text):
        return (
            "n/a"
            if ok is None
            else (f"stretch met ({text})" if ok else f"stretch not met ({text})")
        )

    def faster(scen, metric, lower_better=False):
        """(ratio to websockets, ratio to picows), as speed (above 1.0 is better)."""
        out = []
        for base in (BASELINE, fastest):
            r = ratio(scen, metric, base)
            out.append(None if r is None else (1 / r if lower_better else r))
        return out

    def by_cpu(scen, metric):
        """Speed ratio to websockets from server CPU cost (↓ metric)."""
        r = ratio(scen, metric)
        return 1 / r if r else None

    def cpu_note(ok, cpu, need):
        if ok is False and cpu is not None and cpu >= need:
            return f"met by server CPU cost ({fmt(cpu)}): the server lacked its core"
        return ""

    h, hp = faster("handshakes", "handshakes_per_s")
    hc = by_cpu("handshakes", "server_us_per_handshake")
    ok = None if h is None else h >= 1
    add(
        "handshakes/s ≥ 1.0× websockets (stretch: ahead of picows)",
        f"{fmt(h)} (per CPU-second {fmt(hc)}; picows: {fmt(hp)})",
        ok,
        cpu_note(ok, hc, 1) or stretch(None if hp is None else hp > 1, f"{fmt(hp)} of picows"),
        "handshakes",
    )
    c, cp = faster("connect_10000", "seconds_to_all_joined", lower_better=True)
    secs = med("connect_10000", server, "seconds_to_all_joined")
    ok = None if c is None else c >= 1
    add(
        "10,000 clients at once: connect time ≥ 1.0× websockets' speed (stretch: ahead of picows)",
        f"{fmt(secs, '{:.2f} s')}: {fmt(c)} of websockets' speed (per CPU-second "
        f"{fmt(by_cpu('connect_10000', 'server_us_per_connection'))}; picows: {fmt(cp)})",
        ok,
        stretch(None if cp is None else cp > 1, f"{fmt(cp)} of picows"),
        "connect_10000",
    )
    for scen, label in (("echo_1", "1 client"), ("echo", "50 clients")):
        e = ratio(scen, "round_trips_per_s")
        ec = by_cpu(scen, "server_us_per_round_trip")
        ok = None if e is None else e >= 1
        add(
            f"echo round trips/s, {label} ≥ 1.0× websockets",
            f"{fmt(e)} (per CPU-second {fmt(ec)}; picows "
            f"{fmt(ratio(scen, 'round_trips_per_s', fastest))})",
            ok,
            cpu_note(ok, ec, 1),
            scen,
        )
    f = ratio("fanout_rate", "server_us_per_delivery")
    add(
        "fixed rate ≈100k/s: server CPU per delivery ≤ 0.8× websockets'",
        f"{fmt(f)} of websockets' "
        f"({fmt(med('fanout_rate', server, 'server_us_per_delivery'), '{:.2f} µs')})",
        None if f is None else f <= 0.8,
        "",
        "fanout_rate",
    )
    p = med("fanout_rate", server, "p99_ms")
    d = med("fanout_rate", server, "delivery_ratio")
    add(
        "fixed rate: p99 ≤ 10 ms",
        f"{fmt(p, '{:.1f} ms')} (delivery ratio {fmt(d, '{:.4f}')})",
        None if p is None else p <= 10 and (d is None or d >= 0.9995),
        "",
        "fanout_rate",
    )
    idle = "idle_10000" if "idle_10000" in summary else "idle_5000"  # 5,000 with --quick
    m = med(idle, server, "kb_per_connection")
    add(
        "idle memory at 10,000 connections, heartbeat running: ≤ 15 KB each (stretch ≤ 10 KB)",
        fmt(m, "{:.1f} KB") + ("" if idle == "idle_10000" else " (at 5,000)"),
        None if m is None else m <= 15,
        stretch(None if m is None else m <= 10, fmt(m, "{:.1f} KB")),
        idle,
    )
    r = ratio("fanout_max", "deliveries_per_s")
    rc = ratio("fanout_max", "deliveries_per_cpu_s")
    rp = ratio("fanout_max", "deliveries_per_s", fastest)
    ok = None if r is None else r >= 3 and (rp is None or rp > 1)
    add(
        "max fan-out ≥ 3× websockets and ahead of picows",
        f"{fmt(r)} (per CPU-second {fmt(rc)}); picows: {fmt(rp)}",
        ok,
        cpu_note(ok, rc, 3),
        "fanout_max",
    )
    neg = med("fanout_deflate", server, "deflate_negotiated")
    dv = med("derived", server, "deflate_vs_plain")
    if neg is not None and neg < 0.999:
        add(
            "compressed fan-out ≥ 0.7× of uncompressed (same run)",
            f"{fmt(dv)}, but uncompressed: permessage-deflate negotiated on "
            f"{neg:.0%} of connections",
            False,
            deflate_note or "trio_chat does not negotiate permessage-deflate in this build",
        )
    else:
        add(
            "compressed fan-out ≥ 0.7× of uncompressed (same run)",
            f"{fmt(dv)} (bytes per delivery "
            f"{fmt(med('fanout_deflate', server, 'bytes_per_delivery'), '{:.0f}')} against "
            f"{fmt(med('fanout_max', server, 'bytes_per_delivery'), '{:.0f}')} uncompressed)",
            None if dv is None else dv >= 0.7,
            "",
            "fanout_deflate",
        )
    head = ["| target | measured | status | |", "|---|---|---|---|"]
    return "\n".join(head + rows)
