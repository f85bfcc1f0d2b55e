"""Profiles of the trio_chat server inside a benchmark scenario.

* ``profile_scenario``: py-spy samples the server over the scenario's
  measured window only (``Config.on_window``); py-spy runs on the
  generator's core and stops the server for each sample (a few µs, 200
  times a second: without that, stacks read while they change are
  misattributed), and idle time (trio waiting in ``epoll``) is not sampled,
  so shares are shares of the CPU the server spent.
* ``memory_profile``: the server runs under tracemalloc
  (``tracemalloc_launch.py``); a snapshot before and one with N idle
  connections open give the allocation sites that hold the memory, per
  connection.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from . import loadgen
from .scenarios import SCENARIOS, Config
from .servers import ServerProcess, ServerSpec, taskset

HERE = os.path.dirname(os.path.abspath(__file__))
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
RESULT_KEYS = (
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


def pyspy_binary() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else None


def module_of(path: str) -> str:
    """A short name for where a frame's code lives."""
    path = path.replace("\\", "/")
    if "trio_chat/" in path:
        return "trio_chat/" + path.rsplit("trio_chat/", 1)[1]
    if "site-packages/" in path:  # py-spy shortens these to "package/module.py"
        path = path.rsplit("site-packages/", 1)[1]
    if path.startswith("<attrs generated methods "):  # e.g. a trio class's __init__
        return path.removeprefix("<attrs generated methods ").split(".", 1)[0]
    if path.startswith("<"):
        return "python runtime"
    if "/" in path and not path.startswith("/"):
        return path.split("/", 1)[0]
    return "stdlib " + os.path.basename(path)


