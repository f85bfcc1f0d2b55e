"""Hostile HTTP clients against the front: every connection counts from its
TCP accept, idle keep-alive connections are let go, running out of file
descriptors sheds load.  Real sockets on 127.0.0.1 (bystanders come from
127.0.0.2 and 127.0.0.3, other addresses of the loopback); the idle timeout
over an in-memory stream on trio's virtual clock.

Rules: absences are proven with barriers (a request answered, a gauge read
back), never with sleeps; each test checks that the server's tasks and
descriptors return to where they started.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import pkgutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trio.testing
import trio_websocket
from http_support import HttpClient, LogCapture, ws_refusal
from hypothesis import given, strategies as st
from prometheus_client.parser import text_string_to_metric_families

import trio_chat
from trio_chat import Config
from trio_chat._auth import Rejection, TokenAuthenticator, make_token
from trio_chat._http import MAX_HEAD_BYTES
from trio_chat._logging import LOGGERS, EscapeFilter, SampledLog, TextFormatter, escape
from trio_chat._metrics import count_tasks
from trio_chat._testing_server import (
    open_memory_server,
    open_memory_stream,
    open_test_client,
    open_test_server,
)

# ---------------------------------------------------------------- helpers


async def _until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until *predicate* holds (state another task or process changes)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def _http_from(port: int, local: str = "127.0.0.1") -> AsyncIterator[HttpClient]:
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
    async with stream:
        yield HttpClient(stream)


@asynccontextmanager
async def _ws_from(
    port: int, local: str, resource: str, shed_retries: int = 0
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A WebSocket client whose connection comes from address *local*.

    A connection the server sheds (503 with ``retry-after``, the answer to
    whichever client waits next in the accept queue when the process is out
    of descriptors and nothing idle can be closed) is retried up to
    *shed_retries* times, after the pause the server asks for, as a real
    client would.
    """
    for attempt in range(shed_retries + 1):
        stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local)
        async with trio.open_nursery() as nursery:
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{port}", resource
                )
            except trio_websocket.ConnectionRejected as exc:
                headers = dict(exc.headers or ())
                if exc.status_code != 503 or attempt == shed_retries:
                    raise
                assert headers[b"retry-after"] == b"1"
                nursery.cancel_scope.cancel()
                await trio.sleep(0.1)
                continue
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()
            return


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


async def _chat_round_trips(port: int, count: int, shed_retries: int = 0) -> list[float]:
    """Two WebSocket clients from other addresses chat; each round trip (a
    chat sent, the partner's copy received) in seconds.  Each connects after
    at most *shed_retries* connections shed with 503."""
    async with (
        _ws_from(port, "127.0.0.2", "/ws?user=bystander1", shed_retries) as one,
        _ws_from(port, "127.0.0.3", "/ws?user=bystander2", shed_retries) as two,
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
        assert server.stats().connections_refused == {429: 2}
        refused = logs.find("connection refused", "status=429")
        assert len(refused) == 1  # the second is counted, not logged
        assert await _metric(server.port, "trio_chat_connections_refused_total", status="429") == 2
        await _until(
            lambda: not server.stats().tcp_connections and count_tasks() <= tasks and _fds() <= fds
        )


async def test_the_server_wide_limit_counts_plain_http_too():
    async with open_test_server(Config(port=0, max_connections=2)) as server:
        async with _http_from(server.port, "127.0.0.4") as a, _http_from(server.port) as b:
            for client in (a, b):
                assert (await client.request("GET", "/healthz")).status == 200
            assert await _status(server.port, "127.0.0.5") in (503, "closed")
            assert server.stats().connections_refused == {503: 1}
        await _until(lambda: not server.stats().tcp_connections)
        assert await _status(server.port, "127.0.0.5") == 200


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(autojump_clock):
    # The first request may take the handshake timeout (30 s here); between
    # requests a connection may idle only http_idle_timeout.  (On trio's
    # virtual clock, over an in-memory stream.)
    config = Config(handshake_timeout=30, http_idle_timeout=3)
    async with open_memory_server(config) as server:
        client = HttpClient(open_memory_stream(server))
        for _ in range(3):  # requests a second apart keep it alive
            await trio.sleep(1)
            assert (await client.request("GET", "/healthz")).status == 200
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats().idle_http_connections == 1
        answered = trio.current_time()
        assert await client.stream.receive_some(1) == b""  # closed by the server
        assert trio.current_time() - answered == pytest.approx(3, abs=1e-6)
        await client.stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats().tcp_connections == 0
        assert server.stats().idle_http_connections == 0


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
    argv = [sys.executable, "-c", child, "serve", "--port", "0", "--store", "memory"]
    argv += ["--log-format", "json"]
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
                times = await _chat_round_trips(port, 20, shed_retries=5)
                connect_time = time.perf_counter() - connect_started
            # ... while the attack goes on, not only once it is over: the
            # attacker has not reported (it does so when it stops).
            assert attack.poll() is None
            with trio.fail_after(10):
                shed = await _metric(port, "trio_chat_accept_exhausted_total")
            with trio.fail_after(ATTACK_SECONDS + 20):
                while chunk := await attack.stdout.receive_some(4096):
                    report += chunk
                await attack.wait()
            stats = json.loads(report.split(b"connected\n")[1])
            # Descriptors come back once the attackers are gone.
            await _until(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) <= fds_at_start, 20)
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


