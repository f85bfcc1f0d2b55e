"""The frame-writing path: WireStream (one lock, fast path, tail) and Outlet.

Everything runs over real socketpairs (or memory / TLS streams for the queued
path), with the real connection layer and the real Connection tasks; the
bytes a client receives are parsed frame by frame, both by this file's own
parser and by wsproto's, to show that frames are whole, ordered, and that
nothing follows a close frame.
"""

from __future__ import annotations

import os
import socket
import ssl

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme
from hypothesis import given, settings, strategies as st
from wire_support import (
    OP_CLOSE,
    OP_PONG,
    OP_TEXT,
    assert_nothing_after_close,
    open_served_connection,
    parse_frames,
    shrink_buffers,
    stream_pair,
)
from wsproto.events import CloseConnection, Message, Ping

from trio_chat._config import Config
from trio_chat._frames import binary_frame, text_frame
from trio_chat._hub import SLOW_CONSUMER, HubCounters, Outlet
from trio_chat._stream import WireStream

BIG = 256 * 1024  # far more than a shrunk socket buffer holds


def pattern(n: int, seed: int = 0) -> bytes:
    """*n* bytes that show where any slice of them came from."""
    block = bytes((seed + i) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


async def read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def pending_bytes(sock: trio.socket.SocketType) -> bytes:
    """Whatever is readable on *sock* right now, without waiting."""
    data = bytearray()
    while True:
        try:
            chunk = os.read(sock.fileno(), 65536)  # trio sockets are non-blocking
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def noop() -> None:
    pass


# ---------------------------------------------------------------- WireStream


async def test_write_nowait_writes_whole_data_when_the_socket_has_room() -> None:
    server, peer = stream_pair()
    wire = WireStream(server)
    data = text_frame("hello") + binary_frame(b"\x00" * 1000)
    assert not wire.busy
    assert wire.write_nowait(data) is True
    assert not wire.has_tail and not wire.busy
    # Written synchronously: readable at once, before any checkpoint.
    assert pending_bytes(peer.socket) == data


async def test_partial_write_keeps_a_tail_that_the_next_locked_write_sends_first() -> None:
    server, peer = stream_pair(small=True)
    wire = WireStream(server)
    first = pattern(BIG, 1)
    assert wire.write_nowait(first) is True
    assert wire.has_tail and wire.busy  # the kernel did not take it all
    # While a tail waits, the fast path refuses and writes nothing.
    assert wire.write_nowait(b"OVERTAKE") is False
    received = bytearray()

    async def drain() -> None:
        received.extend(await read_exactly(peer, BIG + 4 + 6))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await wire.send_frames(b"NEXT")
            assert not wire.has_tail
            await wire.send_all(b"\x89\x04PING")  # the connection layer's own write
    assert bytes(received) == first + b"NEXT" + b"\x89\x04PING"


async def test_a_control_write_also_sends_the_tail_first() -> None:
    server, peer = stream_pair(small=True)
    wire = WireStream(server)
    first = pattern(BIG, 2)
    assert wire.write_nowait(first) and wire.has_tail
    received = bytearray()

    async def drain() -> None:
        received.extend(await read_exactly(peer, BIG + 6))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await wire.send_all(b"\x8a\x04PONG")
    assert bytes(received) == first + b"\x8a\x04PONG"


async def test_fast_path_waits_while_a_locked_write_is_in_flight() -> None:
    server, peer = stream_pair(small=True)
    wire = WireStream(server)
    big = pattern(BIG, 3)
    received = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wire.send_frames, big)
            await trio.testing.wait_all_tasks_blocked()
            # The writer is parked half-way through, holding the lock.
            assert wire.busy
            assert wire.write_nowait(b"OVERTAKE") is False
            received.extend(await read_exactly(peer, BIG))
    assert bytes(received) == big
    assert not wire.busy
    assert wire.write_nowait(b"after") is True
    assert await read_exactly(peer, 5) == b"after"


async def test_cancelling_a_write_midway_breaks_the_stream_for_good() -> None:
    server, peer = stream_pair(small=True)
    wire = WireStream(server)
    big = pattern(BIG, 4)
    with trio.move_on_after(0.2) as scope:
        await wire.send_frames(big)
    assert scope.cancelled_caught
    assert not wire.writable
    # Every later write is refused: nothing may follow half a frame.
    with pytest.raises(trio.BrokenResourceError):
        wire.write_nowait(b"data")
    with trio.fail_after(5):
        with pytest.raises(trio.BrokenResourceError):
            await wire.send_frames(b"data")
        with pytest.raises(trio.BrokenResourceError):
            await wire.send_all(b"\x88\x02\x03\xe8")  # not even a close frame
    await wire.aclose()
    got = bytearray()
    with trio.fail_after(5):
        while chunk := await peer.receive_some(65536):
            got += chunk
    # The peer got a strict prefix of the frame, then EOF -- nothing else.
    assert 0 < len(got) < BIG
    assert bytes(got) == big[: len(got)]


