"""The benchmark scenarios.

Every scenario starts a fresh server process pinned to one core and runs the
compiled load generator pinned to the other.  Throughput scenarios have a
warm-up, a measured window and a drain; the server's CPU (psutil
``cpu_times``, user + system) is sampled at the start and end of the measured
window, so "server µs per delivery" is server CPU time in the window divided
by the deliveries received in it.

* ``fanout_max``   max fan-out: 200 clients in one room, 10 senders, closed
  loop (each sender keeps 16 messages in flight; a slot frees when the message
  has reached all 199 other members).  Reads are paced (``poll_us``) so the
  generator takes many frames per ``recv``.
* ``fanout_rate``  fixed-rate fan-out: the same room, 500 messages/s in total
  from 10 senders (≈ 99,500 deliveries/s offered): delivery ratio and
  latency (send time is embedded in the content; one clock).
* ``many_rooms``   2,000 clients in 200 rooms of 10, one sender per room,
  closed loop (8 in flight per sender).
* ``echo``         50 clients against the server's echo mode, one message in
  flight each: round trips/s.
* ``echo_1``       the same with a single client: one message in flight in
  the whole system, so each round trip pays the server's full per-message
  path with nothing to batch.
* ``fanout_deflate``  ``fanout_max`` with permessage-deflate offered by
  every client (``client_no_context_takeover; server_no_context_takeover``)
  and text-like content (words, not a run of one letter); the server runs in
  ``deflate`` mode.  Reports whether it negotiated, the share of deliveries
  that arrived compressed, and bytes received per delivery (frame headers
  and acks included; ``fanout_max`` reports the same for plain frames).
* ``connect_10000``  10,000 clients start connecting at once (all 10,000
  ``connect()`` calls issued together, as after a deploy), each upgrades and
  joins its room (rooms of 10): seconds until every one has joined, the
  per-client time from ``connect()`` to ``joined`` (p50/p99), the server CPU
  per connection, and the kernel's listen-queue overflows over the run
  (machine-wide counter: a client whose SYN was dropped retries after 1 s).
* ``handshakes``   32 concurrent clients repeatedly connect, upgrade and
  close (close frame, wait for the server's): upgrades/s.
* ``idle_5000`` / ``idle_10000``  RSS growth per idle connection: server RSS
  once stable with N connections open (upgraded, nothing sent), minus its
  RSS before any connection.
* sweep (``run_sweep``): fixed-rate fan-out at increasing offered loads,
  for the latency plot; reads paced every 200 µs (which adds at most that
  to a latency) so the generator stays well below its limit at high rates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import loadgen
from .servers import ServerProcess, ServerSpec


@dataclass
class Config:
    warmup: float = 1.0
    duration: float = 4.0
    drain: float = 1.0
    server_core: int | None = 0
    gen_core: int | None = 1
    poll_us: int = 1000  # read pacing in closed-loop scenarios
    log_dir: str | None = None
    idle_counts: tuple[int, ...] = (5000, 10000)
    sweep_offered: tuple[int, ...] = (
        10_000,
        25_000,
        50_000,
        100_000,
        150_000,
        200_000,
        300_000,
        450_000,
        600_000,
        800_000,
    )
    sweep_poll_us: int = 200  # read pacing in the sweep: the generator keeps up past 200k/s
    sweep_duration: float = 3.0
    storm_timeout: float = 90.0  # connect_10000: give up (and report) after this
    # Called as on_window(server, "measure_start" | "measure_end") at the
    # edges of each measured window (profile_server.py attaches a profiler there).
    on_window: Callable[[ServerProcess, str], None] | None = None


def _server(spec: ServerSpec, cfg: Config, mode: str = "serve") -> ServerProcess:
    log = os.path.join(cfg.log_dir, f"{spec.name}.log") if cfg.log_dir else None
    return ServerProcess(spec, mode=mode, core=cfg.server_core, log_path=log)


def measure(server: ServerProcess, options: dict, cfg: Config) -> dict:
    """Run the generator once; add the server's CPU over the measured window."""
    marks: dict[str, float] = {}

    def on_event(name: str, _payload: dict) -> None:
        if name in ("measure_start", "measure_end"):
            marks[name] = server.cpu()
            marks[name + "_wait"] = server.run_queue_wait()
            if cfg.on_window:
                cfg.on_window(server, name)

    opts = {"warmup": cfg.warmup, "duration": cfg.duration, "drain": cfg.drain}
    opts.update(options)
    result = loadgen.run(server.port, opts, core=cfg.gen_core, on_event=on_event)
    if not server.alive():
        raise RuntimeError(f"{server.spec.name} exited during the run")
    cpu = marks.get("measure_end", 0.0) - marks.get("measure_start", 0.0)
    result["server_cpu_s"] = cpu
    result["server_cpu_frac"] = cpu / result["window_s"] if result["window_s"] else None
    wait = marks.get("measure_end_wait", 0.0) - marks.get("measure_start_wait", 0.0)
    result["server_wait_frac"] = wait / result["window_s"] if result["window_s"] else None
    return result


