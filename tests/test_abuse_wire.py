"""Hostile clients at the WebSocket layer, over real sockets on 127.0.0.1
(the slow consumer's grace, a matter of time, on trio's virtual clock).

Each test is one attack: a handshake the RFC forbids, a message that never
ends, a ping flood, a protocol error, a slow consumer, a deflate bomb.  Each
asserts the bound (a status, a close code actually received, the log and
metrics saying what was actually sent), and that a bystander carries on.
Frames are built by hand (``ws_frames``); nothing here sleeps to prove an
absence: every wait ends on a frame, a close or EOF.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import zlib

import pytest
import trio
import trio.testing
from _raw_client import collect_logs
from http_support import open_raw_websocket, raw_exchange
from wire_support import OP_CLOSE, parse_frames
from ws_frames import OP_CONT, OP_PING, OP_TEXT, client_frame, close_payload, deflate_message

from trio_chat import Config
from trio_chat._testing_server import (
    open_memory_client,
    open_memory_server,
    open_memory_stream,
    open_test_client,
    open_test_server,
)

KEY = base64.b64encode(os.urandom(16))


def upgrade(
    version: bytes = b"1.1", *, keys: tuple[bytes, ...] = (KEY,), extra: bytes = b""
) -> bytes:
    head = (
        b"GET /ws HTTP/%s\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        % version
    )
    head += b"".join(b"Sec-WebSocket-Key: %s\r\n" % k for k in keys)
    return head + b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"


async def read_until_closed(stream: trio.SocketStream, data: bytes = b"") -> bytes:
    """Everything the server sends until it closes the connection."""
    received = bytearray(data)
    with trio.fail_after(20):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


async def connections_end(server) -> None:
    """Wait (a few seconds at most) until the server holds no connection."""
    with trio.fail_after(5):
        while server.stats().connections:
            await trio.sleep(0.01)


def close_code(data: bytes) -> int | None:
    frames, _ = parse_frames(data)
    closes = [f for f in frames if f.opcode == OP_CLOSE]
    assert len(closes) <= 1
    return closes[0].close_code if closes else None


# -------------------------------------------------------------- handshake


async def test_handshakes_the_rfc_forbids_are_refused() -> None:
    async with open_test_server() as server:
        cases = [
            (upgrade(b"1.0"), b"400"),
            (upgrade(keys=(b"x",)), b"400"),
            (upgrade(keys=(KEY, KEY)), b"400"),
            (upgrade(keys=(base64.b64encode(b"x" * 15),)), b"400"),
            (upgrade().replace(b"Version: 13", b"Version: 8"), b"426"),
        ]
        for request, status in cases:
            reply = await raw_exchange(server.port, request)
            assert reply.startswith(b"HTTP/1.1 " + status), (request, reply[:80])
            if status == b"426":
                assert b"sec-websocket-version: 13" in reply.lower()
        assert server.stats().connections == 0
        async with open_test_client(server, user="bystander") as bystander:
            await bystander.join("r")


# -------------------------------------------------------------- messages that never end


async def test_300000_empty_fragments_close_1009_within_the_budget() -> None:
    """Empty continuation frames cost 6 bytes each on the wire: the message
    budget (64 KiB) counts them, so the server closes 1009 long before the
    attacker is done."""
    async with open_test_server() as server:
        stream, rest = await open_raw_websocket(server.port, "/ws?user=frag")
        await stream.send_all(client_frame(OP_TEXT, b"{", fin=False))
        empty = client_frame(OP_CONT, b"", fin=False) * 10_000
        sent = 0
        with trio.fail_after(20):
            try:
                while sent < 300_000:
                    await stream.send_all(empty)
                    sent += 10_000
            except trio.BrokenResourceError:
                pass
        data = await read_until_closed(stream, rest)
        assert close_code(data) == 1009
        await stream.aclose()  # the server lingers until the client's EOF
        await connections_end(server)


async def test_a_ping_flood_is_closed_1008_and_a_bystander_carries_on() -> None:
    async with open_test_server() as server:
        async with open_test_client(server, user="bystander") as bystander:
            await bystander.join("r")
            stream, rest = await open_raw_websocket(server.port, "/ws?user=pinger")
            with trio.fail_after(20):
                try:
                    for _ in range(50):
                        await stream.send_all(client_frame(OP_PING, b"p") * 100)
                except trio.BrokenResourceError:
                    pass
            data = await read_until_closed(stream, rest)
            assert close_code(data) == 1008
            ack = await bystander.chat("r", "still here")
            assert ack["type"] == "ack"
            await stream.aclose()


async def test_a_client_that_never_stops_sending_is_let_go_after_the_linger_budget() -> None:
    """After failing a connection the server reads and discards what the
    client still sends (so that its close frame is not destroyed by a reset),
    but only up to its linger budget: a client that sends without end is
    closed, not read forever."""
    async with open_test_server() as server:
        stream, _ = await open_raw_websocket(server.port, "/ws?user=babbler")
        junk = client_frame(OP_TEXT, b"\xff") + client_frame(OP_TEXT, b"x" * 60_000) * 16
        sent = 0
        with trio.fail_after(20):
            try:
                while sent < 64 << 20:
                    await stream.send_all(junk)
                    sent += len(junk)
            except trio.BrokenResourceError:
                pass
        assert sent < 64 << 20  # the server closed the connection
        await stream.aclose()
        await connections_end(server)


async def test_one_valid_frame_every_19_does_not_evade_the_invalid_frame_rule() -> None:
    async with open_test_server() as server:
        stream, rest = await open_raw_websocket(server.port, "/ws?user=junk")
        join = json.dumps({"type": "join", "payload": {"room": "r"}}).encode()
        with trio.fail_after(20):
            try:
                for _ in range(10):
                    for _ in range(19):
                        await stream.send_all(client_frame(OP_TEXT, b"junk"))
                    await stream.send_all(client_frame(OP_TEXT, join))
            except trio.BrokenResourceError:
                pass
        # (Read up to the close frame, not to the end: the client does not
        # answer it, and the server would wait out its close timeout.)
        data = bytearray(rest)
        with trio.fail_after(20):
            while not any(f.opcode == OP_CLOSE for f in parse_frames(bytes(data))[0]):
                chunk = await stream.receive_some(65536)
                assert chunk, "closed without a close frame"
                data += chunk
        assert close_code(bytes(data)) == 1008
        await stream.aclose()


# -------------------------------------------------------------- what is logged is what happened


async def test_a_protocol_error_sends_1002_and_is_logged_as_sent() -> None:
    with collect_logs("disconnect ") as lines:
        async with open_test_server() as server:
            stream, rest = await open_raw_websocket(server.port, "/ws?user=bad")
            await stream.send_all(b"\x83\x80\x00\x00\x00\x00")  # reserved opcode 0x3
            data = await read_until_closed(stream, rest)
            assert close_code(data) == 1002
            await stream.aclose()
            with trio.fail_after(10):
                while server.stats().connections:
                    await trio.sleep(0.01)
            assert server.metrics.closed_by.get(("1002", "server")) == 1
    (line,) = [x for x in lines if "user=bad" in x]
    assert "code=1002 by=server" in line


async def test_a_clients_1000_into_a_full_socket_is_logged_as_received() -> None:
    """The client stops reading, the server's socket fills up, then the
    client closes with 1000: the close reply cannot go out, and the log
    says the client closed with 1000 -- not 1011, not an abort."""
    config = Config(port=0, write_timeout=0.5, queue_size=10_000)
    with collect_logs("disconnect ") as lines:
        async with open_test_server(config) as server:
            stream, _ = await open_raw_websocket(server.port, "/ws?user=full")
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            join = json.dumps({"type": "join", "payload": {"room": "r"}}).encode()
            await stream.send_all(client_frame(OP_TEXT, join))
            with trio.fail_after(10):
                while "r" not in server.hub.state.room_names():
                    await trio.sleep(0.01)
            with trio.fail_after(20):
                while not server.connections("full")[0].writing:
                    await server.publish("r", "x" * 3000)
            await stream.send_all(client_frame(0x8, close_payload(1000, "bye")))
            with trio.fail_after(20):
                while server.stats().connections:
                    await trio.sleep(0.01)
            await stream.aclose()
            assert server.metrics.closed_by.get(("1000", "client")) == 1
    (line,) = [x for x in lines if "user=full" in x]
    assert "code=1000 by=client" in line


# -------------------------------------------------------------- slow consumer


async def test_a_slow_consumer_leaves_its_rooms_at_once_then_is_let_go_within_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On trio's virtual clock: the sloth's stream is a lockstep one, so
    once it stops reading every write to it waits, as on a full socket."""
    config = Config(queue_size=8, slow_consumer_grace=5.0, write_timeout=100)
    with collect_logs("disconnect ") as lines:
        async with open_memory_server(config) as server:
            async with open_memory_client(server, user="bob") as bob:
                await bob.join("r")
                stream = open_memory_stream(server, lockstep=True)
                await stream.send_all(upgrade().replace(b"GET /ws ", b"GET /ws?user=sloth "))
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive_some()
                assert head.startswith(b"HTTP/1.1 101 ")
                join = json.dumps({"type": "join", "payload": {"room": "r"}}).encode()
                await stream.send_all(client_frame(OP_TEXT, join))
                await bob.expect("system")  # sloth joined
                while not server.stats().slow_consumer_drops:
                    await server.publish("r", "y" * 2000)
                dropped = trio.current_time()
                # The leave comes in the same hub wake as the overflow:
                # before the chat published right after it.
                await server.publish("r", "marker")
                seen = []
                while True:
                    frame = await bob.receive()
                    seen.append(frame["type"])
                    if frame["type"] == "chat" and frame["payload"]["content"] == "marker":
                        break
                assert "system" in seen  # sloth's leave
                assert trio.current_time() == dropped  # at once
                while server.stats().connections == 2:
                    await trio.sleep(0.01)
                assert trio.current_time() - dropped == pytest.approx(
                    config.slow_consumer_grace, abs=0.011
                )
                await stream.aclose()
    (line,) = [x for x in lines if "user=sloth" in x]
    assert "reason=slow consumer" in line
    assert "code=abort" in line or "code=1013 by=server" in line