async def test_cancel_while_waiting_for_the_lock_writes_nothing_and_breaks_nothing() -> None:
    server, peer = stream_pair(small=True)
    wire = WireStream(server)
    big = pattern(BIG, 5)
    received = bytearray()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wire.send_frames, big)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.05) as scope:
                await wire.send_frames(b"never")
            assert scope.cancelled_caught
            received.extend(await read_exactly(peer, BIG))
    assert bytes(received) == big
    assert wire.writable
    await wire.send_frames(b"later")
    assert await read_exactly(peer, 5) == b"later"
    assert pending_bytes(peer.socket) == b""


async def test_a_failed_write_breaks_the_stream() -> None:
    server, peer = stream_pair()
    wire = WireStream(server)
    await peer.aclose()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # EPIPE, at the latest once the peer's close lands
            wire.write_nowait(b"x" * 1000)
            await trio.sleep(0.001)
    assert not wire.writable
    with pytest.raises(trio.BrokenResourceError):
        await wire.send_frames(b"more")


async def test_a_close_frame_through_send_all_stops_data_frames() -> None:
    server, peer = stream_pair()
    wire = WireStream(server)
    await wire.send_all(b"\x88\x02\x03\xea")  # close 1002, as after a protocol error
    assert not wire.writable
    with pytest.raises(trio.BrokenResourceError):
        wire.write_nowait(text_frame("late"))
    with pytest.raises(trio.BrokenResourceError):
        await wire.send_frames(text_frame("late"))
    assert pending_bytes(peer.socket) == b"\x88\x02\x03\xea"


async def test_the_http_handshake_response_is_not_mistaken_for_a_close() -> None:
    server, _peer = stream_pair()
    wire = WireStream(server)
    await wire.send_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert wire.writable
    assert wire.write_nowait(text_frame("welcome"))


# ------------------------------------ property: concurrent writers, any reader


writes = st.lists(st.integers(0, 12_000), min_size=1, max_size=25)


@settings(max_examples=40)
@given(
    hub=writes,
    control=st.lists(st.integers(0, 125), max_size=15),
    reads=st.lists(st.integers(1, 20_000), min_size=1, max_size=10),
    yields=st.lists(st.booleans(), min_size=1, max_size=10),
)
def test_concurrent_writes_arrive_whole_and_in_order(
    hub: list[int], control: list[int], reads: list[int], yields: list[bool]
) -> None:
    """Whatever the sizes and the reader's pace: a hub-like writer (fast path
    first, locked write when refused, as the Outlet does) and a
    connection-layer writer (control frames through ``send_all``) share
    one socket with tiny buffers; the reader sees every frame whole, each
    writer's frames in its own order, and nothing else."""

    async def scenario() -> None:
        server, peer = stream_pair(small=True)
        wire = WireStream(server)
        hub_frames = [text_frame(f"h{i}:" + "h" * n) for i, n in enumerate(hub)]
        control_frames = [
            bytes((0x8A, n)) + (f"c{j}:" + "c" * n)[:n].encode() for j, n in enumerate(control)
        ]
        total = sum(map(len, hub_frames)) + sum(map(len, control_frames))
        received = bytearray()

        async def hub_writer() -> None:
            for i, frame in enumerate(hub_frames):
                if not wire.write_nowait(frame):
                    await wire.send_frames(frame)
                if yields[i % len(yields)]:
                    await trio.lowlevel.checkpoint()
            await wire.send_frames(b"")  # whatever tail is left

        async def control_writer() -> None:
            for j, frame in enumerate(control_frames):
                await wire.send_all(frame)
                if yields[j % len(yields)]:
                    await trio.lowlevel.checkpoint()

        async def reader() -> None:
            k = 0
            while chunk := await peer.receive_some(reads[k % len(reads)]):
                received.extend(chunk)
                k += 1
                if yields[k % len(yields)]:
                    await trio.lowlevel.checkpoint()

        with trio.fail_after(5):  # each example takes milliseconds
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                async with trio.open_nursery() as writers:
                    writers.start_soon(control_writer)
                    writers.start_soon(hub_writer)
                assert not wire.busy and wire.writable
                await wire.aclose()  # the reader reads to EOF
        assert len(received) == total
        frames, rest = parse_frames(bytes(received))
        assert rest == b""
        assert [f for f in frames if f.opcode == OP_TEXT] == [
            parse_frames(f)[0][0] for f in hub_frames
        ]
        assert [f for f in frames if f.opcode == OP_PONG] == [
            parse_frames(f)[0][0] for f in control_frames
        ]
        await peer.aclose()

    trio.run(scenario)


