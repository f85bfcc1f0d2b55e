#!/usr/bin/env python3
"""Soak test: long connection churn against one trio_chat process.

    python benchmarks/soak.py                 # 30 minutes
    python benchmarks/soak.py --minutes 2     # a short check

The load generator (``--mode churn``) keeps ``--clients`` connection slots
busy: each connects, joins a room (rooms of ``--room-size``), chats about once
per ``--msg-interval`` ms, lives a random 1–5 s and then drops abruptly,
alternating a TCP reset (SO_LINGER 0) and a close without a close frame,
and reconnects.  Every ``--sample`` seconds the server's RSS and open file
descriptors (psutil) and its trio task count and open connections (the
``trio_chat_tasks`` / ``trio_chat_connections_open`` gauges of ``/metrics``;
"n/a" when absent) are recorded.

Check: samples in the first ``--warmup`` seconds (default 60) are warm-up
only; the median of the next three samples is the start value, the median
of the last three samples under churn is the end value; RSS, fds and tasks
must each end within 5% of their start.  After the churn stops, fds and
tasks are also compared with their idle values from before the churn (every
dropped connection must have been reaped).
Writes benchmarks/results/soak.json and benchmarks/soak.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import loadgen, report
from harness.metrics import scrape
from harness.servers import (
    BENCH_DIR,
    ServerProcess,
    default_specs,
    export_snapshot,
    has_store_option,
    raise_fd_limit,
    source_label,
    use_memory_store,
)

TOLERANCE = 0.05


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=200, help="concurrent connection slots")
    p.add_argument("--room-size", type=int, default=10)
    p.add_argument("--msg-interval", type=float, default=500, help="ms between chats per client")
    p.add_argument("--life-min", type=float, default=1.0)
    p.add_argument("--life-max", type=float, default=5.0)
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the start value")
    p.add_argument("--server", default="trio_chat", help="server name (default trio_chat)")
    p.add_argument("--trio-chat-cmd", default=os.environ.get("TRIO_CHAT_CMD"))
    p.add_argument(
        "--trio-chat-src",
        default=os.environ.get("TRIO_CHAT_SRC"),
        help="directory holding the trio_chat package (default: this checkout)",
    )
    p.add_argument("--trio-chat-rev", help="measure trio_chat as committed at this git revision")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "results", "soak.json"))
    p.add_argument("--plot", default=os.path.join(BENCH_DIR, "soak.png"))
    p.add_argument(
        "--no-readme", action="store_true", help="do not rewrite README.md's soak section"
    )
    return p.parse_args()


def sample(server: ServerProcess, t0: float, churn: dict) -> dict:
    gauges = scrape(server.port)
    return {
        "t": time.monotonic() - t0,
        "rss_mb": server.rss() / 2**20,
        "fds": server.num_fds(),
        "tasks": gauges["trio_chat_tasks"],
        "connections": gauges["trio_chat_connections_open"],
        "client_open": churn.get("open"),
    }


def check(samples: list[dict], key: str, warmup: float) -> dict:
    values = [s[key] for s in samples if s[key] is not None and s["t"] >= warmup]
    if len(values) < 4:
        return {"start": None, "end": None, "change": None, "ok": None}
    start = statistics.median(values[:3])
    end = statistics.median(values[-3:])
    change = (end - start) / start if start else 0.0
    return {"start": start, "end": end, "change": change, "ok": abs(change) <= TOLERANCE}


def summary_md(r: dict) -> str:
    """The README's soak section."""
    a, churn = r["args"], r["churn"]
    fmt = lambda v: "n/a" if v is None else f"{v:,.1f}"  # noqa: E731
    lines = [
        f"{a['minutes']:g} minutes against {a['server']} "
        f"({r.get('source', 'the working tree')}): {a['clients']} connection slots in rooms of "
        f"{a['room_size']}, each living {a['life_min']:g}–{a['life_max']:g} s "
        "then dropped abruptly "
        f"(TCP reset or close without a close frame) and reconnecting; "
        f"{churn.get('drops', 0):,} drops, {churn.get('sent', 0):,} chats, "
        f"{churn.get('deliveries', 0):,} deliveries, {churn.get('errors', 0)} error frames. "
        f"Result: **{'PASS' if r['ok'] else 'FAIL'}**.",
        "",
        "| sampled every {:g}s | start | end | change | within 5% |".format(a["sample"]),
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("rss_mb", "server RSS, MB"),
        ("fds", "open file descriptors"),
        ("tasks", "trio tasks"),
    ):
        c = r["checks"][key]
        change = "n/a" if c["change"] is None else f"{c['change']:+.1%}"
        verdict = "n/a" if c["ok"] is None else ("yes" if c["ok"] else "**no**")
        lines.append(f"| {label} | {fmt(c['start'])} | {fmt(c['end'])} | {change} | {verdict} |")
    lines += [
        "",
        "After the churn stopped (idle, before → after): "
        + ", ".join(f"{k} {b} → {af}" for k, (b, af, _ok) in r["reaped"].items())
        + ".",
        "",
        "![soak: RSS, fds, tasks and connections over time](soak.png)",
    ]
    return "\n".join(lines)