# ---------------------------------------------------------------- logs

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def _text_log() -> tuple[logging.Handler, io.StringIO]:
    """A handler writing the ``trio_chat`` logs as the text format does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    return handler, out


async def test_client_strings_cannot_forge_log_lines():
    forged = "2026-12-02 06:00:00,000 INFO trio_chat.server: connect user=admin peer=10.0.0.1"
    handler, out = _text_log()
    logger = logging.getLogger("trio_chat")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with open_test_server() as server:
            # A close reason with a newline in it ...
            async with _ws_from(server.port, "127.0.0.1", "/ws?user=mallory") as ws:
                await ws.get_message()
                await ws.aclose(1000, "bye\n" + forged)
            # ... and an Origin header with C1 controls (NEL, CSI) in it.
            status = await _raw(
                server.port,
                b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Origin: http://evil\x85" + forged.encode() + b"\x9b2J\r\n\r\n",
            )
            assert b" 403 " in status
            await _until(lambda: "disconnect user=mallory" in out.getvalue())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = out.getvalue().splitlines()
    assert not [line for line in lines if line.startswith(forged[:23])], lines
    assert any("reason=bye\\n2026-12-02 06:00:00" in line for line in lines), lines
    assert any("origin 'http://evil" in line and "x9b2J'" in line for line in lines), lines
    assert not any("\x85" in line or "\x9b" in line for line in lines)


async def test_an_embedders_own_formatter_gets_client_strings_escaped():
    # An embedder logging with a handler and formatter of its own (what
    # logging.basicConfig puts on the root logger) gets the same escapes:
    # they are made on trio_chat's loggers, before any handler sees a record.
    forged = "2026-12-03 07:00:00,000 INFO trio_chat.server: connect user=admin peer=10.0.0.1"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    logger = logging.getLogger("trio_chat")
    root.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with open_test_server() as server:
            async with _ws_from(server.port, "127.0.0.1", "/ws?user=mallory") as ws:
                await ws.get_message()
                await ws.aclose(1000, "bye\n" + forged)
            await _until(lambda: "disconnect user=mallory" in out.getvalue())
    finally:
        root.removeHandler(handler)
        logger.setLevel(old_level)
    lines = out.getvalue().splitlines()
    (disconnect,) = [line for line in lines if "disconnect user=mallory" in line]
    assert disconnect.endswith("reason=bye\\n" + forged), disconnect
    assert not [line for line in lines if line.startswith(forged[:23])], lines


def test_every_logger_of_trio_chat_escapes():
    # Each module's logger is one of LOGGERS, which carry the escaping filter.
    loggers = set()
    for info in pkgutil.iter_modules(trio_chat.__path__):
        if not info.name.startswith("__"):
            module = importlib.import_module(f"trio_chat.{info.name}")
            loggers.update(v for v in vars(module).values() if isinstance(v, logging.Logger))
    assert {logger.name for logger in loggers} <= set(LOGGERS)
    assert len(loggers) >= 8
    for name in LOGGERS:
        assert any(isinstance(f, EscapeFilter) for f in logging.getLogger(name).filters), name


async def test_a_flood_of_refused_handshakes_logs_one_line_per_interval():
    # 300 handshakes with bad tokens, 300 with a 15 KB Origin header: one
    # line for each kind, then one count per interval (the last one when the
    # server stops); and the bodies of the refusals do not echo the header.
    config = Config(port=0, secret=SECRET, max_handshakes_per_ip=10_000, log_interval=60)
    handler, out = _text_log()
    logger = logging.getLogger("trio_chat")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    origin = "http://" + "o" * 15_000 + ".example"
    try:
        async with open_test_server(config) as server:
            statuses = []
            for i in range(300):
                statuses.append((await ws_refusal(server.port, f"/ws?token=guess{i}")).status)
                reply = await ws_refusal(server.port, headers=[("origin", origin)])
                statuses.append(reply.status)
                assert len(reply.body) < 200 and b"ooooo" not in reply.body
            assert statuses == [401, 403] * 300
            assert out.getvalue().count("handshake refused") == 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = out.getvalue().splitlines()
    print(f"{len(lines)} log lines, {len(out.getvalue())} bytes for 600 refused handshakes")
    assert len([line for line in lines if "handshake refused peer=" in line]) == 2
    assert any("handshake refused 401: 299 more" in line for line in lines), lines
    assert any("handshake refused 403: 299 more" in line for line in lines), lines
    assert len(out.getvalue()) < 5_000  # each origin logged clipped, once


async def test_the_per_ip_handshake_limit_comes_before_the_origin_check():
    async with open_test_server(Config(port=0, max_handshakes_per_ip=5)) as server:
        statuses = [
            (await ws_refusal(server.port, headers=[("origin", "http://evil.example")])).status
            for _ in range(8)
        ]
        assert statuses == [403] * 5 + [429] * 3


# ---------------------------------------------------------------- HTTP and policy


async def _raw(port: int, data: bytes, *, split: int | None = None) -> bytes:
    """Send *data* (in pieces of *split* bytes, each sent on its own), and
    return the status line the server answers with."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            step = split or len(data)
            for i in range(0, len(data), step):
                await stream.send_all(data[i : i + step])
                if split:
                    await trio.sleep(0.002)
            answer = b""
            while b"\r\n" not in answer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
            return answer.partition(b"\r\n")[0]