# ------------------------------------------------- closed sockets, fd reuse


def _socket_on_fd(
    fd: int,
) -> tuple[list[socket.socket], socket.socket | None, socket.socket | None]:
    """Open socketpairs until one end lands on descriptor *fd* (POSIX hands out
    the lowest free number, so it is normally the first)."""
    opened: list[socket.socket] = []
    for _ in range(20):
        a, b = socket.socketpair()
        opened += [a, b]
        if a.fileno() == fd:
            return opened, a, b
        if b.fileno() == fd:
            return opened, b, a
    return opened, None, None


@pytest.mark.parametrize("how", ["wire.aclose", "transport.aclose", "socket.close"])
async def test_no_write_reaches_a_new_socket_that_reused_the_descriptor(
    how: str,
) -> None:
    server, peer = stream_pair()
    wire = WireStream(server)
    assert wire.write_nowait(b"before")
    fd = server.socket.fileno()
    if how == "wire.aclose":
        await wire.aclose()
    elif how == "transport.aclose":
        await server.aclose()  # closed under the WireStream, e.g. by the HTTP front
    else:
        server.socket.close()
    opened, reused, reused_peer = _socket_on_fd(fd)
    try:
        assert reused is not None, "the descriptor was not reused; cannot test"
        with pytest.raises(trio.BrokenResourceError):
            wire.write_nowait(b"AFTER-CLOSE")
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            await wire.send_frames(b"AFTER-CLOSE")
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            await wire.send_all(b"AFTER-CLOSE")
        reused_peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            reused_peer.recv(100)
        assert not wire.writable
    finally:
        for s in opened:
            s.close()
    assert await peer.receive_some(100) == b"before"


async def test_a_write_waiting_for_room_wakes_up_when_the_socket_is_closed() -> None:
    server, _peer = stream_pair(small=True)
    wire = WireStream(server)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def write() -> None:
                with pytest.raises((trio.ClosedResourceError, trio.BrokenResourceError)):
                    await wire.send_frames(pattern(BIG))

            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            await server.aclose()
    assert not wire.writable


# ----------------------------------------------- non-socket transports


async def test_memory_streams_take_the_queued_path() -> None:
    server, peer = trio.testing.memory_stream_pair()
    wire = WireStream(server)
    assert wire.write_nowait(b"data") is False
    assert not wire.busy  # nothing was written and nothing is pending
    await wire.send_frames(b"data")
    assert await peer.receive_some() == b"data"


async def test_tls_streams_take_the_queued_path() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    a, b = stream_pair()
    server = trio.SSLStream(a, server_ctx, server_side=True)
    client = trio.SSLStream(b, client_ctx, server_hostname="localhost")
    wire = WireStream(server)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
        # Never the raw socket under TLS: that would bypass the encryption.
        assert wire.write_nowait(text_frame("secret")) is False
        assert pending_bytes(a.socket) == b""
        await wire.send_frames(text_frame("secret"))
        assert await read_exactly(client, len(text_frame("secret"))) == text_frame("secret")


async def test_outlet_over_memory_streams_always_queues() -> None:
    server, _ = trio.testing.memory_stream_pair()
    outlet = Outlet(WireStream(server), 4, noop, HubCounters())
    assert outlet.push(text_frame("a"))
    assert outlet.push(text_frame("b") + text_frame("c"), 2)
    assert outlet.queued == 3
    assert not outlet.closed


# ------------------------------------------------------------- Outlet


async def test_outlet_writes_directly_when_nothing_is_queued() -> None:
    server, peer = stream_pair()
    outlet = Outlet(WireStream(server), 8, noop, HubCounters())
    frame = text_frame('{"type":"x"}')
    # No writer task exists at all: the bytes can only come from the push.
    assert outlet.push(frame)
    assert outlet.push(frame + frame, 2)
    assert outlet.queued == 0
    assert pending_bytes(peer.socket) == frame * 3