def _per(result: dict, count_key: str) -> float | None:
    count = result[count_key] * result["window_s"]
    return result["server_cpu_s"] / count * 1e6 if count else None


def _common(r: dict) -> dict:
    per_s = r["deliveries_per_s"] or r["round_trips_per_s"] or r["handshakes_per_s"]
    return {
        "gen_cpu_frac": r["gen_cpu_frac"],
        "gen_us_per_event": r["gen_cpu_frac"] / per_s * 1e6 if per_s else None,
        "server_cpu_frac": r["server_cpu_frac"],
        "server_wait_frac": r["server_wait_frac"],
        "errors": r["errors"],
        "close_codes": r["close_codes"],
        "connected": r["connected"],
        "first_error": r["first_error"],
    }


def _bytes_per_delivery(r: dict) -> float | None:
    n = r.get("deliveries_in_window")
    return r["rbytes_in_window"] / n if n and "rbytes_in_window" in r else None


def fanout_max(spec: ServerSpec, cfg: Config, deflate: bool = False) -> dict:
    options = {
        "mode": "fanout",
        "clients": 200,
        "room_size": 200,
        "senders_per_room": 10,
        "window": 16,
        "poll_us": cfg.poll_us,
    }
    if deflate:
        options.update(deflate=True, words=True)
    with _server(spec, cfg, mode="deflate" if deflate else "serve") as srv:
        r = measure(srv, options, cfg)
    us = _per(r, "deliveries_per_s")
    out = {
        "deliveries_per_s": r["deliveries_per_s"],
        "server_us_per_delivery": us,
        "deliveries_per_cpu_s": 1e6 / us if us else None,
        "delivery_ratio": r["delivery_ratio"],
        "p50_ms": r["latency_ms"]["p50"],
        "bytes_per_delivery": _bytes_per_delivery(r),
        **_common(r),
    }
    if deflate:
        connected = r["connected"] or 1
        out["deflate_negotiated"] = r.get("deflate_accepted", 0) / connected
        out["compressed_share"] = (
            r.get("messages_compressed", 0) / r["messages"] if r.get("messages") else 0.0
        )
        # distinct compressed payloads the generator had to inflate, per message received
        out["inflates_per_message"] = (
            r.get("inflates", 0) / r["messages_compressed"]
            if r.get("messages_compressed")
            else None
        )
    return out


def fanout_deflate(spec: ServerSpec, cfg: Config) -> dict:
    return fanout_max(spec, cfg, deflate=True)


def generator_ceiling(cfg: Config) -> dict:
    """Max fan-out against the native reference hub: the generator's own limit.

    The hub batches frames per connection, so this is the generator's
    ceiling when frames arrive several per TCP segment; with one segment per
    frame it costs more per delivery (see ``gen_us_per_delivery`` of the
    Python servers' runs).
    """
    from .servers import refhub_spec

    out = fanout_max(refhub_spec(), cfg)
    out["gen_us_per_delivery"] = out["gen_cpu_frac"] / out["deliveries_per_s"] * 1e6
    return out


def fanout_rate(
    spec: ServerSpec,
    cfg: Config,
    rate: float = 500,
    poll_us: int = 0,
    duration: float | None = None,
) -> dict:
    c = Config(**{**cfg.__dict__, "duration": duration or cfg.duration})
    with _server(spec, c) as srv:
        r = measure(
            srv,
            {
                "mode": "fanout",
                "clients": 200,
                "room_size": 200,
                "senders_per_room": 10,
                "rate": rate,
                "poll_us": poll_us,
            },
            c,
        )
    lat = {k: (v if v >= 0 else None) for k, v in r["latency_ms"].items()}
    return {
        "offered_per_s": rate * 199,
        "deliveries_per_s": r["deliveries_per_s"],
        "delivery_ratio": r["delivery_ratio"],
        "p50_ms": lat["p50"],
        "p90_ms": lat["p90"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "server_us_per_delivery": _per(r, "deliveries_per_s"),
        **_common(r),
    }


def many_rooms(spec: ServerSpec, cfg: Config) -> dict:
    with _server(spec, cfg) as srv:
        r = measure(
            srv,
            {
                "mode": "fanout",
                "clients": 2000,
                "room_size": 10,
                "senders_per_room": 1,
                "window": 8,
                "poll_us": cfg.poll_us,
                "concurrency": 100,
            },
            cfg,
        )
    us = _per(r, "deliveries_per_s")
    return {
        "deliveries_per_s": r["deliveries_per_s"],
        "server_us_per_delivery": us,
        "deliveries_per_cpu_s": 1e6 / us if us else None,
        "delivery_ratio": r["delivery_ratio"],
        **_common(r),
    }


def echo(spec: ServerSpec, cfg: Config, clients: int = 50) -> dict:
    with _server(spec, cfg, mode="echo") as srv:
        r = measure(srv, {"mode": "echo", "clients": clients, "window": 1}, cfg)
    lat = {k: (v if v >= 0 else None) for k, v in r["latency_ms"].items()}
    return {
        "round_trips_per_s": r["round_trips_per_s"],
        "server_us_per_round_trip": _per(r, "round_trips_per_s"),
        "p99_ms": lat["p99"],
        **_common(r),
    }


def handshakes(spec: ServerSpec, cfg: Config) -> dict:
    with _server(spec, cfg) as srv:
        r = measure(srv, {"mode": "handshake", "concurrency": 32}, cfg)
    return {
        "handshakes_per_s": r["handshakes_per_s"],
        "server_us_per_handshake": _per(r, "handshakes_per_s"),
        "handshake_fail": r["handshake_fail"],
        **_common(r),
    }


def listen_counters() -> dict[str, int]:
    """The kernel's TcpExt ListenOverflows / ListenDrops (machine-wide)."""
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f]
    except OSError:
        return {}
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head and head[0] == "TcpExt:":
            table = dict(zip(head[1:], values[1:], strict=False))
            return {k: int(table.get(k, 0)) for k in ("ListenOverflows", "ListenDrops")}
    return {}


