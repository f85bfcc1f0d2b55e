"""Faults real networks produce, and what the server does about them.

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

What is about time (the heartbeat, the handshake deadline) runs over
in-memory streams on trio's virtual clock (``autojump_clock``), with the
default heartbeat: a busy machine cannot make it pass or fail, and each test
asserts when things happen to the virtual microsecond.  What is about sockets
(a reset, a full kernel buffer) runs over real TCP on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import trio
import trio.testing
import trio_websocket
from wire_support import (
    OP_PING,
    OP_TEXT,
    RawClient,
    assert_nothing_after_close,
    shrink_buffers,
)
from wsproto.events import Message, Ping

from trio_chat import ChatServer, Config
from trio_chat._protocol import Chat, Join
from trio_chat.testing import (
    TestClient,
    open_memory_client,
    open_memory_server,
    open_memory_stream,
    open_test_client,
    open_test_server,
)

#: The default heartbeat: a silent peer is reaped PING + PONG after its last pong.
PING, PONG = Config().ping_interval, Config().pong_timeout
HEARTBEAT = {"ping_interval": PING, "pong_timeout": PONG}


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def connected(server: ChatServer, user: str) -> bool:
    return bool(server.connections(user))


def disconnect_line(caplog: pytest.LogCaptureFixture, user: str) -> str:
    """The one ``disconnect`` line the server logged for *user*."""
    (line,) = [m for m in caplog.messages if m.startswith(f"disconnect user={user} ")]
    return line


@asynccontextmanager
async def open_memory_raw_client(server: ChatServer, user: str) -> AsyncIterator[RawClient]:
    """A hand-driven client over an in-memory stream, past its welcome."""
    client = RawClient(open_memory_stream(server))
    try:
        await client.send_raw(client.request_bytes(f"/ws?user={user}"))
        await client.read_handshake()
        welcome = await client.read_frames(1, OP_TEXT)
        assert json.loads(welcome[0].text)["type"] == "welcome"
        yield client
    finally:
        await client.stream.aclose()


@asynccontextmanager
async def open_raw_client(
    server: ChatServer, user: str, *, small_buffers: bool = False
) -> AsyncIterator[RawClient]:
    """A hand-driven client over TCP, past the handshake and its welcome.

    The server serves the accepted end (given to it with ``serve_stream``),
    with small kernel buffers too if *small_buffers*, so that a few messages
    fill them and the server's writer is parked mid-frame.
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if small_buffers:  # before connecting, so the TCP window stays small
        shrink_buffers(sock)
    async with listeners[0] as listener:
        await sock.connect(listener.socket.getsockname())
        accepted = await listener.accept()
    if small_buffers:
        shrink_buffers(accepted.socket)
    server.serve_stream(accepted, "127.0.0.1")
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
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_chat")
    async with (
        open_memory_server(Config(**HEARTBEAT)) as server,
        open_memory_client(server, user="alive") as alive,
    ):
        async with open_memory_raw_client(server, "silent") as silent:
            connected_at = trio.current_time()
            # Pinged after PING, then dropped PONG later: no close frame (a
            # dead peer could not answer one).
            await silent.read_until_eof()
            assert trio.current_time() - connected_at == pytest.approx(PING + PONG, abs=1e-6)
            await trio.testing.wait_all_tasks_blocked()
            assert not connected(server, "silent")
            frames, rest = silent.frames()
            assert [f.opcode for f in frames] == [OP_TEXT, OP_PING]  # the welcome, one ping
            assert assert_nothing_after_close(frames, rest) is None
        # The live client, whose library answers pings, was pinged just as
        # often and is still here, rounds later.
        await trio.sleep(5 * (PING + PONG))
        assert connected(server, "alive")
        await alive.join("still-here")
    line = disconnect_line(caplog, "silent")
    assert "code=abort" in line and f"reason=no pong within {PONG:g} s" in line