async def test_outlet_queue_bound_marks_a_slow_consumer_1013() -> None:
    server, peer = stream_pair(small=True)
    counters = HubCounters()
    outlet = Outlet(WireStream(server), 4, noop, counters)
    big = text_frame("x" * 60000)
    assert outlet.push(big)  # direct, partial: the rest is the tail
    assert outlet.stream.has_tail and outlet.queued == 0
    for _ in range(4):
        assert outlet.push(text_frame("queued"))
    assert outlet.queued == 4
    assert not outlet.push(text_frame("one too many"))
    assert outlet.closed and outlet.close_code == SLOW_CONSUMER
    assert counters.slow_consumers == 1
    # Once closed, nothing more is taken or written.
    assert not outlet.push(text_frame("late"))
    assert counters.slow_consumers == 1
    got = pending_bytes(peer.socket)
    assert got == big[: len(got)]


async def test_a_slow_consumer_gets_whole_frames_then_close_1013() -> None:
    """A client that stops reading overflows its queue and is closed with
    1013; when it reads again it finds whole frames, then the close frame,
    and nothing after it."""
    config = Config(port=0, queue_size=20, write_timeout=10)
    async with open_served_connection(config) as served:
        outlet, client = served.outlet, served.client
        pushed = 0
        with trio.fail_after(10):
            while outlet.push(text_frame(f"{pushed}:" + "s" * 500)):
                pushed += 1
                await trio.lowlevel.checkpoint()
        assert outlet.close_code == SLOW_CONSUMER
        assert pushed >= 20
        with trio.fail_after(10):
            await client.read_until_eof()
            await served.finished.wait()
        frames, rest = client.frames()
        close = assert_nothing_after_close(frames, rest)
        assert close is not None and close.close_code == SLOW_CONSUMER
        texts = [f.text for f in frames if f.opcode == OP_TEXT]
        assert texts == [f"{i}:" + "s" * 500 for i in range(len(texts))]
        assert served.server.stats().slow_consumer_drops == 1


async def test_a_batch_counts_each_of_its_frames_against_the_bound() -> None:
    server, _ = trio.testing.memory_stream_pair()
    outlet = Outlet(WireStream(server), 4, noop, HubCounters())
    assert outlet.push(text_frame("a") * 3, 3)
    assert not outlet.push(text_frame("b") * 2, 2)
    assert outlet.close_code == SLOW_CONSUMER


async def test_the_writer_finishes_a_partial_direct_write_by_itself() -> None:
    async with open_served_connection() as served:
        outlet = served.outlet
        payload = "y" * 200_000
        assert outlet.push(text_frame(payload))
        assert served.wire.has_tail  # the kernel took only part of it
        assert outlet.queued == 0
        # Nothing else is ever pushed: only the writer, woken by the push,
        # can write the tail.
        with trio.fail_after(10):
            frames = await served.client.read_frames(1, OP_TEXT)
        assert frames[0].text == payload
        assert not served.wire.busy
        _, rest = served.client.frames()
        assert rest == b""


async def test_direct_and_queued_frames_arrive_whole_and_in_order() -> None:
    async with open_served_connection(
        Config(port=0, queue_size=100_000, queue_bytes=1 << 30)
    ) as served:
        outlet, wire, client = served.outlet, served.wire, served.client
        count = 600
        seen = set()
        for i in range(count):
            body = f"{i:05d}:" + "z" * (i * 37 % 3000)
            if i % 7 == 3:  # a hub batch: two frames in one push
                outlet.push(text_frame(body) + text_frame(body + "!"), 2)
            else:
                outlet.push(text_frame(body))
            seen.add(("queued" if outlet.queued else "direct", wire.has_tail))
            if i % 5 == 0:
                await client.read_some(3000)  # a slow reader
            await trio.lowlevel.checkpoint()
        assert ("direct", False) in seen and ("direct", True) in seen
        assert any(mode == "queued" for mode, _ in seen)
        expected = []
        for i in range(count):
            body = f"{i:05d}:" + "z" * (i * 37 % 3000)
            expected.append(body)
            if i % 7 == 3:
                expected.append(body + "!")
        with trio.fail_after(20):
            frames = await client.read_frames(len(expected), OP_TEXT)
        assert [f.text for f in frames] == expected
        assert all(f.fin for f in frames)
        assert len(client.wsproto_frames()) == len(expected)


# --------------------------- interleaving with the connection layer's own writes


