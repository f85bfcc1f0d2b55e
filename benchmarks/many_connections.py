#!/usr/bin/env python3
"""Hold 10,000 concurrent connections on one trio_chat process.

    python benchmarks/many_connections.py [--connections 10000] [--users 100]

All connections join one room; then one of them sends a chat and the
script waits until every other connection has received it.  Reports the
server's RSS per connection ((RSS with all connections joined − RSS before
any) / connections), its open file descriptors, and the broadcast's
delivery count and time.  The client side is the compiled load generator
(one process, epoll), on the other core.

By default the connections share 100 user ids (100 users with 100
connections each): every ``system`` join event goes to all the room's other
connections, so with a distinct user per connection joining costs
N²/2 = 50 million frames at 10,000.  ``--users 10000`` measures exactly that.
Writes benchmarks/results/many_connections.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--users", type=int, default=100, help="distinct user ids among the connections")
    p.add_argument("--server", default="trio_chat")
    p.add_argument("--trio-chat-cmd", default=os.environ.get("TRIO_CHAT_CMD"))
    p.add_argument(
        "--trio-chat-src",
        default=os.environ.get("TRIO_CHAT_SRC"),
        help="directory holding the trio_chat package (default: this checkout)",
    )
    p.add_argument("--trio-chat-rev", help="measure trio_chat as committed at this git revision")
    p.add_argument("--out", default=os.path.join(BENCH_DIR, "results", "many_connections.json"))
    p.add_argument("--no-readme", action="store_true", help="do not rewrite README.md's section")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    limit = raise_fd_limit(args.connections * 2 + 1000)
    loadgen.build()
    if args.trio_chat_rev:
        args.trio_chat_src = export_snapshot(args.trio_chat_rev)
    spec = default_specs(trio_chat_cmd=args.trio_chat_cmd, trio_chat_src=args.trio_chat_src)[
        args.server
    ]
    if args.server == "trio_chat" and has_store_option(spec):
        use_memory_store(spec)
    with ServerProcess(
        spec, core=0, log_path=os.path.join(BENCH_DIR, "results", "raw", "many-server.log")
    ) as srv:
        time.sleep(0.5)
        before = srv.stable_rss()
        t0 = time.monotonic()
        holder = loadgen.Holder(
            srv.port,
            {
                "clients": args.connections,
                "room_size": args.connections,
                "users": args.users,
                "concurrency": 200,
                "connect_timeout": 600,
            },
            core=1,
        )
        try:
            ready = holder.wait_event("ready")
            connect_s = time.monotonic() - t0
            print(f"connected and joined: {ready} in {connect_s:.1f} s", flush=True)
            after = srv.stable_rss(timeout=15)
            fds = srv.num_fds()
            gauges = scrape(srv.port)
            broadcast = holder.command("broadcast", "broadcast")
            stats = holder.command("stats", "stats")
        finally:
            holder.close()
        alive = srv.alive()
    n = stats.get("open", 0)
    result = {
        "source": source_label(args.trio_chat_src),
        "connections_requested": args.connections,
        "users": args.users,
        "fd_limit": limit,
        "joined": ready.get("joined"),
        "open_at_end": n,
        "connect_and_join_s": connect_s,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "kb_per_connection": (after - before) / max(n, 1) / 1024,
        "server_fds": fds,
        "server_gauges": gauges,
        "broadcast": broadcast,
        "server_alive": alive,
        "ok": bool(
            alive and broadcast.get("received") == broadcast.get("expected") == args.connections - 1
        ),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    print(
        f"\n{n:,} connections open, broadcast received by {broadcast.get('received'):,} of "
        f"{broadcast.get('expected'):,} in {broadcast.get('ms')} ms; "
        f"{result['kb_per_connection']:.1f} KB of server RSS per connection"
    )
    if not args.no_readme:
        section = (
            f"{n:,} connections ({args.users} user ids) held on one {args.server} process "
            f"({result['source']}), all in one "
            f"room; connected and joined in {connect_s:.0f} s. One broadcast reached "
            f"{broadcast.get('received'):,} of {broadcast.get('expected'):,} other connections in "
            f"{broadcast.get('ms')} ms. Server RSS {before / 2**20:.0f} MB before, "
            f"{after / 2**20:.0f} MB after: "
            f"**{result['kb_per_connection']:.1f} KB per connection**; "
            f"{fds:,} open fds. Result: **{'PASS' if result['ok'] else 'FAIL'}**."
        )
        report.update_readme(os.path.join(BENCH_DIR, "README.md"), section, "many-connections")
    print("MANY-CONNECTIONS", "PASS" if result["ok"] else "FAIL")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