# -------------------------------------------------------------- deflate


async def test_a_deflate_bomb_closes_1009_in_decompressed_bytes() -> None:
    async with open_test_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(upgrade(extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n"))
        head = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 101")
        assert b"permessage-deflate; server_no_context_takeover" in head
        rest = head.partition(b"\r\n\r\n")[2]
        bomb = deflate_message(b"\x00" * 50_000_000)  # about 50 KB compressed
        assert len(bomb) < 65536
        try:
            await stream.send_all(client_frame(OP_TEXT, bomb, rsv1=True))
        except trio.BrokenResourceError:
            pass
        data = await read_until_closed(stream, rest)
        assert close_code(data) == 1009
        await stream.aclose()


async def test_chat_frames_are_compressed_for_a_client_that_agreed() -> None:
    async with open_test_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(
            upgrade(
                extra=b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            ).replace(b"/ws HTTP", b"/ws?user=zip HTTP")
        )
        data = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
        data = data.partition(b"\r\n\r\n")[2]
        join = json.dumps({"type": "join", "payload": {"room": "r"}}).encode()
        await stream.send_all(client_frame(OP_TEXT, deflate_message(join), rsv1=True))
        with trio.fail_after(10):
            while not server.hub.state.members("r"):
                await trio.sleep(0.01)
        await server.publish("r", "z" * 3000)
        with trio.fail_after(10):
            while True:
                frames, _ = parse_frames_any(data)
                chats = [
                    (f, json.loads(zlib.decompressobj(-15).decompress(f[1] + b"\x00\x00\xff\xff")))
                    for f in frames
                    if f[0] & 0x40
                ]
                chats = [(f, e) for f, e in chats if e["type"] == "chat"]
                if chats:
                    break
                data += await stream.receive_some(65536)
        (frame, event), *_ = chats
        assert event["payload"]["content"] == "z" * 3000
        assert len(frame[1]) < 200  # compressed: 3,000 z's
        await stream.aclose()


def parse_frames_any(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """(first byte, payload) of each whole server frame, RSV bits allowed."""
    out = []
    pos = 0
    while len(data) - pos >= 2:
        n = data[pos + 1] & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if len(data) - pos < head + n:
            break
        out.append((data[pos], data[pos + head : pos + head + n]))
        pos += head + n
    return out, data[pos:]