async def test_data_frames_never_interleave_with_pongs() -> None:
    """The hub pushes while the client floods pings: pongs (the connection layer's
    writes) and data frames (direct and queued) share one socket, whose
    buffers are tiny and usually full.  Every frame must arrive whole."""
    # A long write timeout: the client reads slowly, and the machine may be busy.
    config = Config(port=0, queue_size=100_000, queue_bytes=1 << 30, write_timeout=60)
    async with open_served_connection(config) as served:
        outlet, client = served.outlet, served.client
        count, pings = 1500, 100  # pings: within the ping allowance

        async def push() -> None:
            for i in range(count):
                outlet.push(text_frame(f"{i:05d}:" + "d" * (i * 53 % 2500)))
                if i % 3 == 0:
                    await trio.lowlevel.checkpoint()

        async def ping() -> None:
            for j in range(pings):
                await client.send(Ping(f"p{j}".encode()))
                await trio.lowlevel.checkpoint()

        async def read_slowly() -> None:
            while True:
                frames, _ = client.frames()
                texts = sum(f.opcode == OP_TEXT for f in frames)
                pongs = sum(f.opcode == OP_PONG for f in frames)
                if texts == count and pongs == pings:
                    return
                assert await client.read_some(2000)
                await trio.lowlevel.checkpoint()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(push)
                nursery.start_soon(ping)
                nursery.start_soon(read_slowly)
        frames, rest = client.frames()
        assert rest == b""
        assert all(f.fin for f in frames)
        texts = [f.text for f in frames if f.opcode == OP_TEXT]
        assert texts == [f"{i:05d}:" + "d" * (i * 53 % 2500) for i in range(count)]
        pongs = [f.payload for f in frames if f.opcode == OP_PONG]
        assert pongs == [f"p{j}".encode() for j in range(pings)]
        assert {f.opcode for f in frames} == {OP_TEXT, OP_PONG}
        parsed = client.wsproto_frames()
        assert len(parsed) == count + pings
        assert not served.finished.is_set()


async def test_echoes_and_pushes_interleave_whole() -> None:
    """The echo endpoint answers each client message from the reader task,
    through the same Outlet the hub pushes into, while pings come in too."""
    # A long write timeout: the client reads slowly, and the machine may be busy.
    config = Config(port=0, queue_size=100_000, queue_bytes=1 << 30, write_timeout=60)
    async with open_served_connection(config) as served:
        client = served.client
        count = 300

        def body(i: int) -> str:
            return f"m{i}:" + "q" * (i * 31 % 1500)

        async def send() -> None:
            for i in range(count):
                await client.send(Message(data=body(i)))
                served.outlet.push(text_frame(f"push{i}"))
                if i % 10 == 0:
                    await client.send(Ping(b"x"))

        async def read_slowly() -> None:
            while sum(f.opcode == OP_TEXT for f in client.frames()[0]) < 2 * count:
                assert await client.read_some(1500)
                await trio.lowlevel.checkpoint()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(read_slowly)
        frames, rest = client.frames()
        assert rest == b""
        texts = [f.text for f in frames if f.opcode == OP_TEXT]
        assert [t for t in texts if t.startswith("m")] == [body(i) for i in range(count)]
        assert [t for t in texts if t.startswith("push")] == [f"push{i}" for i in range(count)]
        assert all(f.fin for f in frames)
        assert len(client.wsproto_frames()) == len(frames)


# -------------------------------------------------- close ordering


async def test_no_data_frame_after_the_clients_close_under_backlog() -> None:
    """The client closes while the server has a backlog and the hub keeps
    pushing: the close reply waits its turn on the lock, and after it no data
    frame goes out (the outlet is closed when the close frame is read)."""
    async with open_served_connection(
        Config(port=0, queue_size=100_000, queue_bytes=1 << 30)
    ) as served:
        outlet, client = served.outlet, served.client
        for i in range(50):
            outlet.push(text_frame(f"{i}:" + "b" * 1000))
        await trio.testing.wait_all_tasks_blocked()
        assert served.wire.busy  # a backlog: the writer is parked mid-write
        await client.send(CloseConnection(1000, "bye"))

        async def keep_pushing() -> None:
            i = 0
            while not served.finished.is_set():
                outlet.push(text_frame(f"late{i}"))
                i += 1
                await trio.lowlevel.checkpoint()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_pushing)
                await client.read_until_eof()
                await served.finished.wait()
        frames, rest = client.frames()
        close = assert_nothing_after_close(frames, rest)
        assert close is not None and close.close_code == 1000
        assert all(f.opcode in (OP_TEXT, OP_CLOSE) for f in frames)
        client.wsproto_frames()  # valid framing throughout
        first = served.conn.ws.first_close
        assert first is not None and first.by_client and first.code == 1000


