"""The plain-HTTP side of the port: pages, health, metrics, errors, keep-alive,
slow clients, and the backend publish API.  Over real sockets, but for the
deadlines, which run over in-memory streams on trio's virtual clock."""

from __future__ import annotations

import json
import re
import socket

import pytest
import trio
import trio.lowlevel
import trio.testing
from http_support import (
    LogCapture,
    client_frame,
    http_request,
    open_http,
    open_raw_websocket,
    raw_exchange,
    rejected_status,
    ws_refusal,
)
from prometheus_client.parser import text_string_to_metric_families

from trio_chat import ChatServer, Config
from trio_chat._auth import make_token
from trio_chat._hub import Outlet
from trio_chat._metrics import FIGURES_WAIT, count_tasks
from trio_chat._stream import WireStream
from trio_chat._testing_server import (
    open_memory_server,
    open_memory_stream,
    open_test_client,
    open_test_server,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"

# ---------------------------------------------------------------- pages


async def test_root_serves_an_html_page():
    async with open_test_server() as server:
        reply = await http_request(server.port, "GET", "/")
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/html")
        assert b"<html" in reply.body.lower()
        assert int(reply.headers["content-length"]) == len(reply.body)


async def test_client_script_and_static_files():
    async with open_test_server() as server:
        script = await http_request(server.port, "GET", "/trio-chat.js")
        assert script.status == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.body
        for target in (
            "/static/no-such-file.css",
            "/static/../_server.py",
            "/static/%2e%2e/_server.py",
            "/static/.hidden",
            "/static/",
        ):
            assert (await http_request(server.port, "GET", target)).status == 404, target


async def test_unknown_path_is_404():
    async with open_test_server() as server:
        for target in ("/nope", "/ws/extra", "/healthz/x", "/api/nothing", "/api/rooms/lobby"):
            reply = await http_request(server.port, "GET", target)
            assert reply.status == 404, target
        assert (await http_request(server.port, "POST", "/nope", body=b"x")).status == 404


async def test_wrong_method_is_405_with_allow():
    async with open_test_server() as server:
        for method, target in [
            ("POST", "/healthz"),
            ("PUT", "/metrics"),
            ("DELETE", "/"),
            ("POST", "/trio-chat.js"),
            ("POST", "/ws"),
            ("POST", "/api/rooms"),
            ("GET", "/api/rooms/lobby/messages"),
        ]:
            reply = await http_request(server.port, method, target, body=b"{}")
            assert reply.status == 405, (method, target)
            assert "allow" in reply.headers


async def test_head_has_headers_and_no_body():
    async with open_test_server() as server:
        async with open_http(server.port) as client:
            with trio.fail_after(10):
                head = await client.request("HEAD", "/healthz")
                assert head.status == 200
                assert head.body == b""
                assert int(head.headers["content-length"]) > 0
                # The connection is still usable after a HEAD.
                assert (await client.request("GET", "/healthz")).status == 200


async def test_plain_get_on_the_websocket_path_asks_for_an_upgrade():
    async with open_test_server() as server:
        reply = await http_request(server.port, "GET", "/ws")
        assert reply.status == 426
        assert reply.headers["upgrade"] == "websocket"


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n",
        b"POST /api/rooms HTTP/1.1\r\nHost: a\r\nContent-Length: many\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires Host
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS hello
    ],
    ids=["garbage", "bad-header", "bad-length", "no-host", "tls-to-plain"],
)
async def test_malformed_requests_get_400_and_a_close(data):
    async with open_test_server() as server:
        answer = await raw_exchange(server.port, data)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
        assert server.stats().connections == 0


async def test_a_huge_request_head_is_refused_and_closed():
    async with open_test_server() as server:
        data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Filler: " + b"a" * 40_000 + b"\r\n\r\n"
        answer = await raw_exchange(server.port, data)
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]


async def test_a_request_body_larger_than_allowed_is_413():
    config = Config(port=0, secret=SECRET, max_message_bytes=1024)
    admin = make_token(SECRET, "ops", admin=True)
    async with open_test_server(config) as server:
        reply = await http_request(
            server.port,
            "POST",
            "/api/rooms/lobby/messages",
            headers=[("authorization", f"Bearer {admin}")],
            body=b"x" * 5000,
        )
        assert reply.status == 413


