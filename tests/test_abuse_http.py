"""Hostile HTTP clients against the front: every connection counts from its
TCP accept, idle keep-alive connections are let go, running out of file
descriptors sheds load.  Real sockets on 127.0.0.1 (bystanders come from
127.0.0.2 and 127.0.0.3, other addresses of the loopback).

Rules: absences are proven with barriers (a request answered, a gauge read
back), never with sleeps; each test checks that the server's tasks and
descriptors return to where they started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
import trio
import trio_websocket
from http_support import HttpClient, LogCapture
from prometheus_client.parser import text_string_to_metric_families

from trio_chat import Config
from trio_chat._metrics import count_tasks
from trio_chat._testing_server import open_test_server

# ---------------------------------------------------------------- helpers


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def _http_from(port: int, local: str = "127.0.0.1") -> AsyncIterator[HttpClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    async with stream:
        yield HttpClient(stream)


@asynccontextmanager
async def _ws_from(
    port: int, local: str, resource: str
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket client whose connection comes from address *local*."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, f"127.0.0.1:{port}", resource)
        try:
            yield ws
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


async def _status(port: int, local: str = "127.0.0.1", target: str = "/healthz") -> int | str:
    """The status of one request on a new connection, or "closed"."""
    with trio.fail_after(10):
        try:
            async with _http_from(port, local) as client:
                return (await client.request("GET", target)).status
        except (trio.BrokenResourceError, AssertionError, OSError, h11.RemoteProtocolError):
            return "closed"


async def _metric(port: int, name: str, local: str = "127.0.0.2", **labels: str) -> float:
    async with _http_from(port, local) as client:
        body = (await client.request("GET", "/metrics")).body.decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"{name} {labels} not in /metrics")


async def _chat_round_trips(port: int, count: int) -> list[float]:
    """Two WebSocket clients from other addresses chat; each round trip (a
    chat sent, the partner's copy received) in seconds."""
    async with (
        _ws_from(port, "127.0.0.2", "/ws?user=bystander1") as one,
        _ws_from(port, "127.0.0.3", "/ws?user=bystander2") as two,
    ):
        for ws in (one, two):
            assert json.loads(await ws.get_message())["type"] == "welcome"
            await ws.send_message(json.dumps({"type": "join", "payload": {"room": "calm"}}))
            while json.loads(await ws.get_message())["type"] != "joined":
                pass
        times = []
        for i in range(count):
            started = time.perf_counter()
            await one.send_message(
                json.dumps({"type": "chat", "payload": {"room": "calm", "content": f"m{i}"}})
            )
            while True:
                frame = json.loads(await two.get_message())
                if frame["type"] == "chat":
                    assert frame["payload"]["content"] == f"m{i}"
                    break
            times.append(time.perf_counter() - started)
        return times


# ---------------------------------------------------------------- counted from accept


async def test_keep_alive_http_connections_count_against_the_ip():
    config = Config(port=0, max_connections_per_ip=3, http_idle_timeout=60)
    async with open_test_server(config) as server:
        tasks, fds = count_tasks(), _fds()
        with LogCapture() as logs:
            async with (
                _http_from(server.port) as a,
                _http_from(server.port) as b,
                _http_from(server.port) as c,
            ):
                for client in (a, b, c):  # each one answered: each one counted
                    assert (await client.request("GET", "/healthz")).status == 200
                # A fourth from the same address: refused at once, keep-alive or not.
                assert await _status(server.port) in (429, "closed")
                assert await _status(server.port, target="/") in (429, "closed")
                # Other addresses are not affected, WebSockets included.
                assert await _metric(server.port, "trio_chat_tcp_connections_open") == 4
                assert await _metric(server.port, "trio_chat_http_idle_connections") == 3
                assert await _chat_round_trips(server.port, 3)
                # The three keep-alive connections still work.
                for client in (a, b, c):
                    assert (await client.request("GET", "/healthz")).status == 200
            # Gone: the address may connect again.
            assert await _status(server.port) == 200
        assert server._front.refused == {429: 2}
        refused = logs.find("connection refused", "status=429")
        assert len(refused) == 1  # the second is counted, not logged
        assert await _metric(server.port, "trio_chat_connections_refused_total", status="429") == 2
        with trio.fail_after(5):
            while server._front.open or count_tasks() > tasks or _fds() > fds:
                await trio.sleep(0.01)


async def test_the_server_wide_limit_counts_plain_http_too():
    async with open_test_server(Config(port=0, max_connections=2)) as server:
        async with _http_from(server.port, "127.0.0.4") as a, _http_from(server.port) as b:
            for client in (a, b):
                assert (await client.request("GET", "/healthz")).status == 200
            assert await _status(server.port, "127.0.0.5") in (503, "closed")
            assert server._front.refused == {503: 1}
        with trio.fail_after(5):
            while server._front.open:
                await trio.sleep(0.01)
        assert await _status(server.port, "127.0.0.5") == 200


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout():
    # The first request may take the handshake timeout (30 s here); between
    # requests a connection may idle only http_idle_timeout.
    config = Config(port=0, handshake_timeout=30, http_idle_timeout=0.3)
    async with open_test_server(config) as server:
        async with _http_from(server.port) as client:
            started = trio.current_time()
            for _ in range(3):  # quick requests keep it alive
                assert (await client.request("GET", "/healthz")).status == 200
            with trio.fail_after(5):
                assert await client.stream.receive_some(1) == b""  # closed by the server
            assert trio.current_time() - started >= 0.3
        with trio.fail_after(5):
            while server._front.open:
                await trio.sleep(0.01)
        assert len(server._front.idle) == 0


# ---------------------------------------------------------------- out of descriptors

#: The child's descriptor limit, and the attack: more keep-alive connections
#: than that, from one address, each sending a request every second and
#: reconnecting whenever it is closed.
FD_LIMIT = 128
ATTACKERS = 300
ATTACK_SECONDS = 6.0
LOG_INTERVAL = 2.0

_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
from trio_chat._cli import main
sys.exit(main(sys.argv[1:]))
"""


#: The attack, in a process of its own so that the bystanders' round trips
#: measure the server, not the attacker's load on the test's own loop.
_ATTACK = """
import json, sys, h11, trio
sys.path.insert(0, {tests!r})
from http_support import HttpClient

PORT, COUNT, SECONDS = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
stats = {{"connects": 0, "closed": 0}}

async def attacker(stop, connected):
    first = True
    while not stop.is_set():
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", PORT)
            async with stream:
                stats["connects"] += 1
                if first:
                    first = False
                    connected()
                client = HttpClient(stream)
                while not stop.is_set():
                    reply = await client.request("GET", "/healthz")
                    stats[str(reply.status)] = stats.get(str(reply.status), 0) + 1
                    if reply.headers.get("connection") == "close":
                        break
                    with trio.move_on_after(1.0):
                        await stop.wait()
        except (trio.BrokenResourceError, AssertionError, OSError, h11.RemoteProtocolError):
            stats["closed"] += 1
        with trio.move_on_after(0.2):
            await stop.wait()

async def main():
    stop = trio.Event()
    pending = [COUNT]
    def connected():
        pending[0] -= 1
        if not pending[0]:
            print("connected", flush=True)
    async with trio.open_nursery() as nursery:
        for _ in range(COUNT):
            nursery.start_soon(attacker, stop, connected)
        await trio.sleep(SECONDS)
        stop.set()
    print(json.dumps(stats), flush=True)

trio.run(main)
"""


async def test_running_out_of_descriptors_sheds_load_and_keeps_serving_websockets():
    child = _CHILD.format(limit=FD_LIMIT)
    argv = [sys.executable, "-c", child, "serve", "--port", "0", "--log-format", "json"]
    argv += ["--max-connections-per-ip", "100000", "--max-handshakes-per-ip", "100000"]
    argv += ["--log-interval", str(LOG_INTERVAL), "--http-idle-timeout", "60"]
    proc = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr = bytearray()
    try:
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                assert proc.stderr is not None
                while chunk := await proc.stderr.receive_some(65536):
                    stderr.extend(chunk)

            nursery.start_soon(drain)
            out = b""
            with trio.fail_after(20):
                while b"/ws" not in out:
                    chunk = await proc.stdout.receive_some(4096)
                    assert chunk, stderr.decode()
                    out += chunk
            port = int(out.split(b"ws://127.0.0.1:")[1].split(b"/")[0])
            fds_at_start = len(os.listdir(f"/proc/{proc.pid}/fd"))

            attack = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-c",
                    _ATTACK.format(tests=os.path.dirname(__file__)),
                    str(port),
                    str(ATTACKERS),
                    str(ATTACK_SECONDS),
                ],
                stdout=subprocess.PIPE,
            )
            assert attack.stdout is not None
            report = b""
            with trio.fail_after(20):
                while b"connected\n" not in report:
                    chunk = await attack.stdout.receive_some(4096)
                    assert chunk, report
                    report += chunk
            # Every descriptor is taken (or was, and load was shed), and still
            # WebSocket clients from other addresses get in and chat, while
            # the attack goes on.
            with trio.fail_after(10):
                connect_started = time.perf_counter()
                times = await _chat_round_trips(port, 20)
                connect_time = time.perf_counter() - connect_started
            with trio.fail_after(10):
                shed = await _metric(port, "trio_chat_accept_exhausted_total")
            with trio.fail_after(ATTACK_SECONDS + 20):
                while chunk := await attack.stdout.receive_some(4096):
                    report += chunk
                await attack.wait()
            stats = json.loads(report.split(b"connected\n")[1])
            # Descriptors come back once the attackers are gone.
            with trio.fail_after(20):
                while len(os.listdir(f"/proc/{proc.pid}/fd")) > fds_at_start:
                    await trio.sleep(0.05)
            proc.terminate()
            with trio.fail_after(20):
                await proc.wait()
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = stderr.decode().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON
    shedding = [e for e in entries if "out of file descriptors" in e["message"]]
    print(
        f"attack: {stats}; exhausted accepts: {shed}; bystander connect+join+20 chats "
        f"{connect_time * 1000:.0f} ms, round trip max {max(times) * 1000:.1f} ms, "
        f"median {sorted(times)[len(times) // 2] * 1000:.1f} ms; {len(lines)} log lines "
        f"({len(stderr)} bytes), {len(shedding)} about shedding"
    )
    assert shed > 0, "the attack did not exhaust the descriptors"
    assert not any("traceback" in e for e in entries)
    assert 1 <= len(shedding) <= 2 + ATTACK_SECONDS / LOG_INTERVAL
    assert len(lines) < 60, lines
    assert connect_time < ATTACK_SECONDS / 2  # not only once the attack is over
    assert sorted(times)[len(times) // 2] < 0.05
