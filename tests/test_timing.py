"""Heartbeat and deadlines, in virtual time.

The server runs over in-memory streams (``trio_chat.testing`` memory helpers
and :meth:`ChatServer.handle_stream`), so pytest-trio's ``autojump_clock``
can skip every wait: a 60-second pong timeout takes no real time, and the
moment each connection ends is known exactly.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from _raw_client import RawClient, collect_logs
from support import bound_all
from wsproto.events import CloseConnection, Ping, TextMessage

from trio_chat import ChatServer, Config
from trio_chat._connection import CLOSE_TIMEOUT
from trio_chat.testing import open_memory_client, open_memory_server

UPGRADE = (
    b"GET /ws?user=alice HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class Served:
    """One stream handed to ``server.handle_stream``; records when it ended."""

    def __init__(self) -> None:
        self.ended_at: float | None = None
        self.done = trio.Event()

    async def run(self, server: ChatServer, stream: trio.abc.Stream) -> None:
        try:
            await server.handle_stream(stream)
        finally:
            self.ended_at = trio.current_time()
            self.done.set()


def serve(nursery: trio.Nursery, server: ChatServer, *, lockstep: bool = False):
    """Connect a client stream to *server*; return it and its :class:`Served`."""
    if lockstep:
        client, server_end = trio.testing.lockstep_stream_pair()
    else:
        client, server_end = trio.testing.memory_stream_pair()
    served = Served()
    nursery.start_soon(served.run, server, server_end)
    return client, served


@pytest.fixture
def disconnects():
    """The server's disconnect log lines, as they happen."""
    with collect_logs("disconnect ") as lines:
        yield lines


# ---------------------------------------------------------------- heartbeat


async def test_client_that_never_answers_pings_is_aborted(autojump_clock, disconnects):
    config = Config(ping_interval=5, pong_timeout=7)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server)
        client = RawClient(stream)
        await client.handshake(target="/ws?user=mute")
        start = trio.current_time()
        # Read everything (never sending a pong) until the server hangs up.
        events = await client.drain()
        assert trio.current_time() - start == pytest.approx(12, abs=1e-6)
        await served.done.wait()
        assert served.ended_at - start == pytest.approx(12, abs=1e-6)

        assert isinstance(events[0], TextMessage) and '"welcome"' in events[0].data
        assert sum(isinstance(e, Ping) for e in events) == 1
        # Aborted: no close frame, the stream just ends.
        assert not any(isinstance(e, CloseConnection) for e in events)
        assert server.stats().connections == 0
        assert len(disconnects) == 1
        assert "user=mute" in disconnects[0]
        assert "code=abort" in disconnects[0]
        assert "reason=no pong within 7 s" in disconnects[0]


@pytest.mark.parametrize("delay", [0.0, 6.9])
async def test_pongs_within_the_timeout_keep_the_connection(autojump_clock, delay):
    config = Config(ping_interval=5, pong_timeout=7)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server)
        client = RawClient(stream)
        await client.handshake(target="/ws?user=slowpong")
        start = trio.current_time()
        pings = 0
        with trio.move_on_after(99):
            while (event := await client.next_event()) is not None:
                if isinstance(event, Ping):
                    pings += 1
                    await trio.sleep(delay)
                    await stream.send_all(client.ws.send(event.response()))
        # Still connected after 99 virtual seconds, pinged all along: the
        # first ping after 5 s, each next one 5 s after the previous pong.
        assert not served.done.is_set()
        assert not client.eof
        assert pings == (99 - 5) // (5 + delay) + 1
        assert trio.current_time() - start == pytest.approx(99)
        await client.send_frame("join", {"room": "r"})
        assert (await client.next_frame())["type"] == "joined"
        assert server.stats().connections == 1
        await stream.aclose()


async def test_late_pong_is_too_late(autojump_clock, disconnects):
    config = Config(ping_interval=5, pong_timeout=7)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server)
        client = RawClient(stream)
        await client.handshake(target="/ws?user=late")
        start = trio.current_time()
        while not isinstance(event := await client.next_event(), Ping):
            pass
        await trio.sleep(7.5)
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(client.ws.send(event.response()))
        assert served.ended_at - start == pytest.approx(12, abs=1e-6)
        assert "reason=no pong within 7 s" in disconnects[0]


async def test_websocket_client_answers_pings_and_stays(autojump_clock):
    config = Config(ping_interval=5, pong_timeout=7)
    async with open_memory_server(config) as server:
        async with open_memory_client(server, user="alice") as alice:
            await alice.join("r")
            await trio.sleep(1000)
            assert server.stats().connections == 1
            assert (await alice.chat("r", "still here"))["type"] == "ack"