async def test_keep_alive_serves_several_requests_on_one_socket():
    async with open_test_server() as server:
        async with open_http(server.port) as client:
            with trio.fail_after(10):
                first = await client.request("GET", "/healthz")
                second = await client.request("GET", "/metrics")
                third = await client.request("GET", "/nope")
                fourth = await client.request("GET", "/healthz")
        assert [first.status, second.status, third.status, fourth.status] == [200, 200, 404, 200]
        assert first.json()["status"] == "ok"
        assert b"trio_chat_connections_open" in second.body


async def test_pipelined_requests_are_answered_in_order():
    async with open_test_server() as server:
        data = (
            b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answer = await raw_exchange(server.port, data)
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
        assert statuses == [b"200", b"404", b"200"]


# ---------------------------------------------------------------- slowloris


async def _wait_closed(stream: trio.abc.Stream) -> bytes:
    received = b""
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return received
        if not chunk:
            return received
        received += chunk


#: The request-head deadline of these tests, on trio's virtual clock.
HEAD_TIMEOUT = 5.0


async def test_an_incomplete_request_head_is_closed_after_the_handshake_timeout(autojump_clock):
    async with open_memory_server(Config(handshake_timeout=HEAD_TIMEOUT)) as server:
        stream = open_memory_stream(server)
        async with stream:
            start = trio.current_time()
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            assert await _wait_closed(stream) == b""
            assert trio.current_time() - start == pytest.approx(HEAD_TIMEOUT, abs=1e-6)


async def test_a_head_dripped_byte_by_byte_is_still_cut_off(autojump_clock):
    # Bytes keep arriving, but the whole head must be in within the timeout.
    async with open_memory_server(Config(handshake_timeout=HEAD_TIMEOUT)) as server:
        stream = open_memory_stream(server)
        start = trio.current_time()
        async with stream:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"z" * 10_000:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                with trio.move_on_after(0.05):
                    if await stream.receive_some(1) == b"":
                        break
            else:
                raise AssertionError("never cut off")
            assert trio.current_time() - start == pytest.approx(HEAD_TIMEOUT, abs=0.06)


async def test_a_request_body_that_never_arrives_is_closed_too(autojump_clock):
    async with open_memory_server(Config(handshake_timeout=HEAD_TIMEOUT)) as server:
        stream = open_memory_stream(server)
        async with stream:
            start = trio.current_time()
            await stream.send_all(
                b"POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: a\r\n"
                b'Content-Length: 100\r\n\r\n{"content":'
            )
            assert await _wait_closed(stream) == b""
            assert trio.current_time() - start == pytest.approx(HEAD_TIMEOUT, abs=1e-6)


async def test_a_silent_connection_and_an_idle_keep_alive_are_closed(autojump_clock):
    config = Config(handshake_timeout=HEAD_TIMEOUT, http_idle_timeout=3)
    async with open_memory_server(config) as server:
        silent, idle = open_memory_stream(server), open_memory_stream(server)
        start = trio.current_time()
        await idle.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = await _wait_closed(idle)
        assert answer.startswith(b"HTTP/1.1 200 ")
        # Answered at once, then idle for http_idle_timeout.
        assert trio.current_time() - start == pytest.approx(3, abs=1e-6)
        assert await _wait_closed(silent) == b""
        assert trio.current_time() - start == pytest.approx(HEAD_TIMEOUT, abs=1e-6)
        await silent.aclose()
        await idle.aclose()


async def test_a_slow_websocket_upgrade_is_closed_too(autojump_clock):
    async with open_memory_server(Config(handshake_timeout=HEAD_TIMEOUT)) as server:
        stream = open_memory_stream(server)
        async with stream:
            start = trio.current_time()
            await stream.send_all(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            )
            assert await _wait_closed(stream) == b""
            assert trio.current_time() - start == pytest.approx(HEAD_TIMEOUT, abs=1e-6)
        await trio.testing.wait_all_tasks_blocked()
        assert server.stats().connections == 0
        assert server.stats().tcp_connections == 0


# ---------------------------------------------------------------- healthz


async def test_healthz_reports_status_connections_and_uptime():
    async with open_test_server() as server:
        reply = await http_request(server.port, "GET", "/healthz")
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        body = reply.json()
        assert body["status"] == "ok"
        assert body["connections"] == 0
        assert isinstance(body["uptime_seconds"], (int, float)) and body["uptime_seconds"] >= 0
        async with open_test_client(server, user="a"), open_test_client(server, user="b"):
            body = (await http_request(server.port, "GET", "/healthz")).json()
            assert body["connections"] == 2
            later = body["uptime_seconds"]
        assert later >= reply.json()["uptime_seconds"]
        with trio.fail_after(10):
            while (await http_request(server.port, "GET", "/healthz")).json()["connections"]:
                await trio.sleep(0.01)


async def test_healthz_is_503_draining_during_a_graceful_shutdown():
    # A client that never answers the close handshake keeps the server
    # draining for a while; meanwhile the port answers plain HTTP with 503
    # "draining" (so a load balancer stops sending traffic) and refuses new
    # WebSocket upgrades with 503.
    config = Config(port=0, shutdown_grace=5)
    async with open_test_server(config) as server:
        port = server.port
        stubborn = await trio.open_tcp_stream("127.0.0.1", port)
        await stubborn.send_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with trio.fail_after(10):
            assert (await stubborn.receive_some(65536)).startswith(b"HTTP/1.1 101 ")
            while server.stats().connections != 1:
                await trio.sleep(0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.shutdown)
            with trio.fail_after(10):
                while not server.draining:
                    await trio.lowlevel.checkpoint()
                reply = await http_request(port, "GET", "/healthz")
                assert reply.status == 503
                assert reply.json()["status"] == "draining"
                assert reply.headers.get("connection") == "close"
                assert (await ws_refusal(port)).status == 503
            # The stubborn client goes: the drain ends with it.
            await stubborn.aclose()
        # Shutdown finished: the port is closed.
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


# ---------------------------------------------------------------- metrics


def _parse(text: str) -> dict[str, dict[tuple, float]]:
    """Family name -> {(sample name, sorted labels): value}; fails if invalid."""
    families = {}
    for family in text_string_to_metric_families(text):
        samples = {}
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        families[family.name] = samples
    return families


async def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    reply = await http_request(port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return _parse(reply.body.decode())


def _value(metrics, sample: str, **labels: str) -> float:
    """The value of the *sample* with *labels* (0 if absent: a labelled
    counter has no sample until its first increment)."""
    family = sample.removesuffix("_total")
    assert family in metrics, family
    return metrics[family].get((sample, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_is_valid_prometheus_text_with_every_series():
    async with open_test_server() as server:
        metrics = await _scrape(server.port)
        for family, _kind in [
            ("trio_chat_connections_open", "gauge"),
            ("trio_chat_connections_closed", "counter"),
            ("trio_chat_frames_received", "counter"),
            ("trio_chat_frames_delivered", "counter"),
            ("trio_chat_errors_sent", "counter"),
            ("trio_chat_slow_consumer_drops", "counter"),
            ("trio_chat_rate_limit_rejections", "counter"),
            ("trio_chat_handshakes_refused", "counter"),
            ("trio_chat_hub_inbox_depth", "gauge"),
            ("trio_chat_history_messages", "gauge"),
        ]:
            assert family in metrics, family
        text = (await http_request(server.port, "GET", "/metrics")).body.decode()
        assert "# TYPE trio_chat_connections_open gauge" in text
        assert "# TYPE trio_chat_connections_closed_total counter" in text
        assert "# HELP trio_chat_errors_sent_total " in text


async def test_metrics_follow_what_happens():
    config = Config(port=0, rate_messages=3, rate_seconds=60, queue_size=4)
    async with open_test_server(config) as server:
        port = server.port
        before = await _scrape(port)
        assert _value(before, "trio_chat_connections_open") == 0
        assert _value(before, "trio_chat_history_messages") == 0

        async with open_test_client(server, user="alice") as alice:
            async with open_test_client(server, user="bob") as bob:
                await alice.join("lobby")
                await bob.join("lobby")
                for i in range(3):
                    assert (await alice.chat("lobby", f"m{i}"))["type"] == "ack"
                    await bob.expect("chat")
                mid = await _scrape(port)
                assert _value(mid, "trio_chat_connections_open") == 2
                assert _value(mid, "trio_chat_history_messages") == 3
                # A join and 3 chats from alice, a join from bob.
                assert (
                    _value(mid, "trio_chat_frames_received_total")
                    - _value(before, "trio_chat_frames_received_total")
                ) == 5
                # Through the hub: joined x2, system x1, (chat + ack) x3.
                assert (
                    _value(mid, "trio_chat_frames_delivered_total")
                    - _value(before, "trio_chat_frames_delivered_total")
                ) == 9

                # An invalid frame: error 400.  Over the rate limit: 429.
                await alice.ws.send_message("not json")
                assert (await alice.expect("error"))["payload"]["code"] == 400
                reply = await alice.chat("lobby", "one too many")
                assert reply["payload"]["code"] == 429
                # A refused handshake: 403 (origin) and 400 (bad user name).
                assert await rejected_status(server.url, headers=[("origin", "http://evil")]) == 403
                assert await rejected_status(server.url + "?user=no%20way") == 400

                # The hub's inbox depth is the number of commands waiting:
                # queue a few harmless ones (departures of a connection the
                # hub never knew).
                stranger, _ = trio.testing.memory_stream_pair()
                departed = Outlet(WireStream(stranger), 1, lambda: None, server.hub.counters)
                after = _parse(server.metrics.render().decode())
                assert _value(after, "trio_chat_hub_inbox_depth") == 0
                for _ in range(3):
                    server.hub.depart(departed)
                waiting = _parse(server.metrics.render().decode())
                # (The first may have gone straight to the waiting hub.)
                assert _value(waiting, "trio_chat_hub_inbox_depth") in (2, 3)
            # bob's connection closes normally (1000).
        with trio.fail_after(10):
            while server.stats().connections:
                await trio.sleep(0.01)
        after = await _scrape(port)
        assert _value(after, "trio_chat_hub_inbox_depth") == 0
        assert _value(after, "trio_chat_connections_open") == 0
        assert _value(after, "trio_chat_connections_closed_total", code="1000") == 2  # alice, bob
        assert _value(after, "trio_chat_errors_sent_total", code="400") == 1
        assert _value(after, "trio_chat_errors_sent_total", code="429") == 1
        assert _value(after, "trio_chat_rate_limit_rejections_total") == 1
        assert _value(after, "trio_chat_handshakes_refused_total", status="403") == 1
        assert _value(after, "trio_chat_handshakes_refused_total", status="400") == 1
        assert _value(after, "trio_chat_history_messages") == 3
        assert _value(after, "trio_chat_slow_consumer_drops_total") == 0


async def test_metrics_count_slow_consumers():
    # A client that joins and never reads: publishing into its room fills
    # the socket buffers, then its small queue; it is marked 1013, but since
    # it reads nothing its close frame cannot be written: it is aborted, and
    # counted as what happened.
    config = Config(port=0, queue_size=4, write_timeout=1.0)
    async with open_test_server(config) as server:
        stream, _ = await open_raw_websocket(server.port, "/ws?user=sloth")
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        join = json.dumps({"type": "join", "payload": {"room": "busy"}}).encode()
        await stream.send_all(client_frame(join))
        with trio.fail_after(10):
            while "busy" not in server.hub.state.room_names():
                await trio.sleep(0.01)
        content = "x" * 4000
        with trio.fail_after(60):
            while server.stats().slow_consumer_drops == 0:
                await server.publish("busy", content)
        with trio.fail_after(30):
            while server.stats().connections:
                await trio.sleep(0.01)
        metrics = await _scrape(server.port)
        assert _value(metrics, "trio_chat_slow_consumer_drops_total") == 1
        assert _value(metrics, "trio_chat_connections_closed_total", code="1006") == 1
        assert _value(metrics, "trio_chat_connections_closed_by_total", code="1006", by="none") == 1
        await stream.aclose()


async def test_metrics_answer_when_the_hub_does_not(autojump_clock):
    # The hub's figures come from inside the hub; one that does not answer
    # (here: one that is not running) delays a scrape by FIGURES_WAIT only.
    server = ChatServer(Config())
    start = trio.current_time()
    metrics = _parse((await server.metrics.scrape()).decode())
    assert trio.current_time() - start == pytest.approx(FIGURES_WAIT, abs=1e-6)
    assert _value(metrics, "trio_chat_rooms") == 0  # the figures it had
    assert _value(metrics, "trio_chat_hub_inbox_depth") == 1  # the scrape's own request


async def test_metrics_scrape_leaves_no_task_behind():
    async with open_test_server() as server:
        await http_request(server.port, "GET", "/metrics")
        base = count_tasks()
        for _ in range(5):
            await http_request(server.port, "GET", "/metrics")
        with trio.fail_after(10):
            while count_tasks() != base:
                await trio.sleep(0.01)


# ---------------------------------------------------------------- backend API


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), ("content-type", "application/json")]


async def test_publish_api_reaches_members_and_history():
    admin = make_token(SECRET, "ops", admin=True)
    async with open_test_server(Config(port=0, secret=SECRET)) as server:
        async with open_test_client(server, token=make_token(SECRET, "alice")) as alice:
            await alice.join("lobby")
            await alice.chat("lobby", "first")
            reply = await http_request(
                server.port,
                "POST",
                "/api/rooms/lobby/messages",
                headers=_bearer(admin),
                body=json.dumps({"content": "deploy finished", "user_id": "deploy-bot"}).encode(),
            )
            assert reply.status == 201
            body = reply.json()
            assert body["id"] == 2
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["time"])
            chat = await alice.expect("chat")
            assert chat["payload"] == {
                "id": 2,
                "room": "lobby",
                "user_id": "deploy-bot",
                "content": "deploy finished",
                "time": body["time"],
            }
            # Without user_id the message is from "server".
            reply = await http_request(
                server.port,
                "POST",
                "/api/rooms/lobby/messages",
                headers=_bearer(admin),
                body=b'{"content": "hello"}',
            )
            assert reply.status == 201 and reply.json()["id"] == 3
            assert (await alice.expect("chat"))["payload"]["user_id"] == "server"
        async with open_test_client(server, token=make_token(SECRET, "late")) as late:
            history = (await late.join("lobby"))["payload"]["history"]
            assert [m["content"] for m in history] == ["first", "deploy finished", "hello"]
            assert [m["id"] for m in history] == [1, 2, 3]


async def test_publish_api_refusals():
    admin = make_token(SECRET, "ops", admin=True)
    user = make_token(SECRET, "alice")
    other = make_token("another-secret-that-is-long-enough-for-hs256", "ops", admin=True)
    config = Config(port=0, secret=SECRET, max_content_chars=100)
    async with open_test_server(config) as server:
        await server.publish("lobby", "room exists")
        target = "/api/rooms/lobby/messages"
        good = b'{"content": "hi", "user_id": "bot"}'

        async def post(body: bytes, headers=(), target=target) -> int:
            reply = await http_request(
                server.port, "POST", target, headers=list(headers), body=body
            )
            assert reply.headers["content-type"] == "application/json"
            assert "error" in reply.json() or reply.status == 201
            return reply.status

        assert await post(good) == 401
        assert await post(good, [("authorization", "Bearer nonsense")]) == 401
        assert await post(good, [("authorization", f"Bearer {admin}")]) == 415
        assert await post(good, _bearer(other)) == 401
        assert await post(good, _bearer(make_token(SECRET, "ops", admin=True, ttl=-5))) == 401
        assert await post(good, _bearer(user)) == 403
        assert await post(b"not json", _bearer(admin)) == 400
        assert await post(b"[1, 2]", _bearer(admin)) == 400
        assert await post(b'{"content": 5}', _bearer(admin)) == 400
        assert await post(b'{"content": ""}', _bearer(admin)) == 400
        assert await post(b'{"content": "hi", "user_id": "bad user!"}', _bearer(admin)) == 400
        assert await post(b'{"content": "hi", "user_id": 7}', _bearer(admin)) == 400
        assert await post(b"[" * 50_000, _bearer(admin)) == 400
        assert await post(json.dumps({"content": "x" * 101}).encode(), _bearer(admin)) == 413
        assert await post(good, _bearer(admin), target="/api/rooms/nowhere/messages") == 404
        assert await post(good, _bearer(admin), target="/api/rooms/bad%20room/messages") == 400
        # None of these published anything.
        assert server.hub.state.last_id("lobby") == 1
        assert await post(good, _bearer(admin)) == 201
        assert server.hub.state.last_id("lobby") == 2


async def test_publish_api_needs_a_secret():
    async with open_test_server() as server:
        await server.publish("lobby", "x")
        reply = await http_request(
            server.port, "POST", "/api/rooms/lobby/messages", body=b'{"content": "hi"}'
        )
        assert reply.status == 401


async def test_rooms_listing_for_admins():
    admin = make_token(SECRET, "ops", admin=True)
    async with open_test_server(Config(port=0, secret=SECRET)) as server:
        async with (
            open_test_client(server, token=make_token(SECRET, "alice")) as alice,
            open_test_client(server, token=make_token(SECRET, "bob")) as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            await bob.join("dev")
            await alice.chat("lobby", "one")
            await alice.chat("lobby", "two")
            reply = await http_request(server.port, "GET", "/api/rooms", headers=_bearer(admin))
            assert reply.status == 200
            rooms = {r["name"]: r for r in reply.json()["rooms"]}
            assert rooms["lobby"] == {"name": "lobby", "members": 2, "last_id": 2}
            assert rooms["dev"] == {"name": "dev", "members": 1, "last_id": 0}
            assert (await http_request(server.port, "GET", "/api/rooms")).status == 401
            denied = await http_request(
                server.port, "GET", "/api/rooms", headers=_bearer(make_token(SECRET, "alice"))
            )
            assert denied.status == 403


async def test_api_requests_are_logged_without_tokens():
    admin = make_token(SECRET, "ops", admin=True)
    async with open_test_server(Config(port=0, secret=SECRET)) as server:
        with LogCapture() as logs:
            await http_request(server.port, "GET", "/api/rooms?token=" + admin)
            await http_request(server.port, "GET", "/api/rooms", headers=_bearer(admin))
        assert not any(admin in m for m in logs.messages)


async def test_a_client_that_never_reads_its_response_is_closed_after_the_write_timeout(
    autojump_clock,
):
    # A lockstep stream is a socket whose peer stopped reading: the server's
    # response write waits until the client reads, which it never does.
    config = Config(write_timeout=1, handshake_timeout=5)
    async with open_memory_server(config) as server:
        before = count_tasks()
        client = open_memory_stream(server, lockstep=True)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await trio.sleep(30)
        # The server gave up on the response and closed the stream: no task
        # is left waiting for the client, which finds only what had been
        # handed over (the response head), then the end of the stream.
        assert count_tasks() == before
        received = b""
        with trio.fail_after(1):
            while chunk := await client.receive_some(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 ")
        assert received.endswith(b"\r\n\r\n")
        await client.aclose()


async def test_client_chosen_close_codes_share_one_metrics_label():
    # Codes 3000-4999 are the client's to choose: each must not become a
    # series of its own.
    async with open_test_server(Config(port=0)) as server:
        for code in (3000, 4001, 4999):
            async with open_test_client(server, user="alice", key="alice-key") as alice:
                await alice.ws.aclose(code)
        async with open_test_client(server, user="bob"):
            pass
        with trio.fail_after(10):
            while server.stats().connections:
                await trio.sleep(0.01)
        metrics = _parse(server.metrics.render().decode())
        assert _value(metrics, "trio_chat_connections_closed_total", code="other") == 3
        assert _value(metrics, "trio_chat_connections_closed_total", code="1000") == 1
        assert set(server.metrics.closed_by_code) == {"other", "1000"}
