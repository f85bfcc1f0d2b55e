"""Faults real networks produce, injected over real sockets on 127.0.0.1.

* a client that vanishes without a FIN (a frozen process, or a peer that
  never reads nor answers) is reaped by the heartbeat;
* a client that stops in the middle of a frame is reaped too: the heartbeat is
  also the read deadline, since no pong can be parsed before the frame that
  precedes it is complete;
* a TCP reset in the middle of a write to a slow client leaves every other
  client's stream intact;
* a connection that never sends its handshake is dropped at
  ``handshake_timeout``;
* a server bug while handling one client's frame is that client's error 500,
  logged with its traceback, and nothing else notices.

Timeouts are short (fractions of a second) so that each test takes a second
or two; every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from wire_support import (
    OP_PING,
    OP_TEXT,
    RawClient,
    assert_nothing_after_close,
    shrink_buffers,
)
from wsproto.events import Message, Ping

from trio_chat import ChatServer, Config
from trio_chat._hub import Outlet
from trio_chat._protocol import Chat, Join
from trio_chat.testing import TestClient, open_test_client, open_test_server

#: A heartbeat fast enough for tests: a dead peer is found within ~1 s.
PING_INTERVAL = 0.3
PONG_TIMEOUT = 1.0  # generous: the machine may be busy
HEARTBEAT = {"ping_interval": PING_INTERVAL, "pong_timeout": PONG_TIMEOUT}
#: Long enough for any reaping the heartbeat will ever do.
REAP_BOUND = 10 * (PING_INTERVAL + PONG_TIMEOUT)


async def wait_until(predicate: Any, timeout: float = REAP_BOUND) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def reaped(server: ChatServer, user: str) -> Outlet:
    """Wait until *user*'s open connection is gone; return its outlet (which
    says how and why it ended)."""
    conn = connection_of(server, user)
    assert conn is not None, f"{user} is not connected"
    await wait_until(lambda: connection_of(server, user) is None)
    return conn.outlet


def connection_of(server: ChatServer, user: str) -> Any:
    """The server-side Connection of *user* (test introspection)."""
    for conn in list(server._connections):
        if conn.user_id == user:
            return conn
    return None


@asynccontextmanager
async def open_raw_client(
    server: ChatServer, user: str, *, small_buffers: bool = False
) -> AsyncIterator[RawClient]:
    """A hand-driven client over TCP, past the handshake and its welcome."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffers:  # before connecting, so the TCP window stays small
        shrink_buffers(sock)
    await sock.connect(("127.0.0.1", server.port))
    stream = trio.SocketStream(sock)
    client = RawClient(stream)
    try:
        with trio.fail_after(5):
            await client.send_raw(client.request_bytes(f"/ws?user={user}"))
            await client.read_handshake()
            welcome = await client.read_frames(1, OP_TEXT)
        assert json.loads(welcome[0].text)["type"] == "welcome"
        yield client
    finally:
        await stream.aclose()


async def send_json(
    client: RawClient, type: str, payload: dict[str, Any], ref: str | None = None
) -> None:
    frame: dict[str, Any] = {"type": type, "payload": payload}
    if ref is not None:
        frame["ref"] = ref
    await client.send(Message(data=json.dumps(frame)))


# ------------------------------------------------- half-open: the heartbeat


async def test_a_peer_that_never_reads_nor_answers_is_reaped_by_the_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    async with (
        open_test_server(Config(**HEARTBEAT)) as server,
        open_test_client(server, user="alive") as alive,
    ):
        async with open_raw_client(server, "silent") as silent:
            outlet = await reaped(server, "silent")
            # The silent peer was pinged and then dropped: no close
            # frame (a dead peer could not answer one).
            with trio.fail_after(5):
                await silent.read_until_eof()
            frames, rest = silent.frames()
            assert any(f.opcode == OP_PING for f in frames)
            assert assert_nothing_after_close(frames, rest) is None
        # The live client, whose library answers pings, was pinged just
        # as often and is still here.
        assert connection_of(server, "alive") is not None
        await trio.sleep(2 * (PING_INTERVAL + PONG_TIMEOUT))
        await alive.join("still-here")
        assert connection_of(server, "alive") is not None
    assert outlet.close_code is None and "no pong" in outlet.close_reason
    (logged,) = [m for m in caplog.messages if m.startswith("disconnect user=silent ")]
    assert "no pong" in logged


