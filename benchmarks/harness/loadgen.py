"""Build and drive the compiled load generator (``benchmarks/loadgen/loadgen.c``).

The generator is one C process (epoll, non-blocking sockets) pinned to its
own core.  It prints ``EVENT <name> <json>`` lines while it runs and a final
``RESULT <json>``.  ``run()`` calls back on each event, which is how the
server's CPU time is sampled exactly at the start and end of the measured
window (``measure_start`` / ``measure_end``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable

from .servers import BENCH_DIR, taskset

SOURCE = os.path.join(BENCH_DIR, "loadgen", "loadgen.c")
BINARY = os.path.join(BENCH_DIR, "loadgen", "build", "loadgen")
REFHUB_SOURCE = os.path.join(BENCH_DIR, "loadgen", "refhub.c")
REFHUB = os.path.join(BENCH_DIR, "loadgen", "build", "refhub")


def _compile(source: str, binary: str, force: bool, libs: tuple[str, ...] = ()) -> str:
    if (
        not force
        and os.path.exists(binary)
        and os.path.getmtime(binary) >= os.path.getmtime(source)
    ):
        return binary
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("a C compiler (gcc) is needed to build the load generator")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    subprocess.run([cc, "-O2", "-Wall", "-o", binary, source, *libs], check=True)
    return binary


def build(force: bool = False) -> str:
    """Compile the generator (gcc -O2, linked with zlib for permessage-deflate)
    and the reference hub if missing or stale."""
    _compile(REFHUB_SOURCE, REFHUB, force)
    return _compile(SOURCE, BINARY, force, libs=("-lz",))


class LoadgenError(RuntimeError):
    pass


def argv(port: int, options: dict, core: int | None = 1) -> list[str]:
    args = [*taskset(core), BINARY, "--port", str(port)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    return args


def run(
    port: int,
    options: dict,
    core: int | None = 1,
    on_event: Callable[[str, dict], None] | None = None,
    timeout: float = 300,
) -> dict:
    """Run the generator to completion; return its RESULT as a dict."""
    proc = subprocess.Popen(
        argv(port, options, core),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    result = None
    try:
        for line in proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "EVENT":
                name, _, payload = rest.partition(" ")
                if on_event:
                    on_event(name, json.loads(payload or "{}"))
            elif kind == "RESULT":
                result = json.loads(rest)
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise LoadgenError("load generator gave no result: " + proc.stderr.read()[-500:])
    return result


class Holder:
    """A generator in ``hold`` mode: connections stay open until ``close()``.

    Commands go through its stdin (``broadcast``, ``stats``, ``quit``); each
    answer is an EVENT line.
    """

    def __init__(self, port: int, options: dict, core: int | None = 1):
        self.proc = subprocess.Popen(
            argv(port, dict(options, mode="hold"), core),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def wait_event(self, name: str) -> dict:
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "EVENT":
                ev, _, payload = rest.partition(" ")
                if ev == name:
                    return json.loads(payload or "{}")
        raise LoadgenError(f"generator ended before {name}: " + self.proc.stderr.read()[-500:])

    def command(self, cmd: str, answer: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.wait_event(answer)

    def close(self) -> dict:
        result = {}
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            for line in self.proc.stdout:
                if line.startswith("RESULT "):
                    result = json.loads(line[7:])
            self.proc.wait(30)
        except (BrokenPipeError, subprocess.TimeoutExpired, ValueError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return result
