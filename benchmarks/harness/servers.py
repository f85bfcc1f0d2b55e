"""Start and observe the servers under test.

Each server is a subprocess pinned to one core with ``taskset``.  It must
print one stdout line ``... listening on ws://HOST:PORT/ws`` once it accepts
connections; the port is read from that line (servers are started with
``--port 0``).  The process is observed with psutil: RSS for memory, and
``cpu_times()`` (user + system) for the CPU it spends over a measured window.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(BENCH_DIR)
PEERS_DIR = os.path.join(BENCH_DIR, "peers")
LISTENING = re.compile(r"listening on ws://([^:/\s]+):(\d+)")

# Options that switch off trio_chat's protections which would otherwise stop
# a benchmark: per-connection rate limits and per-IP connection limits (all
# load comes from 127.0.0.1).
TRIO_CHAT_BENCH_ARGS = [
    "--rate-messages",
    "1000000000",
    "--rate-seconds",
    "1",
    "--max-connections",
    "100000",
    "--max-connections-per-ip",
    "100000",
    "--max-handshakes-per-ip",
    "100000000",
    # The peers log nothing per connection; trio_chat logs every connect and
    # disconnect at "info".
    "--log-level",
    "warning",
]


@dataclass
class ServerSpec:
    """How to start one server in chat (``serve``), ``echo`` or ``deflate``
    mode.

    ``command`` is the argv prefix; the mode word, ``--host``, ``--port`` and
    ``extra`` (chat mode only) are appended.  ``deflate`` is chat mode with
    ``deflate_args`` added: what makes the server negotiate permessage-deflate
    when a client offers it (nothing for trio_chat, which negotiates it by
    default where it implements it).
    """

    name: str
    command: list[str]
    extra: list[str] = field(default_factory=list)
    label: str = ""
    cwd: str = REPO_DIR  # also put first on PYTHONPATH
    prestart: list[str] | None = None  # a command run before every start
    deflate_args: list[str] = field(default_factory=lambda: ["--deflate"])
    # An option given a fresh empty directory at every start (e.g. a data dir).
    fresh_dir_arg: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the environment

    def argv(self, mode: str) -> list[str]:
        word = "serve" if mode == "deflate" else mode
        args = [*self.command, word, "--host", "127.0.0.1", "--port", "0"]
        if word == "serve":
            args += self.extra
        if mode == "deflate":
            args += self.deflate_args
        return args


def default_specs(
    python: str = sys.executable,
    trio_chat_cmd: str | None = None,
    trio_chat_extra: list[str] | None = None,
    trio_chat_src: str | None = None,
) -> dict[str, ServerSpec]:
    """The peers and trio_chat.

    ``trio_chat_cmd`` replaces ``python -m trio_chat``; ``trio_chat_src`` is
    the directory holding the ``trio_chat`` package to measure (default: this
    checkout), e.g. an exported snapshot of a commit.
    """
    peer = lambda f: [python, os.path.join(PEERS_DIR, f)]  # noqa: E731
    tc_cmd = shlex.split(trio_chat_cmd) if trio_chat_cmd else [python, "-m", "trio_chat"]
    return {
        "websockets-asyncio": ServerSpec(
            "websockets-asyncio", peer("ws_asyncio.py"), label="websockets (asyncio) + broadcast()"
        ),
        "trio_chat": ServerSpec(
            "trio_chat",
            tc_cmd,
            TRIO_CHAT_BENCH_ARGS + list(trio_chat_extra or []),
            label="trio_chat",
            cwd=os.path.abspath(trio_chat_src or REPO_DIR),
            deflate_args=[],
        ),
        "picows": ServerSpec("picows", peer("picows_hub.py"), label="picows (Cython, asyncio)"),
        "websockets-trio": ServerSpec(
            "websockets-trio", peer("ws_trio.py"), label="websockets.trio + broadcast()"
        ),
        "trio-naive": ServerSpec("trio-naive", peer("trio_naive.py"), label="naive trio-websocket"),
        # Optional (run.py --with-node): needs node and `npm ci` in benchmarks/.
        "node-ws": ServerSpec(
            "node-ws", ["node", os.path.join(PEERS_DIR, "ws_node.mjs")], label="Node.js ws"
        ),
    }


# Not in the default run: the two trio designs (run.py --trio-peers) and
# Node.js (run.py --with-node).
OPTIONAL = {"node-ws", "websockets-trio", "trio-naive"}
TRIO_PEERS = ("websockets-trio", "trio-naive")

# trio_chat with its SQLite history store, where the measured trio_chat has
# one (``--store sqlite --data-dir DIR``): measured in these scenarios only,
# against trio_chat's default in-memory history in the same run.
SQLITE_VARIANT = "trio_chat-sqlite"
VARIANT_SCENARIOS = {SQLITE_VARIANT: ("fanout_max", "fanout_rate", "many_rooms")}


# Limits that a benchmark from one address would hit, in trio_chat versions
# that have them: lifted where ``serve --help`` lists them.
TRIO_CHAT_OPTIONAL_BENCH_ARGS = {
    # connect_10000 joins 1,000 rooms from 127.0.0.1
    "--max-rooms-created-per-client": "100000",
}


def serve_help(trio_chat: ServerSpec) -> str:
    """The measured trio_chat's ``serve --help`` text ('' if it fails)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = trio_chat.cwd + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run(
            [*trio_chat.command, "serve", "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=trio_chat.cwd,
            env=env,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out


def has_store_option(trio_chat: ServerSpec) -> bool:
    """Whether the measured trio_chat has ``--store`` / ``--data-dir``."""
    out = serve_help(trio_chat)
    return "--store" in out and "--data-dir" in out


def lift_optional_limits(trio_chat: ServerSpec) -> None:
    """Add ``TRIO_CHAT_OPTIONAL_BENCH_ARGS`` that this trio_chat has."""
    out = serve_help(trio_chat)
    for flag, value in TRIO_CHAT_OPTIONAL_BENCH_ARGS.items():
        if re.search(re.escape(flag) + r"\b", out) and flag not in trio_chat.extra:
            trio_chat.extra = [*trio_chat.extra, flag, value]


def use_memory_store(trio_chat: ServerSpec) -> None:
    """Run trio_chat with its in-memory history (``--store memory``), as the
    peers keep nothing on disk, and give it a fresh ``--data-dir`` at every
    start so that nothing is read from, or left in, the checkout."""
    if "--store" not in trio_chat.extra:  # unless --trio-chat-args chose one
        trio_chat.extra = [*trio_chat.extra, "--store", "memory"]
    if "--data-dir" not in trio_chat.extra:
        trio_chat.fresh_dir_arg = "--data-dir"


def sqlite_variant(trio_chat: ServerSpec) -> ServerSpec:
    """trio_chat with ``--store sqlite`` in a fresh ``--data-dir`` per start."""
    extra = list(trio_chat.extra)
    if "--store" in extra:
        del extra[extra.index("--store") : extra.index("--store") + 2]
    return ServerSpec(
        SQLITE_VARIANT,
        trio_chat.command,
        [*extra, "--store", "sqlite"],
        label="trio_chat, --store sqlite",
        cwd=trio_chat.cwd,
        deflate_args=[],
        fresh_dir_arg="--data-dir",
    )


def ensure_node_deps() -> None:
    """``npm ci`` in benchmarks/ unless the ``ws`` package is already there."""
    if os.path.isdir(os.path.join(BENCH_DIR, "node_modules", "ws")):
        return
    if not shutil.which("npm"):
        raise ServerError("node-ws needs node and npm")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=BENCH_DIR,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def refhub_spec(batch: bool = True) -> ServerSpec:
    """The native reference hub (loadgen/refhub.c), for the generator's ceiling."""
    binary = os.path.join(BENCH_DIR, "loadgen", "build", "refhub")
    return ServerSpec(
        "refhub" if batch else "refhub-unbatched",
        [binary],
        [] if batch else ["--no-batch"],
        label="native reference hub",
    )


class RedisServer:
    """A throw-away ``redis-server`` on a free 127.0.0.1 port (no persistence),
    for measuring trio_chat with ``--redis-url``."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise ServerError("redis-server did not start")

    def flush_command(self) -> list[str] | None:
        cli = shutil.which("redis-cli")
        return [cli, "-p", str(self.port), "flushall"] if cli else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def export_snapshot(rev: str = "HEAD") -> str:
    """Export the committed ``trio_chat`` package at ``rev`` to a temporary
    directory (``git archive``), so a run measures one fixed commit even if
    the working tree changes meanwhile.  Returns the directory."""
    import atexit
    import tempfile

    out = tempfile.mkdtemp(prefix="trio-chat-snapshot-")
    atexit.register(shutil.rmtree, out, True)
    archive = subprocess.run(
        ["git", "-C", REPO_DIR, "archive", rev, "trio_chat"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    commit = subprocess.run(
        ["git", "-C", REPO_DIR, "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(os.path.join(out, "COMMIT"), "w") as f:
        f.write(commit + "\n")
    return out


def source_label(src: str | None) -> str:
    """How a run names the trio_chat it measured: a snapshot's commit, a
    directory, or the working tree."""
    if not src:
        return "the working tree"
    commit = os.path.join(src, "COMMIT")
    if os.path.exists(commit):
        with open(commit) as f:
            return "commit " + f.read().strip()
    return src


def raise_fd_limit(target: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (hard too, when allowed) so children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want_hard in (max(hard, target), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want_hard, want_hard))
            return want_hard
        except (ValueError, OSError):
            continue
    return soft


def taskset(core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(core)]


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """A running server; use as a context manager."""

    def __init__(
        self,
        spec: ServerSpec,
        mode: str = "serve",
        core: int | None = 0,
        start_timeout: float = 20.0,
        log_path: str | None = None,
    ):
        self.spec, self.mode, self.core = spec, mode, core
        self.start_timeout = start_timeout
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self._lines: list[str] = []
        self._fresh_dir: str | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.spec.prestart:
            subprocess.run(self.spec.prestart, check=False, capture_output=True)
        argv = taskset(self.core) + self.spec.argv(self.mode)
        if self.spec.fresh_dir_arg and self.mode != "echo":  # chat modes only
            import tempfile

            self._fresh_dir = tempfile.mkdtemp(prefix=f"bench-{self.spec.name}-")
            argv += [self.spec.fresh_dir_arg, self._fresh_dir]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.spec.env)
        env["PYTHONPATH"] = self.spec.cwd + os.pathsep + env.get("PYTHONPATH", "")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        if self.log_path:
            log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.spec.cwd,
            start_new_session=True,
        )
        if log is not subprocess.DEVNULL:
            log.close()
        found = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self._lines.append(line)
                m = LISTENING.search(line)
                if m and not found.is_set():
                    self.port = int(m.group(2))
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self.spec.name} did not start: "
                    + " | ".join(self._lines[-5:])
                    + self._log_tail()
                )
        self.ps = psutil.Process(self.proc.pid)
        # taskset execs the server in place, so the pid is the server's.

    def _log_tail(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(self.log_path) - 600))
            return " | log: " + f.read().decode(errors="replace").replace("\n", " / ")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        """Server CPU seconds so far (user + system), its live child processes
        (``--workers``) included."""
        total = 0.0
        try:
            procs = [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            procs = [self.ps]
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def run_queue_wait(self) -> float:
        """Seconds the server's threads have spent runnable but waiting for a
        CPU (``/proc/PID/task/*/schedstat``, second field): time other work
        took from it on its core.  0.0 where schedstat is unavailable."""
        total = 0
        try:
            pids = [self.ps.pid] + [c.pid for c in self.ps.children(recursive=True)]
        except psutil.Error:
            pids = [self.ps.pid]
        for pid in pids:
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                continue
        return total / 1e9

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def num_fds(self) -> int:
        return self.ps.num_fds()

    def stable_rss(
        self, settle: float = 0.5, timeout: float = 8.0, tolerance: float = 0.005
    ) -> int:
        """RSS once two samples ``settle`` seconds apart differ by < tolerance."""
        last = self.rss()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(settle)
            now = self.rss()
            if abs(now - last) <= tolerance * max(last, 1):
                return now
            last = now
        return last

    def stop(self, grace: float = 5.0) -> None:
        try:
            self._stop(grace)
        finally:
            if self._fresh_dir:
                shutil.rmtree(self._fresh_dir, ignore_errors=True)
                self._fresh_dir = None

    def _stop(self, grace: float) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