async def test_a_protocol_error_ends_the_connection_with_whole_frames_only() -> None:
    """An invalid frame from the client fails the connection with a close
    frame (1002) after the write in flight: the frames before are whole,
    nothing follows, and later pushes are refused."""
    async with open_served_connection(
        Config(port=0, queue_size=100_000, queue_bytes=1 << 30)
    ) as served:
        outlet, client = served.outlet, served.client
        for i in range(50):
            outlet.push(text_frame(f"{i}:" + "e" * 1000))
        await trio.testing.wait_all_tasks_blocked()
        # A masked frame with reserved opcode 0x3: a protocol error.
        await client.send_raw(b"\x83\x80\x00\x00\x00\x00")

        async def keep_pushing() -> None:
            i = 0
            while not served.finished.is_set():
                outlet.push(text_frame(f"late{i}"))
                i += 1
                await trio.lowlevel.checkpoint()

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_pushing)
                await client.read_until_eof()
                await served.finished.wait()
        frames, rest = client.frames()
        close = assert_nothing_after_close(frames, rest)
        assert close is not None and close.close_code == 1002
        first = served.conn.ws.first_close
        assert first is not None and not first.by_client and first.code == 1002
        texts = [f.text for f in frames if f.opcode == OP_TEXT]
        # In push order, none missing: the 50, then however many late ones
        # went out before the connection was dropped.
        expected = [f"{i}:" + "e" * 1000 for i in range(50)]
        expected += [f"late{i}" for i in range(len(texts) + 1)]
        assert texts == expected[: len(texts)]
        if rest:  # aborted half-way through the next frame: only its prefix
            assert rest == text_frame(expected[len(texts)])[: len(rest)]
        assert not outlet.push(text_frame("after the end"))


async def test_server_close_drops_queued_frames_and_sends_nothing_after() -> None:
    async with open_served_connection(
        Config(port=0, queue_size=100_000, queue_bytes=1 << 30)
    ) as served:
        outlet, client = served.outlet, served.client
        for i in range(30):
            outlet.push(text_frame(f"{i}:" + "c" * 1000))
        served.conn.close(1000, "done")
        assert not outlet.push(text_frame("after close"))

        async def read_and_answer_close() -> None:
            await client.read_until_eof()

        with trio.fail_after(10):
            await read_and_answer_close()
            await served.finished.wait()
        frames, rest = client.frames()
        close = assert_nothing_after_close(frames, rest)
        if close is None:
            # Aborted mid-frame (the writer was cancelled half-way): then
            # nothing at all follows the truncated frame.
            assert all(f.opcode == OP_TEXT for f in frames)
        else:
            assert rest == b"" and close.close_code == 1000
        assert all(b"after close" not in f.payload for f in frames)


async def test_a_write_timeout_aborts_without_a_close_frame_after_half_a_frame() -> None:
    config = Config(port=0, write_timeout=0.3, queue_size=100_000)
    async with open_served_connection(config) as served:
        outlet, client = served.outlet, served.client
        outlet.push(text_frame("w" * 100_000))  # direct, partial: the tail waits
        outlet.push(text_frame("second"))  # queued behind it
        with trio.fail_after(10):
            await served.finished.wait()  # the writer timed out: aborted
        assert outlet.closed and outlet.close_code is None
        assert "write not finished" in outlet.close_reason
        with trio.fail_after(10):
            await client.read_until_eof()
        frames, rest = client.frames()
        # Exactly a prefix of the first frame, then EOF: no close frame (or
        # anything else) was written after half a frame.
        assert frames == [] and rest
        assert rest == text_frame("w" * 100_000)[: len(rest)]


# ------------------------------------------------------- the test setup


def test_unix_socketpairs_have_small_buffers_after_shrinking() -> None:
    """The tests above rely on tiny buffers: check the kernel honours them."""
    a, b = socket.socketpair()
    try:
        shrink_buffers(a)
        shrink_buffers(b)
        a.setblocking(False)
        sent = 0
        with pytest.raises(BlockingIOError):
            for _ in range(1000):
                sent += a.send(b"x" * 65536)
        assert sent < BIG
    finally:
        a.close()
        b.close()
