#!/usr/bin/env python3
"""Run the trio_chat benchmark suite against trio_chat and its peers.

    python benchmarks/run.py            # full run: 3 repetitions (~15 min)
    python benchmarks/run.py --quick    # 1 repetition, shorter windows (~3 min)

The server under test is pinned to core 0 and the load generator (compiled
from loadgen/loadgen.c) to core 1.  Servers are alternated within every
repetition (the order rotates per repetition).  Results go to
benchmarks/results/ (JSON + markdown), the latency plot to
benchmarks/latency.png, and the results section of benchmarks/README.md is
regenerated unless --no-readme is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import loadgen, profiling, report
from harness.scenarios import SCENARIOS, Config, generator_ceiling, run_sweep
from harness.servers import (
    BENCH_DIR,
    OPTIONAL,
    SQLITE_VARIANT,
    TRIO_PEERS,
    VARIANT_SCENARIOS,
    RedisServer,
    ServerError,
    ServerProcess,
    default_specs,
    ensure_node_deps,
    export_snapshot,
    has_store_option,
    lift_optional_limits,
    raise_fd_limit,
    sqlite_variant,
    use_memory_store,
)

RESULTS_DIR = os.path.join(BENCH_DIR, "results")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="1 repetition, short windows, fewer points")
    p.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    p.add_argument("--servers", help="comma-separated subset of: " + ", ".join(default_specs()))
    p.add_argument("--scenarios", help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument("--no-sweep", action="store_true", help="skip the latency sweep and plot")
    p.add_argument(
        "--with-node", action="store_true", help="also measure the Node.js ws peer (npm ci)"
    )
    p.add_argument(
        "--trio-peers",
        action="store_true",
        help="also measure the two trio designs (websockets.trio, naive trio-websocket)",
    )
    p.add_argument(
        "--no-store-variant",
        action="store_true",
        help="do not also measure trio_chat with --store sqlite (where it has that option)",
    )
    p.add_argument(
        "--no-profile",
        action="store_true",
        help="do not profile trio_chat in the scenarios whose target it missed",
    )
    p.add_argument("--no-ceiling", action="store_true", help="skip the generator-ceiling check")
    p.add_argument(
        "--trio-chat-cmd",
        default=os.environ.get("TRIO_CHAT_CMD"),
        help="command that starts trio_chat (default: python -m trio_chat)",
    )
    p.add_argument("--trio-chat-args", default="", help="extra arguments for trio_chat serve")
    p.add_argument(
        "--trio-chat-src",
        default=os.environ.get("TRIO_CHAT_SRC"),
        help="directory holding the trio_chat package to measure (default: this checkout)",
    )
    p.add_argument(
        "--trio-chat-rev",
        help="measure trio_chat as committed at this git revision "
        "(exported with git archive) instead of the working tree",
    )
    p.add_argument(
        "--no-readme", action="store_true", help="do not rewrite README.md's results section"
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin server and generator to cores (e.g. trio_chat --workers 2)",
    )
    p.add_argument(
        "--redis",
        action="store_true",
        help="start a redis-server and run trio_chat with --redis-url (flushed before each start)",
    )
    p.add_argument("--tag", default="", help="suffix for the results file name")
    p.add_argument(
        "--from-json",
        metavar="FILE",
        help="measure nothing: rebuild the table, plot and README section from a results file",
    )
    return p.parse_args()


def config(args: argparse.Namespace) -> Config:
    log_dir = os.path.join(RESULTS_DIR, "raw")
    os.makedirs(log_dir, exist_ok=True)
    pin = {"server_core": None, "gen_core": None} if args.no_pin else {}
    if args.quick:
        return Config(
            warmup=0.5,
            duration=2.0,
            drain=0.5,
            log_dir=log_dir,
            idle_counts=(5000,),
            sweep_offered=(25_000, 100_000, 300_000),
            sweep_duration=2.0,
            **pin,
        )
    return Config(log_dir=log_dir, **pin)


def available(spec, cfg: Config) -> str | None:
    """None if the server starts and prints its listening line, else why not."""
    try:
        with ServerProcess(
            spec,
            core=cfg.server_core,
            start_timeout=15,
            log_path=os.path.join(cfg.log_dir, f"{spec.name}.log"),
        ):
            return None
    except ServerError as exc:
        return str(exc)[:300]


def versions() -> dict:
    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
    }
    for dist in ("trio", "trio-websocket", "wsproto", "websockets", "picows", "trio-chat"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        with open("/proc/cpuinfo") as f:
            out["cpu"] = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return out


def working_tree_label() -> str:
    """'the working tree at commit X' (and whether trio_chat/ differs from it)."""
    try:
        commit = subprocess.run(
            ["git", "-C", BENCH_DIR, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", BENCH_DIR, "status", "--porcelain", "--", "../trio_chat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "the working tree"
    return f"the working tree at commit {commit}" + (
        " (trio_chat/ with uncommitted changes)" if dirty else ""
    )


def main() -> int:
    args = parse_args()
    if args.from_json:
        return rebuild(args)
    cfg = config(args)
    raise_fd_limit()
    loadgen.build()
    source = working_tree_label()
    if args.trio_chat_rev:
        args.trio_chat_src = export_snapshot(args.trio_chat_rev)
        with open(os.path.join(args.trio_chat_src, "COMMIT")) as f:
            source = "commit " + f.read().strip()
    elif args.trio_chat_src:
        source = args.trio_chat_src
    extra = shlex.split(args.trio_chat_args)
    redis = None
    if args.redis:
        redis = RedisServer()
        extra += ["--redis-url", redis.url]
    specs = default_specs(
        trio_chat_cmd=args.trio_chat_cmd, trio_chat_extra=extra, trio_chat_src=args.trio_chat_src
    )
    if redis:
        specs["trio_chat"].prestart = redis.flush_command()
    try:
        return measure_all(args, cfg, specs, source)
    finally:
        if redis:
            redis.stop()


def measure_all(args, cfg, specs, source) -> int:
    reps = args.reps or (1 if args.quick else 3)
    names = args.servers.split(",") if args.servers else [n for n in specs if n not in OPTIONAL]
    if args.trio_peers:
        names += [n for n in TRIO_PEERS if n not in names]
    if args.with_node and "node-ws" not in names:
        names.append("node-ws")
    if "trio_chat" in names:
        lift_optional_limits(specs["trio_chat"])
    if "trio_chat" in names and has_store_option(specs["trio_chat"]):
        use_memory_store(specs["trio_chat"])
        if not args.no_store_variant and SQLITE_VARIANT not in names:
            specs[SQLITE_VARIANT] = sqlite_variant(specs["trio_chat"])
            names.append(SQLITE_VARIANT)
    if "node-ws" in names:
        try:
            ensure_node_deps()
        except (ServerError, OSError, subprocess.CalledProcessError) as exc:
            print(f"[skip] node-ws: {exc}", flush=True)
    scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    if not args.scenarios:
        # idle memory at 10,000 connections is the reported one; --quick
        # measures 5,000 instead (shorter)
        skip = "idle_10000" if args.quick else "idle_5000"
        scenarios = [s for s in scenarios if s != skip]
    unavailable = {}
    for name in names:
        why = available(specs[name], cfg)
        if why:
            unavailable[name] = why
            print(f"[skip] {name}: {why}", flush=True)
    active = [n for n in names if n not in unavailable]

    started = time.monotonic()
    ceiling = None
    if not args.no_ceiling:
        try:
            ceiling = generator_ceiling(cfg)
            print(
                "[ceiling] load generator against the native hub: "
                f"{ceiling['deliveries_per_s']:,.0f} "
                f"deliveries/s at {ceiling['gen_cpu_frac']:.0%} of its core",
                flush=True,
            )
        except Exception as exc:
            print(f"[ceiling] failed: {exc}", flush=True)
    runs = []
    for rep in range(reps):
        for scenario in scenarios:
            order = active[rep % len(active) :] + active[: rep % len(active)] if active else []
            for name in order:
                if scenario not in VARIANT_SCENARIOS.get(name, (scenario,)):
                    continue
                t0 = time.monotonic()
                try:
                    metrics = SCENARIOS[scenario](specs[name], cfg)
                except Exception as exc:
                    metrics = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                runs.append({"server": name, "scenario": scenario, "rep": rep, "metrics": metrics})
                brief = {
                    k: round(v, 3) if isinstance(v, float) else v
                    for k, v in metrics.items()
                    if k not in ("close_codes", "first_error") and not isinstance(v, dict)
                }
                print(
                    f"[rep {rep + 1}/{reps}] {scenario:<14} {name:<19} "
                    f"{time.monotonic() - t0:5.1f}s {brief}",
                    flush=True,
                )

    sweeps = {}
    if not args.no_sweep:
        for name in active:
            if name in VARIANT_SCENARIOS:
                continue
            sweeps[name] = run_sweep(specs[name], cfg, log=lambda m: print(m, flush=True))

    summary = report.summarize(runs)
    profiles = {}
    if not args.no_profile and "trio_chat" in active:
        profiles = profile_misses(specs["trio_chat"], cfg, summary, scenarios, source)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    data = {
        "meta": {
            "date": stamp,
            "quick": args.quick,
            "reps": reps,
            "config": cfg.__dict__,
            "versions": versions(),
            "servers": names,
            "trio_chat_source": source,
            "trio_chat_args": specs["trio_chat"].extra,
            "pinned": not args.no_pin,
            "unavailable": unavailable,
            "elapsed_s": time.monotonic() - started,
        },
        "runs": runs,
        "summary": summary,
        "sweeps": sweeps,
        "generator_ceiling": ceiling,
        "profiles": profiles,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    name = f"results-{stamp}{'-' + args.tag if args.tag else ''}.json"
    for path in (os.path.join(RESULTS_DIR, name), os.path.join(RESULTS_DIR, "latest.json")):
        with open(path, "w") as f:
            json.dump(data, f, indent=1, default=str)

    if sweeps:
        report.plot_latency(sweeps, os.path.join(BENCH_DIR, "latency.png"))
    section = results_section(data, names, summary, sweeps, runs, unavailable)
    with open(os.path.join(RESULTS_DIR, "latest.md"), "w") as f:
        f.write(section + "\n")
    print("\n" + section)
    if not args.no_readme and report.update_readme(os.path.join(BENCH_DIR, "README.md"), section):
        print("\nREADME.md results section updated.")
    return 0


# Idle connections held for the memory profile: per-connection allocation
# sites do not change with the count, and tracemalloc slows connecting down.
PROFILE_IDLE_CONNECTIONS = 2000


def profile_misses(spec, cfg, summary, scenarios, source) -> dict:
    """Profile trio_chat once more in each scenario whose target it missed:
    py-spy over the measured window, or tracemalloc for idle memory."""
    missed: list[str] = []
    report.targets(summary, missed=missed)
    profiles = {}
    for scen in missed:
        if scen not in scenarios:
            continue
        t0 = time.monotonic()
        try:
            if scen.startswith("idle_"):
                mem = profiling.memory_profile(spec, cfg, PROFILE_IDLE_CONNECTIONS, RESULTS_DIR)
                profiles[scen] = {"kind": "memory", **mem}
                text = profiling.memory_markdown(source, mem)
            else:
                prof = profiling.profile_scenario(spec, cfg, scen, RESULTS_DIR)
                profiles[scen] = {"kind": "cpu", **prof}
                text = profiling.cpu_markdown(scen, source, prof["result"], prof, 200)
        except Exception as exc:
            print(f"[profile] {scen}: {type(exc).__name__}: {exc}", flush=True)
            continue
        with open(os.path.join(RESULTS_DIR, f"profile-{scen}.md"), "w") as f:
            f.write(text + "\n")
        print(f"[profile] {scen}: {time.monotonic() - t0:.1f}s", flush=True)
    return profiles


def profile_section(profiles: dict, source: str) -> list[str]:
    if not profiles:
        return []
    lines = [
        "",
        "Profiles of trio_chat in the scenarios whose target it missed, taken at the end of "
        "this run on the same build (one more run of the scenario each; the full tables are "
        "in `results/profile-<scenario>.md`):",
    ]
    for scen, prof in profiles.items():
        lines.append("")
        if prof.get("kind") == "memory":
            lines.append(profiling.memory_markdown(source, prof, top=8))
        else:
            lines.append(profiling.cpu_markdown(scen, source, prof["result"], prof, 200, top=8))
    return lines


def rebuild(args: argparse.Namespace) -> int:
    """Regenerate results/latest.md, latency.png and the README section from a saved run."""
    with open(args.from_json) as f:
        data = json.load(f)
    summary = report.summarize(data["runs"])
    sweeps = data.get("sweeps") or {}
    if sweeps:
        report.plot_latency(sweeps, os.path.join(BENCH_DIR, "latency.png"))
    section = results_section(
        data,
        data["meta"]["servers"],
        summary,
        sweeps,
        data["runs"],
        data["meta"].get("unavailable", {}),
    )
    with open(os.path.join(RESULTS_DIR, "latest.md"), "w") as f:
        f.write(section + "\n")
    print(section)
    if not args.no_readme and report.update_readme(os.path.join(BENCH_DIR, "README.md"), section):
        print("\nREADME.md results section updated.")
    return 0


def results_section(data, names, summary, sweeps, runs, unavailable) -> str:
    meta = data["meta"]
    v = meta["versions"]
    lines = [
        f"Run {meta['date']} ({'quick' if meta['quick'] else 'full'}, "
        f"{meta['reps']} repetition(s), "
        f"{meta['elapsed_s'] / 60:.1f} min); {v.get('cpu', '?')}, {v.get('cpus')} cores; "
        f"Python {v['python']}, trio {v.get('trio', '?')}, "
        f"trio-websocket {v.get('trio-websocket', '?')}, "
        f"websockets {v.get('websockets', '?')}; trio_chat from {meta.get('trio_chat_source')}. "
        + (
            "Server on core 0, load generator on core 1."
            if meta.get("pinned", True)
            else "Server and load generator not pinned."
        )
        + (
            f" trio_chat arguments: `{' '.join(meta['trio_chat_args'])}`."
            if meta.get("trio_chat_args")
            else ""
        ),
        "",
        "Cells: **ratio to websockets-asyncio** · median (min–max over repetitions). "
        '"Per server CPU-second" is 1 / (server CPU per delivery): what one fully available core '
        "would carry at that cost. The *share of its core* rows show how much of core 0 the server "
        "actually got: where other work shared the core, throughput rows drop with it, "
        "CPU-cost rows much less.",
        "",
        report.markdown_table(summary, [n for n in names if n not in VARIANT_SCENARIOS]),
    ]
    if SQLITE_VARIANT in names:
        lines += [
            "",
            "History store: trio_chat with `--store sqlite` (a fresh `--data-dir` per server "
            "start) beside the trio_chat column above (`--store memory`), same run; ratio to "
            "`--store memory`:",
            "",
            report.variant_table(summary, "trio_chat", SQLITE_VARIANT),
        ]
    if any("trio_chat" in per for per in summary.values()):
        lines += [
            "",
            "Targets, from the medians above (status from the throughput ratio as the target "
            'states it; "per CPU-second" is the same ratio from server CPU cost, steadier when '
            "the server did not get its whole core):",
            "",
            report.targets(
                summary,
                deflate_note=f"trio_chat ({meta.get('trio_chat_source')}) did not accept the "
                "permessage-deflate offer: its compressed fan-out row is plain frames",
            ),
        ]
    for name, per in summary.get("fanout_deflate", {}).items():
        neg = per.get("deflate_negotiated")
        if neg is not None and neg[0] < 0.999:
            lines += [
                "",
                f"*{name} did not negotiate permessage-deflate ({neg[0]:.0%} of connections): "
                "its compressed fan-out cells measure plain frames.*",
            ]
    lines += profile_section(data.get("profiles") or {}, meta.get("trio_chat_source", ""))
    ceiling = data.get("generator_ceiling")
    if ceiling:
        lines += [
            "",
            f"Load generator ceiling (max fan-out against a native C hub that batches frames): "
            f"{ceiling['deliveries_per_s']:,.0f} deliveries/s with the generator at "
            f"{ceiling['gen_cpu_frac']:.0%} of its core ({ceiling['gen_us_per_delivery']:.2f} µs "
            f"per delivery).",
        ]
    for name, why in unavailable.items():
        lines += ["", f"*{name}: not measured in this run ({why}).*"]
    errs = report.errors(runs)
    if errs:
        lines += ["", "Failed runs:", ""] + [f"- {e}" for e in errs]
    if sweeps:
        lines += [
            "",
            "Latency against offered load (fixed-rate fan-out, 200 clients, one room):",
            "",
            "![latency against offered load](latency.png)",
            "",
            report.sweep_table(sweeps),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
