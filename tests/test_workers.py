"""``trio-chat serve --workers N``: several processes on one port.

Real processes only: the parent is started as ``python -m trio_chat serve
--workers 2`` against a real ``redis-server`` (``redis_helpers``), and talked
to over 127.0.0.1 like any deployment.  Which worker serves a connection is
the kernel's choice (``SO_REUSEPORT``), so the tests open connections until
both workers have some, as ``/healthz`` (which names the answering worker's
node) shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from http_support import http_request
from redis_helpers import RedisServer, start_chat_process
from trio_websocket import ConnectionClosed

from trio_chat.testing import TestClient, open_test_client

FAST = "?timeout=0.5&heartbeat=0.2&node_ttl=2"


def _args(redis: RedisServer) -> list[str]:
    return [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--workers",
        "2",
        "--redis-url",
        redis.url + FAST,
        "--shutdown-grace",
        "3",
        "--log-level",
        "info",
        "--healthz-node",  # /healthz says which worker answered
        "true",
    ]


def _children(pid: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                children.add(int(entry.name))
    return children


async def _nodes(port: int, tries: int = 40) -> dict[str, int]:
    """Node id -> open connections, for every worker that answered /healthz."""
    seen: dict[str, int] = {}
    for _ in range(tries):
        body = (await http_request(port, "GET", "/healthz")).json()
        assert body["backplane"] == "up"
        seen[body["node"]] = body["connections"]
    return seen


def test_workers_without_redis_are_refused_with_a_clear_message():
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat", "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "TRIO_CHAT_REDIS_URL"},
    )
    assert result.returncode == 2
    assert "more than one worker needs --redis-url" in result.stderr
    assert "listening" not in result.stdout


def test_a_bad_redis_url_is_refused_before_anything_starts():
    for command in (["--workers", "2"], []):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "trio_chat",
                "serve",
                "--port",
                "0",
                "--redis-url",
                "http://127.0.0.1:6379/0",
                *command,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert "redis_url: expected redis://HOST:PORT/DB" in result.stderr


async def test_two_workers_share_the_port_and_rooms_and_drain_on_sigterm(redis_server, tmp_path):
    with trio.fail_after(60):
        parent = await start_chat_process(_args(redis_server), tmp_path, "workers")
        try:
            assert parent.text().count("listening on") == 1
            assert len(_children(parent.proc.pid)) == 2
            async with AsyncExitStack() as stack:
                clients: list[TestClient] = []
                # Connect until both workers serve somebody.
                while True:
                    client = await stack.enter_async_context(
                        open_test_client(parent.url, user=f"u{len(clients)}")
                    )
                    await client.join("lobby")
                    clients.append(client)
                    nodes = await _nodes(parent.port)
                    if len(nodes) == 2 and all(nodes.values()):
                        break
                    assert len(clients) < 40
                assert sum(nodes.values()) == len(clients)
                first, *others = clients
                ack = await first.chat("lobby", "to everyone on both workers")
                for client in others:
                    message = await client.expect("chat")
                    assert message["payload"]["id"] == ack["payload"]["id"]
                parent.signal(signal.SIGTERM)
                for client in clients:
                    with trio.fail_after(10):
                        while True:
                            try:
                                await client.ws.get_message()
                            except ConnectionClosed as closed:
                                assert closed.reason.code == 1001
                                break
            assert await parent.wait(20) == 0
            assert _children(parent.proc.pid) == set()
        finally:
            parent.stop()


async def test_a_worker_that_dies_is_restarted(redis_server, tmp_path):
    with trio.fail_after(60):
        parent = await start_chat_process(_args(redis_server), tmp_path, "workers")
        try:
            before = _children(parent.proc.pid)
            assert len(before) == 2
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            with trio.fail_after(30):
                while True:
                    now = _children(parent.proc.pid)
                    if len(now) == 2 and victim not in now:
                        break
                    await trio.sleep(0.1)
                while len(await _nodes(parent.port, tries=10)) < 2:
                    await trio.sleep(0.1)
            assert "exited with code -9: restarting" in parent.text()
            parent.signal(signal.SIGINT)
            assert await parent.wait(20) == 0
        finally:
            parent.stop()
