"""Refusals before and after the upgrade: origins, per-IP caps, capacity,
frame size.  Every one over a real socket, with its status and its log line."""

from __future__ import annotations

import functools
import json

import trio
import trio_websocket
from http_support import (
    LogCapture,
    client_frame,
    open_raw_websocket,
    rejected_status,
    ws_refusal,
)

from trio_chat import ChatServer, Config
from trio_chat._cli import build_parser, load_config
from trio_chat._config import SETTINGS
from trio_chat._testing_server import open_test_client, open_test_server


async def _accepted(server, headers: list[tuple[str, str]], host: str | None = None) -> bool:
    """Whether an upgrade with *headers* (and Host *host*) is accepted."""
    try:
        reply = await ws_refusal(server.port, headers=headers, host=host)
    except AssertionError as exc:
        if "server upgraded" in str(exc):
            return True
        raise
    assert reply.status == 403, reply
    return False


async def _wait(predicate) -> None:
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.01)


# ---------------------------------------------------------------- origins


async def test_default_origin_rule_is_same_host_or_no_origin():
    async with open_test_server() as server:
        host = f"127.0.0.1:{server.port}"
        with LogCapture() as logs:
            assert await _accepted(server, [], host=host)  # no Origin: not a browser
            assert await _accepted(server, [("origin", f"http://{host}")], host=host)
            assert await _accepted(server, [("origin", f"https://{host}")], host=host)
            assert await _accepted(server, [("origin", f"http://{host.upper()}")], host=host)
            assert not await _accepted(server, [("origin", "http://evil.example")], host=host)
            assert not await _accepted(server, [("origin", "http://127.0.0.1:1")], host=host)
            assert not await _accepted(server, [("origin", "null")], host=host)
            assert not await _accepted(server, [("origin", f"http://{host}.evil")], host=host)
        # One full line per status per interval; the rest are counted.
        refused = logs.find("handshake refused", "status=403")
        assert len(refused) == 1
        assert "http://evil.example" in refused[0] and "not allowed" in refused[0]
        assert server.metrics.handshakes_refused == {403: 4}


async def test_same_host_means_a_name_of_this_server():
    # DNS rebinding: evil.example resolves to 127.0.0.1; the page it serves
    # sends Host and Origin both naming evil.example.  Same host, but not a
    # name of this server: refused.
    async with open_test_server() as server:
        for name in ("evil.example:8080", "Chat.Example:8080", "127.0.0.2", "[::1]:1"):
            assert not await _accepted(server, [("origin", f"http://{name}")], host=name), name
        for name in (f"localhost:{server.port}", "localhost", f"127.0.0.1:{server.port}"):
            assert await _accepted(server, [("origin", f"http://{name}")], host=name), name
    # A configured public name passes (a reverse proxy's, say).
    async with open_test_server(Config(port=0, public_names=("chat.example",))) as server:
        name = "Chat.Example:8080"
        assert await _accepted(server, [("origin", f"http://{name}")], host=name.lower())
        assert not await _accepted(server, [("origin", "http://evil.example")], host="evil.example")


async def test_same_host_holds_on_a_wildcard_listener_too():
    # Bound to one address, a listener tells its connections their local
    # address; on a wildcard address each connection's own is asked.
    for bind in ("127.0.0.1", "0.0.0.0"):
        server = ChatServer(Config(port=0))
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host=bind)
            await nursery.start(functools.partial(server.serve, listeners=listeners))
            host = f"127.0.0.1:{server.port}"
            assert await _accepted(server, [("origin", f"http://{host}")], host=host), bind
            other = f"127.0.0.2:{server.port}"
            assert not await _accepted(server, [("origin", f"http://{other}")], host=other), bind
            await server.shutdown()


async def test_a_browser_client_from_another_origin_is_refused():
    async with open_test_server() as server:
        assert (
            await rejected_status(server.url, headers=[("origin", "https://evil.example")]) == 403
        )
        assert server.stats().connections == 0


async def test_allowed_origins_replace_the_default_rule():
    config = Config(port=0, allowed_origins=("https://chat.example.com", "http://localhost:3000/"))
    async with open_test_server(config) as server:
        host = f"127.0.0.1:{server.port}"
        assert await _accepted(server, [("origin", "https://chat.example.com")], host=host)
        assert await _accepted(server, [("origin", "https://chat.example.com/")], host=host)
        assert await _accepted(server, [("origin", "http://localhost:3000")], host=host)
        assert await _accepted(server, [], host=host)
        assert not await _accepted(server, [("origin", f"http://{host}")], host=host)
        assert not await _accepted(server, [("origin", "http://chat.example.com")], host=host)
        assert not await _accepted(server, [("origin", "https://chat.example.com.evil")], host=host)


