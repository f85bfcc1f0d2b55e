"""A real ``redis-server`` for tests, and trio_chat server processes using it.

:func:`redis_server` (a pytest fixture) starts ``redis-server`` on a spare
127.0.0.1 port with persistence off, in the test's temporary directory, and
stops it afterwards.  The tests *fail* (they do not skip) when
``redis-server`` is not installed: CI installs it (``.ci/run``), and a
backplane that is never tested is not a passing backplane.

:class:`RedisServer` can pause (SIGSTOP), resume, kill and restart the server
on the same port, to test outages.  :func:`start_chat_process` runs
``python -m trio_chat serve`` as a real process and waits for its listening
line.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

__all__ = ["ChatProcess", "RedisServer", "redis_server", "spare_port", "start_chat_process"]

LISTENING = re.compile(r"listening on ws://([^:/\s]+):(\d+)/ws")


def spare_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (persistence off by default)."""

    def __init__(self, binary: str, directory: Path, *, appendonly: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.appendonly = appendonly
        self.port = spare_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server on its port and wait until it answers."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - handed to the process
        try:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.directory / "redis.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"redis-server did not start on port {self.port}: {tail}")
            time.sleep(0.02)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: connections drop at once, unsaved data is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def command(self, *args: str) -> bytes:
        """Run one command with ``redis-cli`` and return its raw output."""
        cli = shutil.which("redis-cli") or "redis-cli"
        return subprocess.run(
            [cli, "-p", str(self.port), *args], capture_output=True, check=True, timeout=5
        ).stdout


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed (apt-get install redis-server): "
            "the Redis backplane tests need a real one",
            pytrace=False,
        )
    return binary


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    server = RedisServer(_redis_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def durable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server writing every change to its append-only file."""
    server = RedisServer(_redis_binary(), tmp_path, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class ChatProcess:
    """A ``python -m trio_chat serve`` process (use :func:`start_chat_process`)."""

    def __init__(self, proc: subprocess.Popen[bytes], output: Path) -> None:
        self.proc = proc
        self.output = output
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 15) -> int:
        """Wait for the process to exit; return its exit code."""
        with trio.fail_after(timeout):
            while self.proc.poll() is None:
                await trio.sleep(0.05)
        return self.proc.returncode

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def start_chat_process(
    args: list[str], directory: Path, name: str = "server", timeout: float = 20
) -> ChatProcess:
    """Run ``python -m trio_chat <args>``; return once it prints its listening line.

    stdout and stderr go to ``<directory>/<name>.out`` (a file, not a pipe,
    so that nothing blocks when nobody reads).
    """
    output = directory / f"{name}.out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(output, "wb") as sink:  # noqa: ASYNC230 - a local file, opened once
        proc = subprocess.Popen(  # noqa: ASYNC220 - started, not waited for
            [sys.executable, "-m", "trio_chat", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    process = ChatProcess(proc, output)
    with trio.fail_after(timeout):
        while True:
            match = LISTENING.search(process.text())
            if match:
                process.port = int(match.group(2))
                return process
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {process.text()[-2000:]}")
            await trio.sleep(0.05)
