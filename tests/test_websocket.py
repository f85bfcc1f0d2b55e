"""The assumptions trio_chat makes about trio-websocket's internals.

trio_chat replaces trio-websocket's internal message channel with a Dispatch
that calls a handler inside the reader task (see trio_chat/_websocket.py).
These tests pin the version and check, through real WebSocket traffic over
in-memory streams, every behaviour that relies on: messages reach the
handler whole and in order, nothing is handled before ``start``, a close by
either side (or a 1009) is reported through ``on_close``, and ``get_message``
reports the connection closed.
"""

from importlib.metadata import version

import pytest
import trio
import trio.testing
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketConnection

from trio_chat._websocket import (
    Dispatch,
    get_request,
    new_server_websocket,
    reader_task,
    release_handshake,
)

PINNED = "0.12.2"


def test_pinned_version_and_internal_names():
    assert version("trio-websocket") == PINNED
    for name in ("_send_channel", "_recv_channel"):
        ws, dispatch = new_server_websocket(
            trio.testing.memory_stream_pair()[0], max_message_size=100
        )
        assert getattr(ws, name) is dispatch
    assert callable(WebSocketConnection._reader_task)
    assert callable(WebSocketConnection._get_request)


async def _pair(nursery, *, max_message_size=65536):
    """A server WebSocket (with its Dispatch) and a connected client."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    ws, dispatch = new_server_websocket(server_stream, max_message_size=max_message_size)
    nursery.start_soon(reader_task, ws)

    async def accept():
        request = await get_request(ws)
        await request.accept()

    nursery.start_soon(accept)
    client = await trio_websocket.wrap_client_stream(nursery, client_stream, "test", "/ws")
    return ws, dispatch, client


async def test_messages_reach_the_handler_whole_and_in_order_only_after_start():
    got = []

    async def handler(message):
        got.append(message)

    async with trio.open_nursery() as nursery:
        ws, dispatch, client = await _pair(nursery)
        await client.send_message("one")
        await client.send_message(b"two")
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # not started: the reader waits
        dispatch.start(handler)
        await client.send_message("three " * 1000)
        with trio.fail_after(5):
            while len(got) < 3:
                await trio.sleep(0.01)
        assert got == ["one", b"two", "three " * 1000]
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await ws.get_message()
        nursery.cancel_scope.cancel()


async def test_a_close_by_the_client_is_reported():
    closed = []
    async with trio.open_nursery() as nursery:
        ws, dispatch, client = await _pair(nursery)
        dispatch.on_close = lambda: closed.append(ws.closed)
        dispatch.start(lambda message: trio.lowlevel.checkpoint())
        with trio.fail_after(5):
            await client.aclose(code=4001, reason="bye")
            while not closed:
                await trio.sleep(0.01)
        assert closed[0].code == 4001
        assert dispatch.stopped
        nursery.cancel_scope.cancel()


async def test_a_message_over_the_limit_closes_1009_and_is_reported():
    closed = []
    got = []

    async def handler(message):
        got.append(message)

    async with trio.open_nursery() as nursery:
        ws, dispatch, client = await _pair(nursery, max_message_size=100)
        dispatch.on_close = lambda: closed.append(ws.closed)
        dispatch.start(handler)
        await client.send_message("x" * 101)
        with trio.fail_after(5):
            while not closed:
                await trio.sleep(0.01)
        assert closed[0].code == 1009
        assert got == []
        nursery.cancel_scope.cancel()


async def test_handler_bugs_do_not_kill_the_reader(caplog):
    got = []

    async def handler(message):
        if message == "boom":
            raise RuntimeError("bug")
        got.append(message)

    async with trio.open_nursery() as nursery:
        ws, dispatch, client = await _pair(nursery)
        dispatch.start(handler)
        await client.send_message("boom")
        await client.send_message("after")
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.01)
        assert got == ["after"]
        assert "unexpected error handling a message" in caplog.text
        nursery.cancel_scope.cancel()


async def test_after_stop_messages_are_dropped_but_the_close_handshake_completes():
    got = []

    async def handler(message):
        got.append(message)

    async with trio.open_nursery() as nursery:
        ws, dispatch, client = await _pair(nursery)
        dispatch.start(handler)
        dispatch.stop()
        await client.send_message("ignored")
        with trio.fail_after(5):
            await ws.aclose(1001, "going away")
        assert got == []
        assert client.closed.code == 1001
        nursery.cancel_scope.cancel()


def test_dispatch_is_small():
    # The point of Dispatch is to be smaller than a memory channel pair.
    assert not hasattr(Dispatch(), "__dict__")


async def test_the_connection_works_after_its_handshake_state_is_released():
    got = []

    async def handler(message):
        got.append(message)

    async with trio.open_nursery() as nursery:
        ws, dispatch, client = await _pair(nursery)
        with trio.fail_after(5):
            while ws._wsproto.connection is None:
                await trio.sleep(0.01)
        handshake = ws._wsproto.handshake
        release_handshake(ws)
        assert ws._wsproto.handshake is not handshake
        dispatch.start(handler)
        with trio.fail_after(5):
            await client.send_message("still here")
            await ws.ping(b"p1")  # the pong comes back through the reader
            await client.ping(b"p2")  # and the server answers pings
            while not got:
                await trio.sleep(0.01)
            await ws.aclose(1000)
        assert got == ["still here"]
        assert client.closed.code == 1000
        nursery.cancel_scope.cancel()