FROZEN_CLIENT = textwrap.dedent(
    """
    import sys, trio, trio_websocket

    async def main():
        async with trio_websocket.open_websocket_url(sys.argv[1]) as ws:
            await ws.get_message()  # the welcome
            print("ready", flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


async def test_a_frozen_client_process_is_reaped_by_the_heartbeat() -> None:
    """A real client process answers pings until it is stopped (SIGSTOP):
    then its kernel still holds the TCP connection open, but nothing answers."""
    async with open_test_server(Config(**HEARTBEAT)) as server:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", FROZEN_CLIENT, server.url + "?user=frozen"],
            stdout=subprocess.PIPE,
        )
        try:
            with trio.fail_after(20):
                assert proc.stdout is not None
                assert (await proc.stdout.receive_some(100)).startswith(b"ready")
            # Alive, it answers every ping: two heartbeat rounds go by.
            await trio.sleep(2 * (PING_INTERVAL + PONG_TIMEOUT))
            assert connection_of(server, "frozen") is not None
            proc.send_signal(signal.SIGSTOP)
            outlet = await reaped(server, "frozen")
        finally:
            proc.kill()
            with trio.move_on_after(5):
                await proc.wait()
    assert outlet.close_code is None and "no pong" in outlet.close_reason


# ------------------------------------ stopped mid-frame: the read deadline


MASK = b"\x01\x02\x03\x04"


def masked_text_header(length: int) -> bytes:
    assert length < 126
    return bytes((0x81, 0x80 | length))


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b"\x81", id="half-a-header"),
        pytest.param(masked_text_header(100) + MASK[:2], id="half-the-mask-key"),
        pytest.param(masked_text_header(100) + MASK + b"x" * 40, id="half-the-payload"),
        pytest.param(b"\x81\xfe\x00", id="half-an-extended-length"),
    ],
)
async def test_a_client_stalled_mid_frame_is_reaped(partial: bytes) -> None:
    """It keeps reading whatever the server sends, but its frame never ends:
    the pings it is sent cannot be answered in a way the server can parse."""
    async with (
        open_test_server(Config(**HEARTBEAT)) as server,
        open_raw_client(server, "stalled") as client,
    ):
        conn = connection_of(server, "stalled")
        await client.send_raw(partial)
        with trio.fail_after(REAP_BOUND):
            await client.read_until_eof()  # reads everything, answers nothing
        await wait_until(lambda: connection_of(server, "stalled") is None)
        outlet = conn.outlet
        frames, _ = client.frames()
        assert any(f.opcode == OP_PING for f in frames)
    assert outlet.close_code is None and "no pong" in outlet.close_reason


async def test_pongs_sent_after_half_a_frame_are_not_pongs() -> None:
    """A client stuck mid-frame that *does* answer every ping: its pong bytes
    only continue the unfinished frame's payload, so the server never sees a
    pong, and reaps it as if it were silent."""
    async with (
        open_test_server(Config(**HEARTBEAT)) as server,
        open_raw_client(server, "confused") as client,
    ):
        # A binary frame (no UTF-8 check) of 125 bytes: 115 short.
        conn = connection_of(server, "confused")
        await client.send_raw(bytes((0x82, 0x80 | 125)) + MASK + b"x" * 10)
        answered = 0
        with trio.fail_after(REAP_BOUND):
            while await client.read_some():
                frames, _ = client.frames()
                pings = [f for f in frames if f.opcode == OP_PING]
                for ping in pings[answered:]:
                    await client.send(Ping(ping.payload).response())
                    answered += 1
        assert answered >= 1
        await wait_until(lambda: connection_of(server, "confused") is None)
    assert conn.outlet.close_code is None and "no pong" in conn.outlet.close_reason


async def test_a_client_that_finishes_its_frame_slowly_but_in_time_stays() -> None:
    """The deadline is for frames that never end: one that is completed
    within the heartbeat's window is handled, and the pong after it counts."""
    async with (
        open_test_server(Config(ping_interval=0.3, pong_timeout=2.0)) as server,
        open_raw_client(server, "slowpoke") as client,
    ):
        frame = json.dumps({"type": "join", "payload": {"room": "slow"}}).encode()
        masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(frame))
        data = masked_text_header(len(frame)) + MASK + masked
        for i in range(0, len(data), 8):
            await client.send_raw(data[i : i + 8])
            await trio.sleep(0.02)
        with trio.fail_after(5):
            while True:
                frames, _ = client.frames()
                texts = [json.loads(f.text) for f in frames if f.opcode == OP_TEXT]
                if any(t["type"] == "joined" for t in texts):
                    break
                assert await client.read_some()
        # Now it answers the heartbeat like any live client.
        answered = 0
        with trio.move_on_after(3 * 0.3 + 1):
            while await client.read_some():
                pings = [f for f in client.frames()[0] if f.opcode == OP_PING]
                for ping in pings[answered:]:
                    await client.send(Ping(ping.payload).response())
                    answered += 1
        assert not client.eof
        assert answered >= 2
        assert connection_of(server, "slowpoke") is not None


# ------------------------------------------ TCP reset mid-write, slow client