# ---------------------------------------------------------------- write timeout


async def test_stalled_writer_is_aborted_after_write_timeout(autojump_clock, disconnects):
    config = Config(write_timeout=3, ping_interval=1000, pong_timeout=1000)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server, lockstep=True)
        client = RawClient(stream)
        await client.handshake(target="/ws?user=stalled")
        assert (await client.next_frame())["type"] == "welcome"
        await client.send_frame("join", {"room": "r"})
        assert (await client.next_frame())["type"] == "joined"

        # The client stops reading; the server has something to write.
        await trio.sleep(50)
        assert not served.done.is_set()  # idle is fine: only writes have a deadline
        start = trio.current_time()
        await server.publish("r", "are you there?")
        await served.done.wait()
        assert served.ended_at - start == pytest.approx(3, abs=1e-6)
        assert "user=stalled" in disconnects[0]
        assert "code=abort" in disconnects[0]
        assert "reason=write not finished within 3 s" in disconnects[0]
        assert server.stats().connections == 0
        # The server hung up.
        with pytest.raises(trio.BrokenResourceError):
            await client.send_frame("chat", {"room": "r", "content": "hello?"})


async def test_a_reading_client_is_never_hit_by_the_write_timeout(autojump_clock):
    config = Config(write_timeout=3, ping_interval=1000, pong_timeout=1000)
    async with open_memory_server(config) as server:
        async with open_memory_client(server, user="alice", lockstep=True) as alice:
            await alice.join("r")
            for i in range(5):
                await server.publish("r", f"m{i}")
                await trio.sleep(10)  # slow, but reads every frame in the end
                frame = await alice.receive()
                assert frame["payload"]["content"] == f"m{i}"
            assert server.stats().connections == 1


# ---------------------------------------------------------------- handshake deadlines


async def test_half_done_handshake_is_closed_after_handshake_timeout(autojump_clock):
    config = Config(handshake_timeout=4)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server, lockstep=True)
        start = trio.current_time()
        # The upgrade request is sent, but the 101 response is never read.
        await stream.send_all(UPGRADE)
        await served.done.wait()
        assert served.ended_at - start == pytest.approx(4, abs=1e-6)
        assert server.stats().connections == 0
        assert server.stats().handshakes == 0  # counted out again
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")


async def test_request_head_never_completed_is_closed_after_handshake_timeout(autojump_clock):
    config = Config(handshake_timeout=4)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server)
        start = trio.current_time()
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n")
        # Slowloris: one more header line every second, never the blank line.
        with pytest.raises(trio.BrokenResourceError):
            for i in range(100):
                await trio.sleep(1)
                await stream.send_all(b"X-Drip-%d: y\r\n" % i)
        await served.done.wait()
        assert served.ended_at - start == pytest.approx(4, abs=1e-6)
        assert await stream.receive_some() == b""  # no answer, just closed


async def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(autojump_clock):
    config = Config(handshake_timeout=4, http_idle_timeout=3)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stream, _served = serve(nursery, server)
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += await stream.receive_some()
        answered = trio.current_time()
        assert await stream.receive_some() == b""
        assert trio.current_time() - answered == pytest.approx(3, abs=1e-6)


async def test_completed_handshake_is_not_cut_by_the_handshake_deadline(autojump_clock):
    config = Config(handshake_timeout=4, ping_interval=1000, pong_timeout=1000)
    async with open_memory_server(config) as server:
        async with open_memory_client(server, user="alice") as alice:
            await trio.sleep(100)
            assert (await alice.join("r"))["type"] == "joined"


# ---------------------------------------------------------------- closing


async def test_close_not_answered_is_bounded(autojump_clock, disconnects):
    async with open_memory_server(Config()) as server, trio.open_nursery() as nursery:
        stream, served = serve(nursery, server)
        client = RawClient(stream)
        await client.handshake(target="/ws?user=junk")
        assert (await client.next_frame())["type"] == "welcome"
        for _ in range(19):
            await client.send_text("junk")
            assert (await client.next_frame())["payload"]["code"] == 400
        await client.send_text("junk")
        start = trio.current_time()
        events = await client.drain()  # never answers the close frame
        closes = [e for e in events if isinstance(e, CloseConnection)]
        assert [c.code for c in closes] == [1008]
        await served.done.wait()
        assert served.ended_at - start == pytest.approx(CLOSE_TIMEOUT, abs=1e-6)
        assert "code=1008" in disconnects[0]


bound_all(globals(), 10_000)