class Freezable:
    """A link between a client and the server that can freeze, as a stopped
    process (SIGSTOP) does: its kernel keeps the connection open, but from
    then on nothing passes either way and nothing is closed."""

    def __init__(self, server_end: trio.abc.Stream) -> None:
        self.client_end, self._near = trio.testing.memory_stream_pair()
        self._far = server_end
        self.frozen = False

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, self._near, self._far)
            nursery.start_soon(self._pump, self._far, self._near)

    async def _pump(self, source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        while data := await source.receive_some():
            if self.frozen:
                await trio.sleep_forever()
            await sink.send_all(data)


async def test_a_frozen_client_is_reaped_by_the_heartbeat(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A real WebSocket client (trio-websocket, which answers pings by
    itself) stays for as long as it runs; frozen, it is reaped one
    heartbeat later."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    async with open_memory_server(Config(**HEARTBEAT)) as server, trio.open_nursery() as nursery:
        link = Freezable(open_memory_stream(server))
        nursery.start_soon(link.run)
        ws = await trio_websocket.wrap_client_stream(
            nursery, cast("trio.SocketStream", link.client_end), "localhost", "/ws?user=frozen"
        )
        assert json.loads(await ws.get_message())["type"] == "welcome"
        # Alive, it answers every ping: many heartbeat rounds go by.
        await trio.sleep(10 * PING + PONG / 2)
        assert connected(server, "frozen")
        link.frozen = True
        frozen_at = trio.current_time()
        await wait_until(lambda: not connected(server, "frozen"), 2 * (PING + PONG))
        # The next ping went unanswered: reaped PONG after it.
        assert trio.current_time() - frozen_at <= PING + PONG
        nursery.cancel_scope.cancel()
    line = disconnect_line(caplog, "frozen")
    assert "code=abort" in line and "reason=no pong" in line


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
async def test_a_client_stalled_mid_frame_is_reaped(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, partial: bytes
) -> None:
    """It keeps reading whatever the server sends, but its frame never ends:
    the pings it is sent cannot be answered in a way the server can parse."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    async with (
        open_memory_server(Config(**HEARTBEAT)) as server,
        open_memory_raw_client(server, "stalled") as client,
    ):
        await client.send_raw(partial)
        sent_at = trio.current_time()
        await client.read_until_eof()  # reads everything, answers nothing
        assert trio.current_time() - sent_at == pytest.approx(PING + PONG, abs=1e-6)
        await trio.testing.wait_all_tasks_blocked()
        assert not connected(server, "stalled")
        frames, _ = client.frames()
        assert [f.opcode for f in frames] == [OP_TEXT, OP_PING]  # the welcome, one ping
    assert "reason=no pong" in disconnect_line(caplog, "stalled")


async def test_pongs_sent_after_half_a_frame_are_not_pongs(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A client stuck mid-frame that *does* answer every ping: its pong bytes
    only continue the unfinished frame's payload, so the server never sees a
    pong, and reaps it as if it were silent."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    async with (
        open_memory_server(Config(**HEARTBEAT)) as server,
        open_memory_raw_client(server, "confused") as client,
    ):
        # A binary frame (no UTF-8 check) of 125 bytes: 115 short.
        await client.send_raw(bytes((0x82, 0x80 | 125)) + MASK + b"x" * 10)
        sent_at = trio.current_time()
        answered = 0
        while await client.read_some():
            frames, _ = client.frames()
            pings = [f for f in frames if f.opcode == OP_PING]
            for ping in pings[answered:]:
                await client.send(Ping(ping.payload).response())
                answered += 1
        assert answered == 1
        assert trio.current_time() - sent_at == pytest.approx(PING + PONG, abs=1e-6)
        await trio.testing.wait_all_tasks_blocked()
        assert not connected(server, "confused")
    assert "reason=no pong" in disconnect_line(caplog, "confused")


async def test_a_client_that_finishes_its_frame_slowly_but_in_time_stays(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The deadline is for frames that never end: one that is completed
    within the heartbeat's window, after a ping went out, is handled, and
    the pong after it counts."""
    async with (
        open_memory_server(Config(**HEARTBEAT)) as server,
        open_memory_raw_client(server, "slowpoke") as client,
    ):
        frame = json.dumps({"type": "join", "payload": {"room": "slow"}}).encode()
        masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(frame))
        data = masked_text_header(len(frame)) + MASK + masked
        chunks = [data[i : i + 8] for i in range(0, len(data), 8)]
        # The frame's last byte comes PING + PONG / 2 after its first.
        pause = (PING + PONG / 2) / (len(chunks) - 1)
        for i, chunk in enumerate(chunks):
            if i:
                await trio.sleep(pause)
            await client.send_raw(chunk)
        texts = [json.loads(f.text) for f in (await client.read_frames(2, OP_TEXT))]
        assert texts[-1]["type"] == "joined"
        # The ping went out while the frame was unfinished.
        assert [f.opcode for f in client.frames()[0]] == [OP_TEXT, OP_PING, OP_TEXT]
        # A ping went out while the frame was unfinished; answered now, in
        # time, it counts, and then the client answers like any live one.
        answered = 0
        with trio.move_on_after(5 * (PING + PONG)):
            while True:
                pings = [f for f in client.frames()[0] if f.opcode == OP_PING]
                for ping in pings[answered:]:
                    await client.send(Ping(ping.payload).response())
                    answered += 1
                assert await client.read_some()
        assert not client.eof
        assert answered >= 5
        assert connected(server, "slowpoke")


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
            # Its kernel buffers are small on both sides: a few messages
            # fill them and the server's writer is parked mid-frame.
            await wait_until(lambda: server.connections("slow")[0].writing, 5)
            # Reset the slow client: SO_LINGER 0, then close, sends RST.
            slow.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            slow.stream.socket.close()
            for _ in range(after):
                assert (await sender.chat("room", content))["type"] == "ack"
        await wait_until(lambda: not connected(server, "slow"), 5)
        expected = list(range(1, before + after + 1))
        assert received == {"reader1": expected, "reader2": expected}
        assert server.stats().connections == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Lost without a close frame: an abort.
    line = disconnect_line(caplog, "slow")
    reason = line.partition(" reason=")[2]
    assert "code=abort" in line
    assert (
        reason in ("connection lost", "write failed") or "connection lost while writing" in reason
    )


# ------------------------------------------------------ never a handshake


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgr", id="half-a-request-head"),
    ],
)
async def test_a_connection_without_a_handshake_is_dropped_at_handshake_timeout(
    autojump_clock: trio.testing.MockClock, sent: bytes
) -> None:
    config = Config()
    async with open_memory_server(config) as server:
        stream = open_memory_stream(server)
        async with stream:
            start = trio.current_time()
            if sent:
                await stream.send_all(sent)
            assert await stream.receive_some(1000) == b""  # closed, without a word
            assert trio.current_time() - start == pytest.approx(config.handshake_timeout, abs=1e-6)
        # Nothing of it is left on the server, and it still serves others.
        await wait_until(lambda: server.stats().tcp_connections == 0)
        assert server.stats().connections == 0
        async with open_memory_client(server, user="after") as client:
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