def connect_storm(spec: ServerSpec, cfg: Config, count: int = 10_000) -> dict:
    """``count`` clients connect at once; seconds until all have joined."""
    with _server(spec, cfg) as srv:
        time.sleep(0.3)
        before = listen_counters()
        r = measure(
            srv,
            {
                "mode": "storm",
                "clients": count,
                "room_size": 10,
                "concurrency": count,
                "connect_timeout": cfg.storm_timeout,
            },
            cfg,
        )
        after = listen_counters()
    if r["joined"] < count:
        raise RuntimeError(
            f"{r['joined']} of {count} joined within {cfg.storm_timeout:.0f} s "
            f"(connect failures {r['connect_fail']}, refused upgrades {r['handshake_fail']}, "
            f"refused joins {r['errors']}: {r['first_error'][:120]})"
        )
    lat = r["latency_ms"]
    return {
        "seconds_to_all_joined": r["window_s"],
        "joined": r["joined"],
        "joins_per_s": r["joined"] / r["window_s"],
        "p50_join_ms": lat["p50"],
        "p99_join_ms": lat["p99"],
        "server_us_per_connection": r["server_cpu_s"] / count * 1e6,
        "retries": r["retries"],
        "listen_overflows": after.get("ListenOverflows", 0) - before.get("ListenOverflows", 0),
        "gen_cpu_frac": r["gen_cpu_frac"],
        "server_cpu_frac": r["server_cpu_frac"],
        "connect_fail": r["connect_fail"],
        "handshake_fail": r["handshake_fail"],
    }


def idle_memory(spec: ServerSpec, cfg: Config, count: int) -> dict:
    """RSS per idle connection: (stable RSS with ``count`` open − RSS before) / count."""
    with _server(spec, cfg) as srv:
        time.sleep(0.5)
        before = srv.stable_rss()
        holder = loadgen.Holder(
            srv.port,
            {"clients": count, "room_size": 0, "concurrency": 200, "connect_timeout": 120},
            core=cfg.gen_core,
        )
        try:
            ready = holder.wait_event("ready")
            after = srv.stable_rss()
            fds = srv.num_fds()
            stats = holder.command("stats", "stats")
        finally:
            holder.close()
        if not srv.alive():
            raise RuntimeError(f"{spec.name} exited during the run")
    if not stats.get("open"):
        raise RuntimeError(f"no connection stayed open ({ready})")
    open_ = stats.get("open", 0)
    return {
        "connections": open_,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "kb_per_connection": (after - before) / max(open_, 1) / 1024,
        "server_fds": fds,
        "connect_fail": ready.get("connect_fail", 0),
        "handshake_fail": ready.get("handshake_fail", 0),
    }


SCENARIOS = {
    "fanout_max": fanout_max,
    "fanout_rate": fanout_rate,
    "many_rooms": many_rooms,
    "fanout_deflate": fanout_deflate,
    "echo": echo,
    "echo_1": lambda spec, cfg: echo(spec, cfg, clients=1),
    "handshakes": handshakes,
    "connect_10000": connect_storm,
    "idle_5000": lambda spec, cfg: idle_memory(spec, cfg, 5000),
    "idle_10000": lambda spec, cfg: idle_memory(spec, cfg, 10000),
}


def run_sweep(spec: ServerSpec, cfg: Config, log=print) -> list[dict]:
    """Fixed-rate fan-out at each offered load; stop after the server falls behind."""
    points = []
    for offered in cfg.sweep_offered:
        rate = offered / 199
        try:
            point = fanout_rate(
                spec, cfg, rate=rate, poll_us=cfg.sweep_poll_us, duration=cfg.sweep_duration
            )
        except Exception as exc:
            log(f"  sweep {spec.name} {offered}: {exc}")
            break
        points.append(point)
        log(
            f"  sweep {spec.name} offered {offered:>7,}/s: "
            f"got {point['deliveries_per_s']:>9,.0f}/s "
            f"ratio {point['delivery_ratio']:.3f} p50 {point['p50_ms']} ms "
            f"p99 {point['p99_ms']} ms gen cpu {point['gen_cpu_frac']:.0%}"
        )
        if point["delivery_ratio"] < 0.9 or point["deliveries_per_s"] < 0.8 * offered:
            break
    return points