def parse(raw: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's raw (collapsed) stacks: [(frames root→leaf, samples)]."""
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


def _trunk(func: str, module: str) -> bool:
    return module in ("python runtime", "trio_chat/_cli.py", "trio_chat/__main__.py") or (
        module == "trio" and func in ("run", "unrolled_run", "_run_handler")
    )


def summarize(stacks, top: int = 15) -> dict:
    total = sum(n for _, n in stacks)
    self_mod: collections.Counter = collections.Counter()
    incl_mod: collections.Counter = collections.Counter()
    incl_fn: collections.Counter = collections.Counter()
    for frames, n in stacks:
        if not frames:
            continue
        self_mod[module_of(frames[-1][1])] += n
        for mod in {module_of(p) for _, p in frames}:
            incl_mod[mod] += n
        for key in {(f, module_of(p)) for f, p in frames}:
            incl_fn[key] += n
    # The trunk (interpreter, trio's run loop, the CLI) is in every sample
    # and says nothing: leave it out of the function table.
    branches = [(k, n) for k, n in incl_fn.most_common() if not _trunk(*k)]
    return {
        "samples": total,
        "self_by_module": self_mod.most_common(top),
        "inclusive_by_module": incl_mod.most_common(top),
        "inclusive_by_function": branches[:top],
    }


def cpu_markdown(scenario: str, source: str, result: dict, summary: dict, rate: int, top=15):
    total = summary["samples"]
    pct = lambda n: f"{100 * n / total:.1f}%" if total else "n/a"  # noqa: E731
    facts = ", ".join(
        f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in result.items()
        if k in RESULT_KEYS and v is not None
    )
    return "\n".join(
        [
            f"py-spy profile of trio_chat ({source}) in `{scenario}`: {total:,} samples at "
            f"{rate}/s over the measured window (busy time only). In this run: {facts}.",
            "",
            "| self time, by module | share |",
            "|---|---|",
            *[f"| {mod} | {pct(n)} |" for mod, n in summary["self_by_module"][:top]],
            "",
            "| inclusive time, by function | module | share |",
            "|---|---|---|",
            *[
                f"| `{func}` | {mod} | {pct(n)} |"
                for (func, mod), n in summary["inclusive_by_function"][:top]
            ],
        ]
    )


def profile_scenario(
    spec: ServerSpec, cfg: Config, scenario: str, out_dir: str, rate: int = 200
) -> dict:
    """Run ``scenario`` once with py-spy on the server over its measured window."""
    pyspy = pyspy_binary()
    if not pyspy:
        raise RuntimeError("py-spy is not installed (it is in the bench extra)")
    raw_path = os.path.join(out_dir, f"profile-{scenario}.txt")
    if os.path.exists(raw_path):
        os.remove(raw_path)
    recorder: dict[str, subprocess.Popen] = {}

    def on_window(server: ServerProcess, mark: str) -> None:
        if mark == "measure_start":
            recorder["p"] = subprocess.Popen(
                [
                    *taskset(cfg.gen_core),
                    pyspy,
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(rate),
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

    result = SCENARIOS[scenario](spec, dataclasses.replace(cfg, on_window=on_window))
    proc = recorder.get("p")
    if proc is None or not os.path.exists(raw_path):
        err = proc.stderr.read().decode(errors="replace") if proc and proc.stderr else ""
        raise RuntimeError(f"py-spy wrote no profile: {err[-300:]}")
    with open(raw_path) as f:
        summary = summarize(parse(f.read()))
    return {"scenario": scenario, "result": result, "raw": raw_path, **summary}


def memory_profile(spec: ServerSpec, cfg: Config, count: int, out_dir: str) -> dict:
    """Allocation sites holding the memory of ``count`` idle connections.

    Needs trio_chat started as ``python -m trio_chat`` (the launcher replaces
    ``-m trio_chat``)."""
    if spec.command[1:] != ["-m", "trio_chat"]:
        raise RuntimeError("memory profile needs trio_chat started with python -m trio_chat")
    out = os.path.join(out_dir, "memory-profile.tmp")
    if os.path.exists(out):
        os.remove(out)
    mspec = dataclasses.replace(
        spec,
        command=[spec.command[0], os.path.join(HERE, "tracemalloc_launch.py")],
        env={**spec.env, "BENCH_TRACEMALLOC_OUT": out},
    )

    def snapshot(srv: ServerProcess, timeout: float = 120) -> str:
        before = os.stat(out).st_mtime_ns if os.path.exists(out) else 0
        os.kill(srv.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(out) and os.stat(out).st_mtime_ns != before:
                with open(out) as f:
                    return f.read()
            time.sleep(0.1)
        raise RuntimeError("no tracemalloc snapshot from the server")

    log = os.path.join(cfg.log_dir, "trio_chat-tracemalloc.log") if cfg.log_dir else None
    with ServerProcess(mspec, core=cfg.server_core, log_path=log) as srv:
        time.sleep(0.5)
        snapshot(srv)
        rss0 = srv.stable_rss()
        holder = loadgen.Holder(
            srv.port,
            {"clients": count, "room_size": 0, "concurrency": 200, "connect_timeout": 180},
            core=cfg.gen_core,
        )
        try:
            holder.wait_event("ready")
            rss1 = srv.stable_rss()
            opened = holder.command("stats", "stats").get("open", 0)
            text = snapshot(srv)
        finally:
            holder.close()
    os.remove(out)
    sections: dict[str, list[tuple[int, int, str]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# by "):
            current = sections.setdefault(line[5:], [])
        elif current is not None and line.count("\t") == 2:
            size, blocks, site = line.split("\t")
            current.append((int(size), int(blocks), site))
    return {
        "connections": opened,
        "rss_kb_per_connection": (rss1 - rss0) / max(opened, 1) / 1024,
        "by_file": sections.get("filename", []),
        "by_line": sections.get("lineno", []),
    }


def _site(path: str) -> str:
    """A tracemalloc file name, shortened: package/module.py, or stdlib x.py."""
    line = ""
    if re.search(r":\d+$", path):
        path, line = path.rsplit(":", 1)
        line = ":" + line
    if "trio_chat/" in path:
        path = "trio_chat/" + path.rsplit("trio_chat/", 1)[1]
    elif "site-packages/" in path:
        path = path.rsplit("site-packages/", 1)[1]
    elif path.startswith("/"):
        path = "stdlib " + os.path.basename(path)
    return f"`{path}{line}`"


def memory_markdown(source: str, mem: dict, top: int = 12) -> str:
    n = max(mem["connections"], 1)
    traced = sum(size for size, _, _ in mem["by_file"] if size > 0)
    return "\n".join(
        [
            f"tracemalloc profile of trio_chat ({source}) holding {mem['connections']:,} idle "
            f"connections: Python allocations grew by {traced / n / 1024:.1f} KB per connection "
            f"(RSS under tracemalloc, which adds its own record to every block: "
            f"{mem['rss_kb_per_connection']:.1f} KB per connection).",
            "",
            "| allocated in | KB per connection | blocks per connection |",
            "|---|---|---|",
            *[
                f"| {_site(site)} | {size / n / 1024:.2f} | {blocks / n:.1f} |"
                for size, blocks, site in mem["by_file"][:top]
                if size > 0
            ],
            "",
            "| allocated at (line) | KB per connection |",
            "|---|---|",
            *[
                f"| {_site(site)} | {size / n / 1024:.2f} |"
                for size, _, site in mem["by_line"][:top]
                if size > 0
            ],
        ]
    )
