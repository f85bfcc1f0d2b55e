"""Graceful shutdown (PROTOCOL §7): flush, close 1001, bounded by the grace.

Real sockets where what matters is what a client receives; in-memory streams
and trio's ``autojump_clock`` where what matters is when the server returns.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from _raw_client import RawClient, collect_logs, open_small_socket
from support import bound_all
from trio_websocket import ConnectionClosed, ConnectionRejected
from wsproto.events import CloseConnection, RejectConnection, Request

from trio_chat import ChatServer, Config
from trio_chat._connection import CLOSE_TIMEOUT
from trio_chat.testing import (
    open_memory_client,
    open_memory_server,
    open_memory_stream,
    open_test_client,
    open_test_server,
)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def close_code(ws) -> int:
    """Read until the server closes; return its close code."""
    with trio.fail_after(5):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# ---------------------------------------------------------------- over TCP


async def test_queued_frames_arrive_before_the_1001_close():
    config = Config(rate_messages=100_000, shutdown_grace=5)
    with trio.fail_after(20):
        async with open_test_server(config) as server, trio.open_nursery() as nursery:
            async with open_test_client(server, user="sender") as sender:
                await sender.join("r")
                # A receiver whose socket is full: what the server has for it
                # waits in its queue.
                receiver = RawClient(await open_small_socket(server.port))
                await receiver.handshake(target="/ws?user=receiver")
                assert (await receiver.next_frame())["type"] == "welcome"
                await receiver.send_frame("join", {"room": "r"})
                assert (await receiver.next_frame())["type"] == "joined"
                acked = []
                while server.connections("receiver")[0].queued_frames < 10:
                    assert len(acked) < 200
                    ack = await sender.chat("r", f"{len(acked)} " + "x" * 2000)
                    assert ack["type"] == "ack"
                    acked.append(ack["payload"]["id"])

                nursery.start_soon(server.shutdown)
                await wait_until(lambda: server.draining)
                # The receiver reads again: every acked message, then 1001.
                events = await receiver.until_close()
                assert events[-1].code == 1001
                text = "".join(e.data for e in events[:-1])
                frames = [json.loads(t) for t in text.replace("}}{", "}}\n{").splitlines()]
                assert [f["payload"]["id"] for f in frames] == acked
                assert await close_code(sender.ws) == 1001
        assert server.stats().connections == 0


async def test_serve_returns_after_shutdown_and_every_client_gets_1001():
    server = ChatServer(Config(port=0, host="127.0.0.1"))
    with collect_logs("disconnect ") as disconnects, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            async with trio.open_nursery() as clients:
                codes = []

                async def client(i: int) -> None:
                    async with open_test_client(server, user=f"u{i}") as c:
                        await c.join("r")
                        ready.append(i)
                        codes.append(await close_code(c.ws))

                ready: list[int] = []
                for i in range(20):
                    clients.start_soon(client, i)
                await wait_until(lambda: len(ready) == 20)
                await server.shutdown()
                await server.shutdown()  # idempotent
            # serve() returned by itself: this nursery exits without a cancel.
        assert codes == [1001] * 20
        assert server.stats().connections == 0
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
    assert len(disconnects) == 20
    assert all("code=1001" in d and "reason=server shutting down" in d for d in disconnects)


async def test_during_the_drain_new_connections_are_refused():
    config = Config(shutdown_grace=3)
    with trio.fail_after(20):
        async with open_test_server(config) as server:
            # A client that has not answered the close yet keeps the drain going.
            stubborn = RawClient(await open_small_socket(server.port))
            await stubborn.handshake(target="/ws?user=stubborn")
            await wait_until(lambda: server.stats().connections == 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.shutdown)
                await wait_until(lambda: server.draining)

                # A new WebSocket: refused, by the closed port or with HTTP 503.
                try:
                    async with open_test_client(server, user="late"):
                        raise AssertionError("connected during the drain")
                except ConnectionRejected as exc:
                    assert exc.status_code == 503
                except OSError:
                    pass
                # /healthz, if the port still answers: draining.
                try:
                    status, body = await http_get(server.port, "/healthz")
                except OSError:
                    pass
                else:
                    assert status == 503
                    assert json.loads(body)["status"] == "draining"

                events = await stubborn.until_close()
                assert events[-1].code == 1001
            # shutdown() has returned; the port is closed.
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", server.port)


# ---------------------------------------------------------------- in virtual time


@pytest.mark.parametrize("grace", [1.0, 10.0])
async def test_shutdown_is_bounded_when_a_client_never_answers_the_close(autojump_clock, grace):
    config = Config(shutdown_grace=grace, ping_interval=1000, pong_timeout=1000)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        client = RawClient(open_memory_stream(server))
        await client.handshake(target="/ws?user=mute")
        assert (await client.next_frame())["type"] == "welcome"
        events: list = []

        async def read() -> None:
            events.extend(await client.drain())

        nursery.start_soon(read)
        start = trio.current_time()
        await server.shutdown()
        # Whichever comes first: the grace, or the close handshake's own deadline.
        assert trio.current_time() - start == pytest.approx(min(grace, CLOSE_TIMEOUT), abs=1e-6)
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1001]


async def test_shutdown_cuts_a_stalled_flush_at_the_grace(autojump_clock):
    config = Config(shutdown_grace=3, write_timeout=100, ping_interval=1000, pong_timeout=1000)
    async with open_memory_server(config) as server:
        stream = open_memory_stream(server, lockstep=True)
        client = RawClient(stream)
        await client.handshake(target="/ws?user=stalled")
        assert (await client.next_frame())["type"] == "welcome"
        await client.send_frame("join", {"room": "r"})
        assert (await client.next_frame())["type"] == "joined"
        for i in range(5):
            await server.publish("r", f"m{i}")  # never read: the writer waits
        start = trio.current_time()
        await server.shutdown()
        assert trio.current_time() - start == pytest.approx(3, abs=1e-6)
        assert server.stats().connections == 0


async def test_shutdown_does_not_wait_for_idle_or_unfinished_requests(autojump_clock):
    config = Config(handshake_timeout=30, shutdown_grace=10)
    async with open_memory_server(config) as server:
        idle = open_memory_stream(server)  # connected, nothing sent
        partial = open_memory_stream(server)
        await partial.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        keepalive = open_memory_stream(server)
        await keepalive.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await keepalive.receive_some()).startswith(b"HTTP/1.1 200 ")
        start = trio.current_time()
        await server.shutdown()
        assert trio.current_time() - start == pytest.approx(0, abs=1e-6)
        for stream in (idle, partial, keepalive):
            with trio.fail_after(1):
                while await stream.receive_some():
                    pass


async def test_drain_over_memory_streams_with_clients_that_answer(autojump_clock):
    async with open_memory_server(Config(shutdown_grace=5)) as server:
        async with (
            open_memory_client(server, user="a") as a,
            open_memory_client(server, user="b") as b,
        ):
            await a.join("r")
            await b.join("r")
            await a.expect("system")
            acks = [(await b.chat("r", f"m{i}"))["payload"]["id"] for i in range(5)]
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.shutdown)
                got = [(await a.receive())["payload"]["id"] for _ in acks]
                assert got == acks
                assert await close_code(a.ws) == 1001
                assert await close_code(b.ws) == 1001
            # Clients that answer the close: no waiting at all.
            assert trio.current_time() - start == pytest.approx(0, abs=1e-6)
        # A stream offered after the server stopped is refused outright.
        with pytest.raises(RuntimeError):
            open_memory_stream(server)


async def test_upgrade_during_the_drain_is_503_and_healthz_says_draining(autojump_clock):
    config = Config(shutdown_grace=5, ping_interval=1000, pong_timeout=1000)
    async with open_memory_server(config) as server, trio.open_nursery() as nursery:
        stubborn = RawClient(open_memory_stream(server))
        await stubborn.handshake(target="/ws?user=stubborn")
        nursery.start_soon(server.shutdown)
        await trio.sleep(0.5)
        assert server.draining

        late = RawClient(open_memory_stream(server))
        await late.stream.send_all(late.ws.send(Request(host="x", target="/ws?user=late")))
        event = await late.next_event()
        assert isinstance(event, RejectConnection)
        assert event.status_code == 503

        probe = open_memory_stream(server)
        await probe.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := await probe.receive_some():
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert json.loads(body)["status"] == "draining"


bound_all(globals(), 30)
