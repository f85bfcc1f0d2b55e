"""What a registered message policy costs: trio_chat with and without one.

Runs the fan-out scenarios of ``run.py`` (same generator, pinning and
trio_chat arguments, ``--store memory``) against three trio_chat servers,
alternated in each repetition: no policy, a no-op plain ``check``, and a
no-op coroutine ``check``.  Prints, and writes to
``results/policy-<date>.json``, the medians and each one's ratio to the
server without a policy in the same run (server CPU per delivery: lower is
better; deliveries per second: higher is better).

    .venv/bin/python benchmarks/policy.py            # 3 repetitions
    .venv/bin/python benchmarks/policy.py --reps 5 --scenarios fanout_max
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import loadgen
from harness.scenarios import SCENARIOS, Config
from harness.servers import (
    BENCH_DIR,
    PEERS_DIR,
    ServerSpec,
    default_specs,
    lift_optional_limits,
    use_memory_store,
)

RESULTS_DIR = os.path.join(BENCH_DIR, "results")
KEYS = ("server_us_per_delivery", "deliveries_per_s")


def specs() -> dict[str, ServerSpec]:
    plain = default_specs()["trio_chat"]
    lift_optional_limits(plain)
    use_memory_store(plain)
    script = os.path.join(PEERS_DIR, "trio_chat_policy.py")
    hooked = ServerSpec(
        "trio_chat+policy", [sys.executable, script], list(plain.extra), deflate_args=[]
    )
    hooked.fresh_dir_arg = plain.fresh_dir_arg
    hooked_async = ServerSpec(
        "trio_chat+async-policy",
        [sys.executable, script, "--async-policy"],
        list(plain.extra),
        deflate_args=[],
    )
    hooked_async.fresh_dir_arg = plain.fresh_dir_arg
    return {s.name: s for s in (plain, hooked, hooked_async)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scenarios", default="fanout_max,many_rooms")
    args = p.parse_args()
    loadgen.build()
    cfg = Config(log_dir=os.path.join(RESULTS_DIR, "raw"))
    os.makedirs(cfg.log_dir, exist_ok=True)
    servers = specs()
    names = list(servers)
    runs: list[dict] = []
    for rep in range(args.reps):
        for scenario in args.scenarios.split(","):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                metrics = SCENARIOS[scenario](servers[name], cfg)
                runs.append({"server": name, "scenario": scenario, "rep": rep, "metrics": metrics})
                shown = {k: round(metrics.get(k) or 0, 3) for k in (*KEYS, "delivery_ratio")}
                print(f"[rep {rep + 1}/{args.reps}] {scenario:<11} {name:<23} {shown}", flush=True)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in args.scenarios.split(","):
        medians = {
            name: {
                key: statistics.median(
                    r["metrics"][key]
                    for r in runs
                    if r["server"] == name and r["scenario"] == scenario and r["metrics"].get(key)
                )
                for key in KEYS
            }
            for name in names
        }
        base = medians["trio_chat"]
        summary[scenario] = {}
        for name in names:
            row = dict(medians[name])
            for key in KEYS:
                row[key + "_ratio"] = medians[name][key] / base[key]
            summary[scenario][name] = row
            print(
                f"{scenario:<11} {name:<23} "
                f"{row['server_us_per_delivery']:6.2f} us/delivery "
                f"({row['server_us_per_delivery_ratio']:.3f}x)  "
                f"{row['deliveries_per_s']:9,.0f} deliveries/s "
                f"({row['deliveries_per_s_ratio']:.3f}x)"
            )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS_DIR, f"policy-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"reps": args.reps, "runs": runs, "summary": summary}, f, indent=1)
    print("written:", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