def _head(size: int) -> bytes:
    """A GET /healthz request head of exactly *size* bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


async def test_the_request_head_limit_is_exact_whatever_the_split():
    async with open_test_server() as server:
        for split in (None, 1000, 16384, 8192):
            assert b" 200 " in await _raw(server.port, _head(MAX_HEAD_BYTES), split=split)
            assert b" 431 " in await _raw(server.port, _head(MAX_HEAD_BYTES + 1), split=split)
            assert b" 431 " in await _raw(server.port, _head(2 * MAX_HEAD_BYTES), split=split)


async def test_a_malformed_chunk_size_is_400():
    async with open_test_server() as server:
        answer = await _raw(
            server.port,
            b"POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: a\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        assert b" 400 " in answer


async def test_dns_rebinding_is_refused_on_the_default_server():
    async with open_test_server() as server:
        reply = await ws_refusal(
            server.port, headers=[("origin", "http://evil.example")], host="evil.example"
        )
        assert reply.status == 403


async def test_the_page_and_static_files_forbid_framing_and_sniffing():
    async with open_test_server() as server:
        for target in ("/", "/static/app.js", "/trio-chat.js", "/static/style.css", "/healthz"):
            async with _http_from(server.port) as client:
                reply = await client.request("GET", target)
            assert reply.status == 200, target
            assert reply.headers["x-content-type-options"] == "nosniff", target
            assert reply.headers["x-frame-options"] == "DENY", target
            assert "frame-ancestors 'none'" in reply.headers["content-security-policy"], target
        async with _http_from(server.port) as client:
            policy = (await client.request("GET", "/")).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy


async def test_healthz_names_no_node_unless_asked_and_reports_the_version():
    def backplane() -> tuple[bool, dict[str, str]]:
        return True, {"backplane": "up", "node": "web-7-4242-abcdef"}

    async with open_test_server() as server:
        server.health_checks.append(backplane)
        async with _http_from(server.port) as client:
            body = (await client.request("GET", "/healthz")).json()
        assert body["backplane"] == "up" and "node" not in body
        assert body["version"] == trio_chat.__version__
    config = Config(port=0, healthz_node=True, healthz_version=False)
    async with open_test_server(config) as server:
        server.health_checks.append(backplane)
        async with _http_from(server.port) as client:
            body = (await client.request("GET", "/healthz")).json()
        assert body["node"] == "web-7-4242-abcdef" and "version" not in body


async def test_the_admin_api_takes_only_header_credentials_json_and_its_rooms():
    admin = make_token(SECRET, "ops", admin=True)
    ops_only = make_token(SECRET, "ops", admin=True, rooms=["ops-*"])
    json_type = [("content-type", "application/json")]
    body = b'{"content": "deploy done"}'
    async with open_test_server(Config(port=0, secret=SECRET)) as server:
        await server.publish("lobby", "room exists")
        await server.publish("ops-alerts", "room exists")

        async def post(target: str, headers: list[tuple[str, str]]) -> int:
            async with _http_from(server.port) as client:
                return (await client.request("POST", target, headers=headers, body=body)).status

        bearer = [("authorization", f"Bearer {admin}")]
        lobby = "/api/rooms/lobby/messages"
        with LogCapture() as logs:
            # The token in the query string is not a credential.
            assert await post(f"{lobby}?token={admin}", json_type) == 401
            # A form post (a cross-site page can send one) is refused.
            assert await post(lobby, [*bearer, ("content-type", "text/plain")]) == 415
            assert await post(lobby, bearer) == 415
            # An admin token limited to ops-* rooms publishes only there.
            limited = [("authorization", f"Bearer {ops_only}"), *json_type]
            assert await post(lobby, limited) == 403
            assert await post("/api/rooms/ops-alerts/messages", limited) == 201
            assert await post(lobby, [*bearer, *json_type]) == 201
        assert server.hub.state.last_id("lobby") == 2
        published = logs.find("api publish")
        assert len(published) == 2
        assert "room=ops-alerts" in published[0] and "by=ops" in published[0]
        assert admin not in " ".join(logs.messages)
        async with _http_from(server.port) as client:
            reply = await client.request(
                "GET", "/api/rooms", headers=[("authorization", f"Bearer {ops_only}")]
            )
        assert [room["name"] for room in reply.json()["rooms"]] == ["ops-alerts"]


def test_token_lifetime_is_bounded_and_exp_is_a_number():
    import jwt

    now = 1_800_000_000.0
    auth = TokenAuthenticator(SECRET)

    def token(**claims: object) -> str:
        return jwt.encode({"sub": "alice", **claims}, SECRET, algorithm="HS256")

    assert auth.verify(token(exp=now + 29 * 86400), now=now).user_id == "alice"
    for exp in (253402300799, now + 31 * 86400, "9999999999", str(now + 60), True, None):
        with pytest.raises(Rejection) as refused:
            auth.verify(token(exp=exp), now=now)
        assert refused.value.status == 401, exp
    # The bound is a setting.
    short = TokenAuthenticator(SECRET, max_lifetime=3600)
    assert short.verify(token(exp=now + 3599), now=now)
    with pytest.raises(Rejection):
        short.verify(token(exp=now + 3601), now=now)


async def test_direct_messages_follow_the_token_scope():
    async with open_test_server(Config(port=0, secret=SECRET)) as server:
        async with (
            open_test_client(server, token=make_token(SECRET, "bob")) as bob,
            open_test_client(server, token=make_token(SECRET, "nobody", rooms=[])) as nobody,
            open_test_client(
                server, token=make_token(SECRET, "lurker", rooms=["lobby"], direct=False)
            ) as lurker,
            open_test_client(server, token=make_token(SECRET, "alice")) as alice,
        ):
            for client in (nobody, lurker):
                # Refused alike for a connected and an absent recipient:
                # nothing learnt about who is online.
                for to in ("bob", "not-here"):
                    await client.send("direct", {"to": to, "content": "hi"}, ref="d1")
                    frame = await client.expect("error")
                    assert frame["payload"]["code"] == 403, frame
            # A token allowed to send direct messages writes to anyone: kept
            # for an absent user, nothing learnt about who is online.
            await alice.send("direct", {"to": "not-here", "content": "hi"}, ref="d2")
            assert (await alice.expect("ack"))["payload"]["id"] == 1
            await alice.send("direct", {"to": "bob", "content": "hi"}, ref="d3")
            assert (await bob.expect("direct"))["payload"]["content"] == "hi"


@given(st.text())
def test_the_text_log_escape_leaves_no_control_character_and_loses_nothing(text: str) -> None:
    out = escape(text)
    assert not any(
        unicodedata.category(c) in ("Cc", "Zl", "Zp") or unicodedata.bidirectional(c) in BIDI
        for c in out
    )
    # Every escape is a Python one, and the backslash is escaped too: the
    # original comes back, so two messages never log alike.
    assert out.encode("latin-1", "backslashreplace").decode("unicode_escape") == text


BIDI = {"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}


def test_the_sampled_log_logs_the_first_of_each_kind_then_counts():
    sampled = SampledLog(10.0)
    assert sampled.hit("401", 0.0) and sampled.hit("403", 0.0)
    assert not any(sampled.hit("401", t) for t in (1.0, 2.0, 9.9))
    assert sampled.due(5.0) == []  # the window is not over
    assert sampled.hit("401", 10.0)  # a new window: logged again ...
    assert sampled.due(10.0) == [("401", 3)]  # ... and the last one's count is due
    assert not sampled.hit("401", 11.0)
    assert sampled.due(20.0) == [("401", 1)]
    assert sampled.due(20.0, every=True) == []