async def test_a_star_allows_every_origin():
    async with open_test_server(Config(port=0, allowed_origins=("*",))) as server:
        assert await _accepted(server, [("origin", "https://anywhere.example")])
        assert await _accepted(server, [("origin", "null")])


def test_allowed_origin_flag_repeats_and_env_takes_a_list(monkeypatch):
    monkeypatch.delenv("TRIO_CHAT_ALLOWED_ORIGINS", raising=False)
    args = build_parser().parse_args(
        ["serve", "--allowed-origin", "https://a.example", "--allowed-origin", "https://b.example"]
    )
    assert load_config(args, list(SETTINGS)).allowed_origins == (
        "https://a.example",
        "https://b.example",
    )
    monkeypatch.setenv("TRIO_CHAT_ALLOWED_ORIGINS", "https://c.example, https://d.example")
    args = build_parser().parse_args(["serve"])
    assert load_config(args, list(SETTINGS)).allowed_origins == (
        "https://c.example",
        "https://d.example",
    )
    # The flags win over the environment.
    args = build_parser().parse_args(["serve", "--allowed-origin", "https://a.example"])
    assert load_config(args, list(SETTINGS)).allowed_origins == ("https://a.example",)


# ---------------------------------------------------------------- per-IP caps


async def test_connections_per_ip_are_capped_with_429():
    async with open_test_server(Config(port=0, max_connections_per_ip=2)) as server:
        async with open_test_client(server, user="a"), open_test_client(server, user="b"):
            with LogCapture() as logs:
                assert await rejected_status(server.url + "?user=c") == 429
            assert logs.find("connection refused", "status=429", "already has 2 connections")
            # Every connection counts from its accept, plain HTTP too.
            assert (await ws_refusal(server.port, target="/ws?user=x")).status == 429
        await _wait(lambda: server.stats().connections == 0)
        # Once they are gone the IP may connect again.
        async with open_test_client(server, user="c") as c, open_test_client(server, user="d"):
            assert c.user_id == "c"
        assert server.stats().connections_refused == {429: 2}
        assert server.metrics.handshakes_refused == {}


async def test_any_websocket_client_counts_against_the_ip():
    config = Config(port=0, max_connections_per_ip=1)
    async with open_test_server(config) as server:
        # A bare-bones client that never reads still holds the IP's one slot.
        stream, _ = await open_raw_websocket(server.port)
        async with stream:
            assert await rejected_status(server.url) == 429


async def test_handshakes_per_ip_are_capped_with_429():
    config = Config(port=0, max_handshakes_per_ip=3)
    async with open_test_server(config) as server:
        for name in ("a", "b", "c"):
            async with open_test_client(server, user=name):
                pass
        with LogCapture() as logs:
            # No connection is open, but the IP used its handshakes for this window.
            assert await rejected_status(server.url + "?user=d") == 429
        assert logs.find("handshake refused", "status=429", "more than 3 handshakes")
        assert server.stats().connections == 0


async def test_failed_authentications_count_as_handshakes():
    config = Config(port=0, max_handshakes_per_ip=2, secret="x" * 40)
    async with open_test_server(config) as server:
        assert await rejected_status(server.url + "?token=guess1") == 401
        assert await rejected_status(server.url + "?token=guess2") == 401
        assert await rejected_status(server.url + "?token=guess3") == 429


# ---------------------------------------------------------------- capacity


async def test_over_capacity_is_503():
    async with open_test_server(Config(port=0, max_connections=2)) as server:
        async with open_test_client(server, user="a"):
            async with open_test_client(server, user="b"):
                with LogCapture() as logs:
                    assert await rejected_status(server.url + "?user=c") == 503
                assert logs.find("connection refused", "status=503", "capacity")
            await _wait(lambda: server.stats().tcp_connections == 1)
            async with open_test_client(server, user="c") as c:
                assert c.user_id == "c"
        assert server.stats().connections_refused == {503: 1}


async def test_any_websocket_client_counts_toward_capacity():
    async with open_test_server(Config(port=0, max_connections=1)) as server:
        stream, _ = await open_raw_websocket(server.port)
        async with stream:
            assert await rejected_status(server.url) == 503