async def test_a_reset_slow_client_does_not_disturb_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    config = Config(rate_messages=100_000, queue_size=100_000, ping_interval=60)
    content = "r" * 3000
    before, after = 40, 40
    async with (
        open_test_server(config) as server,
        open_test_client(server, user="sender") as sender,
        open_test_client(server, user="reader1") as reader1,
        open_test_client(server, user="reader2") as reader2,
        open_raw_client(server, "slow", small_buffers=True) as slow,
    ):
        for client in (sender, reader1, reader2):
            await client.join("room")
        await send_json(slow, "join", {"room": "room"})
        slow_conn = connection_of(server, "slow")
        # Small kernel buffers on the server's side too, so that a few
        # messages fill them and its writer is parked mid-frame.
        shrink_buffers(slow_conn.stream.transport.socket)
        received: dict[str, list[int]] = {"reader1": [], "reader2": []}

        async def read_all(client: TestClient, name: str) -> None:
            while len(received[name]) < before + after:
                frame = await client.receive(10)
                if frame["type"] == "chat":
                    assert frame["payload"]["content"] == content
                    received[name].append(frame["payload"]["id"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, reader1, "reader1")
            nursery.start_soon(read_all, reader2, "reader2")
            for _ in range(before):
                assert (await sender.chat("room", content))["type"] == "ack"
            await wait_until(lambda: slow_conn.stream.busy, 5)
            assert not slow_conn.outlet.closed
            # Reset the slow client: SO_LINGER 0, then close, sends RST.
            slow.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            slow.stream.socket.close()
            for _ in range(after):
                assert (await sender.chat("room", content))["type"] == "ack"
        await wait_until(lambda: connection_of(server, "slow") is None, 5)
        # Lost without a close frame: an abort.
        assert slow_conn.outlet.close_code is None
        assert slow_conn.outlet.close_reason in ("connection lost", "write failed") or (
            "connection lost while writing" in slow_conn.outlet.close_reason
        )
        expected = list(range(1, before + after + 1))
        assert received == {"reader1": expected, "reader2": expected}
        assert server.stats().connections == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ------------------------------------------------------ never a handshake


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgr", id="half-a-request-head"),
    ],
)
async def test_a_connection_without_a_handshake_is_dropped_at_handshake_timeout(
    sent: bytes,
) -> None:
    timeout = 0.5
    async with open_test_server(Config(handshake_timeout=timeout)) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            start = trio.current_time()
            if sent:
                await stream.send_all(sent)
            with trio.fail_after(timeout + 5):
                try:
                    data = await stream.receive_some(1000)
                except trio.BrokenResourceError:
                    data = b""
            assert data == b""  # closed, without a word
            assert trio.current_time() - start >= timeout * 0.9
        # Nothing of it is left on the server, and it still serves others.
        assert server.stats().connections == 0
        async with open_test_client(server, user="after") as client:
            await client.join("lobby")


# -------------------------------------------------- a bug on one frame


async def test_a_fault_handling_one_frame_is_that_clients_500_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    faults = 0

    def fault_hook(event: object) -> None:
        nonlocal faults
        if isinstance(event, Chat) and event.content == "boom":
            faults += 1
            raise RuntimeError("injected fault")
        if isinstance(event, Join) and event.room == "doomed":
            faults += 1
            raise KeyError("injected fault on join")

    async with open_test_server(Config(rate_messages=1000)) as server:
        server.hub.fault_hook = fault_hook
        async with (
            open_test_client(server, user="victim") as victim,
            open_test_client(server, user="bystander") as bystander,
        ):
            await victim.join("room")
            await bystander.join("room")
            error = await victim.chat("room", "boom", ref="r1")
            assert error["type"] == "error"
            assert error["payload"]["code"] == 500
            assert error.get("ref") == "r1"
            # The victim's connection, the hub and the room carry on: the
            # next chat gets id 1 (the faulty one never happened).
            ack = await victim.chat("room", "fine", ref="r2")
            assert ack["type"] == "ack" and ack["payload"]["id"] == 1
            frame = await bystander.expect("chat")
            assert frame["payload"]["content"] == "fine" and frame["payload"]["id"] == 1
            assert (await bystander.chat("room", "hello"))["type"] == "ack"
            assert (await victim.expect("chat"))["payload"]["content"] == "hello"
            # A fault on another kind of frame, from the other client.
            await bystander.send("join", {"room": "doomed"}, ref="j1")
            error = await bystander.expect("error")
            assert error["payload"]["code"] == 500 and error["ref"] == "j1"
            async with open_test_client(server, user="newcomer") as newcomer:
                joined = await newcomer.join("room")
                assert set(joined["payload"]["members"]) == {
                    "victim",
                    "bystander",
                    "newcomer",
                }
            assert server.stats().connections == 2
    assert faults == 2
    assert server.hub.counters.errors.get(500) == 2
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 2
    for record, exc_type in zip(logged, (RuntimeError, KeyError), strict=True):
        assert record.exc_info is not None and record.exc_info[0] is exc_type
        assert "injected fault" in str(record.exc_info[1])
    assert "Traceback (most recent call last)" in caplog.text
    assert "fault_hook" in caplog.text  # the traceback reaches the faulty code
