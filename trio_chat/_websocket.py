"""trio-websocket connections whose reader task delivers messages itself.

A :class:`trio_websocket.WebSocketConnection` runs a reader task that parses
frames with wsproto and hands every complete message through an internal
memory channel to whichever task calls ``get_message()``.  That hand-off is
two task switches per inbound message (about 20-25 µs) and a channel per
connection (about 2 KB).  trio_chat skips it: :class:`Dispatch` stands in for
that channel and calls the endpoint's handler directly, inside the reader
task.  So each connection's *reader task* is trio-websocket's own.

This uses names that are not trio-websocket's public API: the
``_send_channel``/``_recv_channel`` attributes (replaced here), the
``_reader_task``/``_get_request`` methods (what its public
``wrap_server_stream`` calls) and ``_wsproto`` (to let the finished opening
handshake's parser go, :func:`release_handshake`).  The version is pinned in
``pyproject.toml`` and ``tests/test_websocket.py`` checks every assumption
made here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import WebSocketConnection
from wsproto import ConnectionType, WSConnection

__all__ = ["Dispatch", "new_server_websocket", "release_handshake"]

log = logging.getLogger("trio_chat.connection")

Handler = Callable[[str | bytes], Awaitable[None]]


class Dispatch:
    """Stands in for trio-websocket's message channel (both ends).

    Until :meth:`start` gives it a handler, the reader waits (so nothing is
    handled before the connection is set up, e.g. before its ``welcome``);
    after :meth:`stop`, messages are dropped (a draining connection reads
    only to complete its closing handshake).
    """

    __slots__ = ("_ready", "counters", "handler", "on_close", "stopped")

    def __init__(self) -> None:
        self.handler: Handler | None = None
        self._ready: trio.Event | None = trio.Event()
        self.stopped = False
        #: Anything with a ``frames_received`` count to bump (the hub's counters).
        self.counters: Any = None
        #: Called when trio-websocket closes its message channel: the
        #: WebSocket is closed or closing (by either side, or for 1009).
        self.on_close: Callable[[], None] | None = None

    def start(self, handler: Handler) -> None:
        self.handler = handler
        self._wake()

    def stop(self) -> None:
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        if self._ready is not None:
            self._ready.set()
            self._ready = None

    # The channel protocol trio-websocket uses ------------------------------

    async def send(self, message: str | bytes) -> None:
        """Called by the reader task with each complete message."""
        if self._ready is not None:
            await self._ready.wait()
        if self.stopped:
            return
        if self.counters is not None:
            self.counters.frames_received += 1
        assert self.handler is not None
        try:
            await self.handler(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise  # trio-websocket's reader expects these at shutdown
        except Exception:
            # Handlers answer their own faults (error 500); this is the last
            # line that keeps one connection's bug from reaching the server.
            log.exception("unexpected error handling a message")

    async def receive(self) -> str | bytes:
        """``get_message()`` is not used on these connections."""
        raise trio.EndOfChannel

    async def aclose(self) -> None:
        self.stop()
        if self.on_close is not None:
            self.on_close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Dispatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def new_server_websocket(
    stream: trio.abc.Stream, *, max_message_size: int, receive_buffer_size: int = 16384
) -> tuple[WebSocketConnection, Dispatch]:
    """A server-side connection on *stream* whose messages go to a Dispatch.

    Start its reader with ``nursery.start_soon(ws._reader_task)`` (see
    :func:`reader_task`), then ``await ws._get_request()`` and accept.
    """
    ws = WebSocketConnection(
        stream,
        WSConnection(ConnectionType.SERVER),
        message_queue_size=0,
        max_message_size=max_message_size,
        receive_buffer_size=receive_buffer_size,
    )
    dispatch = Dispatch()
    ws._send_channel = dispatch  # type: ignore[assignment]
    ws._recv_channel = dispatch  # type: ignore[assignment]
    return ws, dispatch


class _FinishedHandshake:
    """Stands in for wsproto's opening-handshake parser once it is done.

    After the handshake, wsproto's ``WSConnection`` only asks its
    ``handshake`` for leftover events, and there are none; the real object
    would keep its HTTP parser, request and buffers for the connection's life.
    """

    __slots__ = ()

    def events(self) -> tuple[()]:
        return ()


_FINISHED = _FinishedHandshake()


def release_handshake(ws: WebSocketConnection) -> None:
    """Free the opening handshake's state once the WebSocket is open."""
    wsproto = ws._wsproto
    if wsproto.connection is not None:
        wsproto.handshake = _FINISHED  # type: ignore[assignment]


def reader_task(ws: WebSocketConnection) -> Awaitable[None]:
    """*ws*'s reader: the handshake, then every frame until the end.

    Returns the coroutine itself (no wrapper frame kept for the connection's
    life).
    """
    return ws._reader_task()


async def get_request(ws: WebSocketConnection):  # -> trio_websocket.WebSocketRequest
    """Wait for the client's opening handshake request."""
    return await ws._get_request()