# ---------------------------------------------------------------- frame size


async def _close_code(ws: trio_websocket.WebSocketConnection) -> int:
    with trio.fail_after(10):
        while True:
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code


async def test_a_frame_over_max_message_bytes_closes_1009():
    config = Config(port=0, max_message_bytes=1024)
    async with open_test_server(config) as server:
        async with open_test_client(server, user="alice") as alice:
            # Exactly the limit: accepted (and answered as invalid JSON).
            await alice.ws.send_message("x" * 1024)
            assert (await alice.expect("error"))["payload"]["code"] == 400
            await alice.ws.send_message("x" * 1025)
            assert await _close_code(alice.ws) == 1009
        await _wait(lambda: server.stats().connections == 0)
        assert server.metrics.closed_by_code.get("1009") == 1


async def test_a_fragmented_message_over_the_limit_closes_1009():
    config = Config(port=0, max_message_bytes=1024)
    async with open_test_server(config) as server:
        stream, _ = await open_raw_websocket(server.port)
        async with stream:
            # Three fragments of 400 bytes: each small, together too big.
            await stream.send_all(client_frame(b"a" * 400, 0x1, fin=False))
            await stream.send_all(client_frame(b"b" * 400, 0x0, fin=False))
            await stream.send_all(client_frame(b"c" * 400, 0x0, fin=True))
            received = b""
            with trio.fail_after(10):
                while True:
                    try:
                        chunk = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        break
                    if not chunk:
                        break
                    received += chunk
            # The close frame: opcode 8, status 1009 (0x03f1).
            assert b"\x88" in received
            close = received[received.index(b"\x88") :]
            assert close[2:4] == (1009).to_bytes(2, "big")
        await _wait(lambda: server.stats().connections == 0)


async def test_a_huge_frame_is_cut_off_without_being_buffered():
    # The header announces 100 MB; the server reads only up to its limit,
    # closes with 1009 and drops the connection long before the end.
    config = Config(port=0, max_message_bytes=4096)
    size = 100 * 1024 * 1024
    async with open_test_server(config) as server:
        stream, _ = await open_raw_websocket(server.port)
        head = client_frame(b"", length=size)
        sent = 0
        received = b""

        async def reader(cancel_scope: trio.CancelScope) -> None:
            nonlocal received
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                received += chunk
            cancel_scope.cancel()

        async with stream:
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader, nursery.cancel_scope)
                    chunk = b"x" * 65536
                    try:
                        await stream.send_all(head)
                        while sent < size:
                            await stream.send_all(chunk)
                            sent += len(chunk)
                    except trio.BrokenResourceError:
                        pass
                    await trio.sleep_forever()
        assert sent < size
        close = received[received.index(b"\x88") :]
        assert close[2:4] == (1009).to_bytes(2, "big")
        await _wait(lambda: server.stats().connections == 0)
        assert server.metrics.closed_by_code.get("1009") == 1


# ---------------------------------------------------------------- the rest holds


async def test_refused_clients_do_not_disturb_others():
    config = Config(port=0, max_connections=3, max_connections_per_ip=3)
    async with open_test_server(config) as server:
        async with (
            open_test_client(server, user="alice") as alice,
            open_test_client(server, user="bob") as bob,
        ):
            await alice.join("lobby")
            await bob.join("lobby")
            assert await rejected_status(server.url, headers=[("origin", "http://evil")]) == 403
            async with open_test_client(server, user="carol"):
                assert await rejected_status(server.url) in (429, 503)
            ack = await alice.chat("lobby", "still fine")
            assert ack["type"] == "ack"
            chat = await bob.expect("chat")
            assert json.dumps(chat["payload"]["content"]) == '"still fine"'


async def test_join_leave_and_typing_floods_are_limited_separately():
    # Not counted against the chat rate, but not unlimited either: each one
    # can make the server write to a whole room.
    config = Config(port=0, rate_messages=2, rate_seconds=60)
    async with open_test_server(config) as server:
        async with open_test_client(server, user="flood") as client:
            codes = []
            for i in range(101):  # the window: max(4 * rate_messages, 100)
                await client.send("join", {"room": "r"}, ref=f"j{i}")
                frame = await client.receive()
                codes.append(
                    frame["type"] if frame["type"] != "error" else frame["payload"]["code"]
                )
            assert codes == ["joined"] * 100 + [429]
            # The chat rate is untouched.
            assert (await client.chat("r", "still fine"))["type"] == "ack"
