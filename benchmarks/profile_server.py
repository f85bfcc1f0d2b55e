#!/usr/bin/env python3
"""Profile trio_chat's server process in one benchmark scenario with py-spy.

    python benchmarks/profile_server.py handshakes
    python benchmarks/profile_server.py echo_1 --trio-chat-rev main --duration 8

Runs the scenario exactly as ``run.py`` does (server on core 0, generator on
core 1) and samples the server with ``py-spy record`` over the measured
window only (py-spy runs beside the generator on core 1, without pausing the
server: ``--nonblocking``).  Idle time (trio waiting in ``epoll``) is not
sampled, so the shares are shares of the CPU the server spent.  Writes
``results/profile-<scenario>.txt`` (py-spy's collapsed stacks, for a
flame graph) and ``results/profile-<scenario>.md``: self time by module,
and the functions with the most inclusive time.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import loadgen
from harness.scenarios import SCENARIOS, Config
from harness.servers import (
    BENCH_DIR,
    ServerProcess,
    default_specs,
    export_snapshot,
    raise_fd_limit,
    source_label,
    taskset,
)

RESULTS_DIR = os.path.join(BENCH_DIR, "results")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def module_of(path: str) -> str:
    """A short name for where a frame's code lives."""
    path = path.replace("\\", "/")
    if "trio_chat/" in path:
        return "trio_chat/" + path.rsplit("trio_chat/", 1)[1]
    if "site-packages/" in path:
        return path.rsplit("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if path.startswith("<"):
        return "python (import machinery)"
    return "stdlib " + os.path.basename(path)


def parse(raw: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part)
            frames.append((m["func"], m["file"]) if m else (part, "?"))
        stacks.append((frames, int(count)))
    return stacks


def summarize(stacks, top: int = 15) -> tuple[int, list, list, list]:
    total = sum(n for _, n in stacks)
    self_mod: collections.Counter = collections.Counter()
    incl_mod: collections.Counter = collections.Counter()
    incl_fn: collections.Counter = collections.Counter()
    for frames, n in stacks:
        if not frames:
            continue
        _func, path = frames[-1]
        self_mod[module_of(path)] += n
        for mod in {module_of(p) for _, p in frames}:
            incl_mod[mod] += n
        for key in {(f, module_of(p)) for f, p in frames}:
            incl_fn[key] += n
    return total, self_mod.most_common(top), incl_mod.most_common(top), incl_fn.most_common(top)


def markdown(scenario: str, source: str, result: dict, summary, rate: int) -> str:
    total, self_mod, incl_mod, incl_fn = summary
    pct = lambda n: f"{100 * n / total:.1f}%" if total else "n/a"  # noqa: E731
    lines = [
        f"py-spy profile of trio_chat ({source}) in `{scenario}`: {total:,} samples at "
        f"{rate}/s over the measured window (busy time only). Scenario result: "
        + ", ".join(
            f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in result.items()
            if k in KEYS
        )
        + ".",
        "",
        "| self time, by module | share |",
        "|---|---|",
        *[f"| {mod} | {pct(n)} |" for mod, n in self_mod],
        "",
        "| inclusive time, by module | share |",
        "|---|---|",
        *[f"| {mod} | {pct(n)} |" for mod, n in incl_mod],
        "",
        "| inclusive time, by function | module | share |",
        "|---|---|---|",
        *[f"| `{func}` | {mod} | {pct(n)} |" for (func, mod), n in incl_fn],
    ]
    return "\n".join(lines)


KEYS = (
    "handshakes_per_s",
    "server_us_per_handshake",
    "round_trips_per_s",
    "server_us_per_round_trip",
    "deliveries_per_s",
    "server_us_per_delivery",
    "seconds_to_all_joined",
    "server_us_per_connection",
    "p99_ms",
)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scenario", choices=[s for s in SCENARIOS if not s.startswith("idle")])
    p.add_argument("--duration", type=float, default=6.0, help="measured window, seconds")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--trio-chat-rev", help="profile trio_chat as committed at this revision")
    p.add_argument("--trio-chat-args", default="", help="extra arguments for trio_chat serve")
    args = p.parse_args()
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(pyspy):
        print("py-spy is needed: pip install py-spy (it is in the bench extra)", file=sys.stderr)
        return 2
    raise_fd_limit()
    loadgen.build()
    src = export_snapshot(args.trio_chat_rev) if args.trio_chat_rev else None
    spec = default_specs(trio_chat_src=src, trio_chat_extra=args.trio_chat_args.split())[
        "trio_chat"
    ]
    os.makedirs(RESULTS_DIR, exist_ok=True)
    raw_path = os.path.join(RESULTS_DIR, f"profile-{args.scenario}.txt")
    recorder: dict[str, subprocess.Popen] = {}

    def on_window(server: ServerProcess, mark: str) -> None:
        if mark == "measure_start":
            recorder["p"] = subprocess.Popen(
                [
                    *taskset(1),
                    pyspy,
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(args.rate),
                    "--nonblocking",
                    "--output",
                    raw_path,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        elif "p" in recorder:
            proc = recorder["p"]
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    cfg = Config(
        duration=args.duration,
        log_dir=os.path.join(RESULTS_DIR, "raw"),
        on_window=on_window,
    )
    os.makedirs(cfg.log_dir, exist_ok=True)
    result = SCENARIOS[args.scenario](spec, cfg)
    proc = recorder.get("p")
    if proc is None or not os.path.exists(raw_path):
        err = proc.stderr.read().decode(errors="replace") if proc and proc.stderr else ""
        print(f"py-spy wrote no profile: {err[-500:]}", file=sys.stderr)
        return 1
    with open(raw_path) as f:
        stacks = parse(f.read())
    text = markdown(args.scenario, source_label(src), result, summarize(stacks), args.rate)
    md_path = os.path.join(RESULTS_DIR, f"profile-{args.scenario}.md")
    with open(md_path, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\nwrote {md_path} and {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
