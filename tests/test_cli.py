"""The real process: ``python -m trio_chat`` (and ``examples/embed.py``) as subprocesses.

Each test starts the command on port 0, reads the one listening line from its
stdout, talks to it over real sockets, then stops it with a signal and checks
the exit code and what it wrote to stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed

from trio_chat import Config
from trio_chat.testing import open_test_client

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(
    r"^trio-chat listening on (ws://127\.0\.0\.1:(\d+)/ws)( \(chat page: http://127\.0\.0\.1:\2/\))?$"
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any TRIO_CHAT_* setting, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}
    env.update(extra)
    return env


class Lines:
    """Lines from a trio receive stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def readline(self) -> str | None:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest.decode() if rest else None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    async def rest(self) -> list[str]:
        lines = []
        while (line := await self.readline()) is not None:
            lines.append(line)
        return lines


class Running:
    """A started server process: its URL, its stdout lines and its stderr."""

    def __init__(self, process: trio.Process, url: str, stdout: Lines) -> None:
        self.process = process
        self.url = url
        self.stdout = stdout
        self.stderr = b""
        self.listening_line = ""
        #: Set (and replaced) whenever more stderr arrives.
        self.stderr_grew = trio.Event()

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.decode().splitlines()

    async def wait_for_stderr(self, text: str) -> None:
        with trio.fail_after(10):
            while text.encode() not in self.stderr:
                await self.stderr_grew.wait()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send *signum*, wait (bounded) for the exit; return the exit code."""
        self.process.send_signal(signum)
        with trio.fail_after(10):
            return await self.process.wait()


@asynccontextmanager
async def run(argv: list[str], env: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """Start *argv*, wait for its listening line; kill it if still running at exit."""
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else clean_env(),
        cwd=ROOT,
    )
    try:
        async with trio.open_nursery() as nursery:
            stdout = Lines(process.stdout)
            running = Running(process, "", stdout)

            async def collect_stderr() -> None:
                while chunk := await process.stderr.receive_some():
                    running.stderr += chunk
                    running.stderr_grew.set()
                    running.stderr_grew = trio.Event()

            nursery.start_soon(collect_stderr)
            try:
                with trio.fail_after(15):
                    line = await stdout.readline()
                match = LISTENING.match(line or "")
                assert match, f"not the listening line: {line!r}; stderr: {running.stderr!r}"
                running.url = match.group(1)
                running.listening_line = line or ""
                yield running
            finally:
                if process.returncode is None:
                    process.kill()  # so that stderr ends and the nursery can exit
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


#: Each server started by these tests keeps its data in a directory of its own.
DATA_ROOT = tempfile.TemporaryDirectory(prefix="trio-chat-cli-")


def serve(*args: str) -> list[str]:
    """``trio-chat serve`` on a free port, with a new, empty data directory
    unless *args* name one."""
    if not any(a in ("--data-dir", "--store") for a in args):
        args = ("--data-dir", tempfile.mkdtemp(dir=DATA_ROOT.name), *args)
    return [sys.executable, "-m", "trio_chat", "serve", "--port", "0", *args]


async def close_code(ws: trio_websocket.WebSocketConnection) -> int:
    with trio.fail_after(10):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


# ---------------------------------------------------------------- serve


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_chat_then_signal_closes_1001_and_exits_0(signum):
    async with run(serve()) as server:
        async with (
            open_test_client(server.url, user="alice") as alice,
            open_test_client(server.url, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            await alice.expect("system")
            for i in range(10):
                ack = await alice.chat("lobby", f"secret-{i}")
                assert ack["payload"]["id"] == i + 1
            for i in range(10):
                frame = await bob.receive()
                assert frame["payload"]["content"] == f"secret-{i}"
            await bob.send("direct", {"to": "alice", "content": "psst"})
            assert (await alice.expect("direct"))["payload"]["from"] == "bob"

            # Stop it: both clients see the graceful close, the process exits 0.
            server.process.send_signal(signum)
            assert await close_code(alice.ws) == 1001
            assert await close_code(bob.ws) == 1001
        with trio.fail_after(10):
            assert await server.process.wait() == 0
        assert await server.stdout.rest() == []  # exactly one line on stdout

    lines = server.stderr_lines
    for user in ("alice", "bob"):
        mine = [line for line in lines if f"user={user} " in line]
        # One line per connect and per disconnect; nothing per message.
        assert len(mine) == 2, mine
        connect, disconnect = mine
        assert re.search(rf"\bconnect user={user} peer=127\.0\.0\.1\b", connect), connect
        assert re.search(
            rf"\bdisconnect user={user} peer=127\.0\.0\.1 .*duration=\d+\.\ds "
            r"code=1001 by=server reason=server shutting down$",
            disconnect,
        ), disconnect
    assert not any("secret-" in line or "psst" in line for line in lines)


async def test_json_log_format():
    async with run(serve("--log-format", "json")) as server:
        async with open_test_client(server.url, user="carol"):
            pass
        await server.wait_for_stderr('"disconnect user=carol')
        assert await server.stop() == 0
    entries = [json.loads(line) for line in server.stderr_lines]
    assert entries, "no log lines"
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["time"])
    messages = [e["message"] for e in entries]
    assert any(m.startswith("connect user=carol peer=127.0.0.1") for m in messages), messages
    (disconnect,) = [m for m in messages if m.startswith("disconnect user=carol")]
    assert "duration=" in disconnect and "code=1000" in disconnect, disconnect


async def test_log_level_warning_is_quiet():
    async with run(serve("--log-level", "warning")) as server:
        async with open_test_client(server.url, user="dave"):
            pass
        assert await server.stop() == 0
    assert server.stderr_lines == []


async def test_precedence_flags_over_env_over_file(tmp_path):
    config = tmp_path / "chat.toml"
    config.write_text("ping_interval = 11\nrate_messages = 5\nmax_content_chars = 100\n")
    env = clean_env(TRIO_CHAT_PING_INTERVAL="22", TRIO_CHAT_RATE_MESSAGES="6")
    async with run(serve("--config", str(config), "--ping-interval", "33"), env=env) as server:
        async with open_test_client(server.url, user="eve") as eve:
            limits = eve.welcome["payload"]["limits"]
        assert await server.stop() == 0
    assert limits == {
        "max_message_bytes": 65536,  # default
        "max_content_chars": 100,  # file
        "rate": {"messages": 6, "per_seconds": 10.0},  # environment over file
        "ping_interval_seconds": 33.0,  # flag over environment and file
        "reactions": list(Config().reactions),  # default
    }


# ---------------------------------------------------------------- bad settings


async def exits_with_error(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run *argv* to completion; assert exit code 2 and no stdout; return stderr."""
    with trio.fail_after(15):
        result = await trio.run_process(
            argv,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env if env is not None else clean_env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 2, result
    assert result.stdout == b""
    return result.stderr.decode()


#: The validation of each setting is tested in-process (test_config.py); here,
#: that each source's error reaches the user as one line and exit code 2.
BAD_SETTINGS = [
    # (flags, environment, config file text, the setting the error names)
    (["--ping-interval", "soon"], {}, None, "ping_interval"),
    (["--port", "70000"], {}, None, "port"),
    ([], {"TRIO_CHAT_WRITE_TIMEOUT": "-1"}, None, "write_timeout"),
    ([], {}, "history_size = -5\n", "history_size"),
    ([], {}, "no_such_setting = 1\n", "no_such_setting"),
    ([], {}, "[[broken\n", "config"),
]


async def test_bad_settings_exit_2_with_one_line_naming_the_setting(tmp_path):
    results: dict[int, str] = {}

    async def attempt(i: int, flags: list[str], env: dict[str, str], text: str | None) -> None:
        if text is not None:
            path = tmp_path / f"bad{i}.toml"
            path.write_text(text)
            flags = [*flags, "--config", str(path)]
        results[i] = await exits_with_error(serve(*flags), env=clean_env(**env))

    async with trio.open_nursery() as nursery:  # run the processes side by side
        for i, (flags, env, text, _) in enumerate(BAD_SETTINGS):
            nursery.start_soon(attempt, i, flags, env, text)
    for i, (*_, setting) in enumerate(BAD_SETTINGS):
        lines = results[i].splitlines()
        assert len(lines) == 1, results[i]
        assert lines[0].startswith(f"trio-chat: error: {setting}:"), lines[0]
    assert results[1].splitlines() == [
        "trio-chat: error: port: must be between 0 and 65535, got 70000"
    ]


async def test_unknown_flag_exits_2():
    stderr = await exits_with_error(serve("--pingg-interval", "3"))
    assert "--pingg-interval" in stderr.splitlines()[-1]


async def test_port_in_use_is_one_line_and_exit_2():
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr = await exits_with_error(serve("--port", str(port)))
    assert stderr.splitlines() == [
        f"trio-chat: error: cannot listen on 127.0.0.1:{port}: the address is already in use"
    ]


async def test_unknown_host_is_one_line_and_exit_2():
    stderr = await exits_with_error(serve("--host", "192.0.2.1"))
    assert stderr.splitlines() == [
        "trio-chat: error: cannot listen on 192.0.2.1:0: no such local address"
    ]


async def test_listening_line_names_the_page_too():
    async with run(serve("--port", "0")) as server:
        line = server.listening_line
        port = server.url.split(":")[-1].split("/")[0]
        assert line == (
            f"trio-chat listening on ws://127.0.0.1:{port}/ws (chat page: http://127.0.0.1:{port}/)"
        )
        assert await server.stop() == 0


async def test_version_flag():
    from trio_chat import __version__

    result = await trio.run_process(
        [sys.executable, "-m", "trio_chat", "--version"], capture_stdout=True
    )
    assert result.stdout.decode().strip() == f"trio-chat {__version__}"


async def test_help_shows_what_each_option_takes():
    result = await trio.run_process(
        [sys.executable, "-m", "trio_chat", "serve", "--help"], capture_stdout=True
    )
    text = " ".join(result.stdout.decode().split())
    assert "--max-connections-per-ip N" in text
    assert "--max-handshakes-per-ip N" in text
    assert "--max-rooms-per-connection N" in text
    assert "--max-message-bytes BYTES" in text
    assert "--ping-interval SECONDS" in text
    assert "--log-level {debug,info,warning,error}" in text
    assert "--log-format {text,json}" in text
    assert text.count("anonymous mode") == 1  # --secret's default, said once
    connect = await trio.run_process(
        [sys.executable, "-m", "trio_chat", "connect", "--help"], capture_stdout=True
    )
    for command in ("/join ROOM", "/leave", "/dm USER TEXT", "/status", "/quit", "/help"):
        assert command in connect.stdout.decode()
    for sub in ("serve", "echo", "token", "connect"):
        sub_help = await trio.run_process(
            [sys.executable, "-m", "trio_chat", sub, "--help"], capture_stdout=True
        )
        _usage, _, rest = sub_help.stdout.decode().partition("\n\n")
        assert rest.strip() and not rest.startswith("positional"), (sub, "no description")


async def test_short_secret_refused_by_serve():
    stderr = await exits_with_error(serve("--secret", "abc"))
    assert stderr.splitlines()[0].startswith(
        "trio-chat: error: secret: must be at least 32 bytes, got 3"
    )
    assert len(stderr.splitlines()) == 1


# ---------------------------------------------------------------- echo, entry point


async def test_echo_command_echoes_text_and_binary():
    argv = [sys.executable, "-m", "trio_chat", "echo", "--port", "0"]
    async with run(argv) as server:
        async with trio_websocket.open_websocket_url(server.url) as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            await ws.send_message(b"\x00\xffbytes")
            assert await ws.get_message() == b"\x00\xffbytes"
            big = "x" * 200_000  # the echo server allows large messages
            await ws.send_message(big)
            assert await ws.get_message() == big
        assert await server.stop() == 0


async def test_console_script_is_installed():
    script = Path(sys.executable).with_name("trio-chat")
    assert script.exists(), script
    result = await trio.run_process([str(script), "serve", "--help"], capture_stdout=True)
    help_text = result.stdout.decode()
    assert "--ping-interval" in help_text and "TRIO_CHAT_PING_INTERVAL" in help_text


# ---------------------------------------------------------------- the example


async def test_embed_example_runs_beside_its_own_tasks():
    argv = [
        sys.executable,
        str(ROOT / "examples" / "embed.py"),
        "--port",
        "0",
        "--interval",
        "0.05",
        "--stats-interval",
        "0.05",
    ]
    async with run(argv) as example:
        async with open_test_client(example.url, user="watcher") as watcher:
            joined = await watcher.join("clock")
            seen = [m["id"] for m in joined["payload"]["history"]]
            ticks = []
            while len(ticks) < 3:
                frame = await watcher.expect("chat")
                assert frame["payload"]["user_id"] == "clock"
                ticks.append(frame["payload"])
            ids = [t["id"] for t in ticks]
            assert ids == list(range(ids[0], ids[0] + 3))
            assert all(t["content"] == f"tick {t['id']}" for t in ticks)
            # The join's history held the ticks before it (the last 100 at most).
            assert seen == list(range(max(1, ids[0] - 100), ids[0]))
            with trio.fail_after(10):
                while True:
                    line = await example.stdout.readline()
                    assert line is not None
                    if line.startswith("stats: 1 connections"):
                        break
            example.process.send_signal(signal.SIGINT)
            assert await close_code(watcher.ws) == 1001
        with trio.fail_after(10):
            assert await example.process.wait() == 0
