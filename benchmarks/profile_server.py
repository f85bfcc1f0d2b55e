#!/usr/bin/env python3
"""Profile trio_chat's server process in one benchmark scenario.

    python benchmarks/profile_server.py handshakes
    python benchmarks/profile_server.py echo_1 --trio-chat-rev main --duration 8
    python benchmarks/profile_server.py idle_10000     # where the memory goes

Runs the scenario as ``run.py`` does (server on core 0, generator on core 1).
CPU scenarios: py-spy samples the server over the measured window only
(200 samples/s; idle time is not sampled).  ``idle_*``: the server runs
under tracemalloc and the allocation sites that grew with the idle
connections are listed per connection.  Writes ``results/profile-<scenario>.md``
(and py-spy's collapsed stacks, ``results/profile-<scenario>.txt``, for a
flame graph).  ``run.py`` runs the same profiles by itself for the scenarios
whose target a run misses.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import loadgen, profiling
from harness.scenarios import SCENARIOS, Config
from harness.servers import (
    BENCH_DIR,
    default_specs,
    export_snapshot,
    has_store_option,
    lift_optional_limits,
    raise_fd_limit,
    source_label,
    use_memory_store,
)

RESULTS_DIR = os.path.join(BENCH_DIR, "results")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scenario", choices=list(SCENARIOS))
    p.add_argument("--duration", type=float, default=6.0, help="measured window, seconds")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--trio-chat-rev", help="profile trio_chat as committed at this revision")
    p.add_argument("--trio-chat-args", default="", help="extra arguments for trio_chat serve")
    args = p.parse_args()
    raise_fd_limit()
    loadgen.build()
    src = export_snapshot(args.trio_chat_rev) if args.trio_chat_rev else None
    spec = default_specs(trio_chat_src=src, trio_chat_extra=args.trio_chat_args.split())[
        "trio_chat"
    ]
    lift_optional_limits(spec)
    if has_store_option(spec):
        use_memory_store(spec)
    cfg = Config(duration=args.duration, log_dir=os.path.join(RESULTS_DIR, "raw"))
    os.makedirs(cfg.log_dir, exist_ok=True)
    if args.scenario.startswith("idle_"):
        mem = profiling.memory_profile(spec, cfg, int(args.scenario[5:]), RESULTS_DIR)
        text = profiling.memory_markdown(source_label(src), mem)
    else:
        prof = profiling.profile_scenario(spec, cfg, args.scenario, RESULTS_DIR, args.rate)
        text = profiling.cpu_markdown(
            args.scenario, source_label(src), prof["result"], prof, args.rate
        )
    md_path = os.path.join(RESULTS_DIR, f"profile-{args.scenario}.md")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
