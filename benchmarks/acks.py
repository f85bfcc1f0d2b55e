#!/usr/bin/env python3
"""Ack latency at a fixed rate: how long a sender waits for its ``ack``.

    python benchmarks/acks.py                 # 500 messages/s, 20 s per store, 3 repetitions
    python benchmarks/acks.py --rate 2000 --seconds 10 --reps 1

With the SQLite store an ``ack`` goes out only once its message is committed
(a batch per hub wake, written in a worker thread), so this is where a disk
would show.  One client sends ``chat`` frames at a fixed rate (each with a
``ref``), into a room with ``--members`` other clients; the time from each
send to its ack is recorded.  Stores: ``memory``, ``sqlite`` (a fresh
``--data-dir``), and with ``--redis`` the Redis backplane (a throw-away
``redis-server``).  The server runs on core 0, this client on core 1, like
``run.py``.  Prints a table of p50/p99/max per store (median over
repetitions); results go to ``results/acks-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from contextlib import AsyncExitStack

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.servers import (
    BENCH_DIR,
    TRIO_CHAT_BENCH_ARGS,
    RedisServer,
    ServerProcess,
    ServerSpec,
    raise_fd_limit,
)

from trio_chat.testing import TestClient, open_test_client

RESULTS_DIR = os.path.join(BENCH_DIR, "results")


def spec_for(store: str, redis: RedisServer | None) -> ServerSpec:
    extra = list(TRIO_CHAT_BENCH_ARGS)
    spec = ServerSpec(f"trio_chat-{store}", [sys.executable, "-m", "trio_chat"], extra)
    if store == "redis":
        assert redis is not None
        spec.extra += ["--redis-url", redis.url]
        spec.prestart = redis.flush_command()
    else:
        spec.extra += ["--store", store]
        spec.fresh_dir_arg = "--data-dir"
    return spec


async def measure(url: str, rate: float, seconds: float, members: int) -> list[float]:
    """Send at *rate* for *seconds*; the ack latencies in milliseconds."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)
    async with AsyncExitStack() as stack:
        sender = await stack.enter_async_context(open_test_client(url, user="sender"))
        listeners = [
            await stack.enter_async_context(open_test_client(url, user=f"member{i}"))
            for i in range(members)
        ]
        await sender.join("acks")
        for client in listeners:
            await client.join("acks")

        done = trio.Event()

        async def reader() -> None:
            while len(latencies) < total:
                frame = await sender.receive(30)
                if frame["type"] == "ack":
                    latencies.append((time.perf_counter() - sent.pop(frame["ref"])) * 1e3)
            done.set()

        async def drain(client: TestClient) -> None:
            while True:
                await client.receive(60)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for client in listeners:
                nursery.start_soon(drain, client)
            start = trio.current_time()
            for n in range(total):
                await trio.sleep_until(start + n / rate)
                ref = f"m{n}"
                sent[ref] = time.perf_counter()
                await sender.send("chat", {"room": "acks", "content": f"message {n}"}, ref)
            with trio.fail_after(30):
                await done.wait()
            nursery.cancel_scope.cancel()
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=float, default=500.0, help="messages per second")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per measurement")
    p.add_argument("--members", type=int, default=9, help="other clients in the room")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--redis", action="store_true", help="also measure the Redis backplane")
    args = p.parse_args()
    raise_fd_limit()
    redis = RedisServer() if args.redis else None
    stores = ["memory", "sqlite"] + (["redis"] if redis else [])
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in stores}
    try:
        os.sched_setaffinity(0, {1})
    except (AttributeError, OSError):
        pass
    try:
        for rep in range(args.reps):
            order = stores[rep % len(stores) :] + stores[: rep % len(stores)]
            for store in order:
                with ServerProcess(spec_for(store, redis), core=0) as server:
                    url = f"ws://127.0.0.1:{server.port}/ws"
                    values = trio.run(measure, url, args.rate, args.seconds, args.members)
                result = {
                    "p50_ms": percentile(values, 50),
                    "p99_ms": percentile(values, 99),
                    "max_ms": max(values),
                    "acks": len(values),
                }
                runs[store].append(result)
                print(store, rep, json.dumps(result), flush=True)
    finally:
        if redis is not None:
            redis.stop()
    print(
        f"\nack latency at {args.rate:g} messages/s, {args.members} other members,"
        f" median of {args.reps}"
    )
    print("| store | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
    summary = {}
    for store, results in runs.items():
        row = {k: statistics.median(r[k] for r in results) for k in ("p50_ms", "p99_ms", "max_ms")}
        summary[store] = row
        print(f"| {store} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f} |")
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS_DIR, f"acks-{stamp}.json"), "w") as f:
        json.dump({"args": vars(args), "runs": runs, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