def plot(samples: list[dict], idle: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [
        ("rss_mb", "server RSS (MB)"),
        ("fds", "open file descriptors"),
        ("tasks", "trio tasks"),
        ("connections", "open connections"),
    ]
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 9), dpi=100, sharex=True)
    xs = [s["t"] / 60 for s in samples]
    for ax, (key, label) in zip(axes, keys, strict=False):
        ys = [s[key] for s in samples]
        if any(y is not None for y in ys):
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], "-o", ms=2)
            if idle.get(key) is not None:
                ax.axhline(idle[key], color="grey", ls=":", label="idle, before churn")
                ax.legend(fontsize=7, loc="lower right")
            ax.set_ylim(bottom=0)
        else:
            ax.text(
                0.5,
                0.5,
                "n/a (gauge not exported)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    args = parse_args()
    raise_fd_limit()
    loadgen.build()
    if args.trio_chat_rev:
        args.trio_chat_src = export_snapshot(args.trio_chat_rev)
    spec = default_specs(trio_chat_cmd=args.trio_chat_cmd, trio_chat_src=args.trio_chat_src)[
        args.server
    ]
    if args.server == "trio_chat" and has_store_option(spec):
        use_memory_store(spec)
    duration = args.minutes * 60
    samples: list[dict] = []
    churn: dict = {}
    with ServerProcess(
        spec, core=0, log_path=os.path.join(BENCH_DIR, "results", "raw", "soak-server.log")
    ) as srv:
        time.sleep(1.0)
        idle_before = sample(srv, time.monotonic(), {})
        options = {
            "mode": "churn",
            "clients": args.clients,
            "room_size": args.room_size,
            "msg_interval": args.msg_interval,
            "life_min": args.life_min,
            "life_max": args.life_max,
            "duration": duration,
            "stats_every": min(args.sample, 10),
            "concurrency": 64,
        }
        result: dict = {}

        def on_event(name: str, payload: dict) -> None:
            if name == "stats":
                churn.update(payload)

        def drive() -> None:
            result.update(
                loadgen.run(srv.port, options, core=1, on_event=on_event, timeout=duration + 120)
            )

        t0 = time.monotonic()
        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        next_at = t0 + args.sample
        while driver.is_alive():
            driver.join(max(0.0, next_at - time.monotonic()))
            if driver.is_alive() and next_at - 0.01 <= time.monotonic() < t0 + duration - 1.0:
                samples.append(sample(srv, t0, churn))
                s = samples[-1]
                print(
                    f"{s['t'] / 60:6.1f} min  rss {s['rss_mb']:7.1f} MB  fds {s['fds']:5d}  "
                    f"tasks {s['tasks'] if s['tasks'] is not None else 'n/a'}  "
                    f"conns {s['connections'] if s['connections'] is not None else 'n/a'}  "
                    f"churn {churn}",
                    flush=True,
                )
                next_at += args.sample
        alive = srv.alive()
        time.sleep(5.0)  # let the server reap the last connections
        idle_after = sample(srv, t0, {})

    checks = {
        key: check(samples, key, min(args.warmup, duration / 3))
        for key in ("rss_mb", "fds", "tasks")
    }
    reaped = {
        key: (
            idle_before[key],
            idle_after[key],
            None
            if idle_before[key] is None
            else idle_after[key] <= idle_before[key] * (1 + TOLERANCE) + 1,
        )
        for key in ("fds", "tasks", "connections")
    }
    ok = (
        alive
        and all(c["ok"] is not False for c in checks.values())
        and all(r[2] is not False for r in reaped.values())
    )
    report_dict = {
        "args": vars(args),
        "source": source_label(args.trio_chat_src),
        "server_alive": alive,
        "idle_before": idle_before,
        "idle_after": idle_after,
        "checks": checks,
        "reaped": reaped,
        "ok": ok,
        "samples": samples,
        "churn": result,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report_dict, f, indent=1)
    plot(
        samples,
        idle_before,
        args.plot,
        f"{args.server}: {args.minutes:g} min churn, {args.clients} clients "
        f"({result.get('drops', '?')} abrupt drops)",
    )
    print()
    for key, c in checks.items():

        def fmt(v):
            return "n/a" if v is None else f"{v:.1f}"

        change = "n/a" if c["change"] is None else f"{c['change']:+.1%}"
        print(
            f"{key:7} start {fmt(c['start'])}  end {fmt(c['end'])}  change {change}  "
            f"{'ok' if c['ok'] else 'n/a' if c['ok'] is None else 'FAIL'}"
        )
    for key, (before, after, good) in reaped.items():
        print(
            f"idle {key}: before {before}  after {after}  "
            f"{'ok' if good else 'n/a' if good is None else 'FAIL'}"
        )
    print(
        f"connects {churn.get('connects')}  drops {result.get('drops')}  "
        f"chats sent {result.get('sent')}  deliveries {result.get('deliveries')}  "
        f"errors {result.get('errors')}  server alive: {alive}"
    )
    if not args.no_readme:
        report.update_readme(os.path.join(BENCH_DIR, "README.md"), summary_md(report_dict), "soak")
    print("SOAK", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
