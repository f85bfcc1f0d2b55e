"""A hand-driven WebSocket client (wsproto) for tests of misbehaving peers.

Unlike trio-websocket's client it does nothing by itself: it never answers a
ping, never answers a close, and reads only when asked.  That is what the
heartbeat, write-timeout and shutdown tests need.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import Iterator
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)


class RawClient:
    """A WebSocket client over any trio stream, driven step by step."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.eof = False
        self._text: list[str] = []

    async def handshake(
        self, target: str = "/ws", host: str = "localhost", subprotocols: list[str] | None = None
    ) -> AcceptConnection:
        """Send the upgrade request and wait for the server's answer."""
        await self.stream.send_all(
            self.ws.send(Request(host=host, target=target, subprotocols=subprotocols or []))
        )
        event = await self.next_event()
        if not isinstance(event, AcceptConnection):
            raise AssertionError(f"handshake not accepted: {event!r}")
        return event

    async def next_event(self) -> Event | None:
        """The next WebSocket event, or None once the server closed the stream."""
        while not self.events:
            if self.eof:
                return None
            data = await self.stream.receive_some(65536)
            if not data:
                self.eof = True
                return None
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    async def next_frame(self) -> dict[str, Any]:
        """The next whole text message, parsed; pings and pongs are skipped."""
        while True:
            event = await self.next_event()
            if event is None or isinstance(event, (CloseConnection, RejectConnection)):
                raise AssertionError(f"connection ended: {event!r}")
            if isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    return json.loads(text)

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def send_frame(self, type: str, payload: dict[str, Any], ref: str | None = None) -> None:
        frame: dict[str, Any] = {"type": type, "payload": payload}
        if ref is not None:
            frame["ref"] = ref
        await self.send_text(json.dumps(frame))

    async def until_close(self) -> list[Event]:
        """Read up to the server's close frame (the last event), and answer it."""
        events = []
        while True:
            event = await self.next_event()
            if event is None:
                raise AssertionError(f"stream ended without a close frame after {events!r}")
            events.append(event)
            if isinstance(event, CloseConnection):
                await self.stream.send_all(self.ws.send(event.response()))
                return events

    async def drain(self) -> list[Event]:
        """Read until the server closes the stream; return every event."""
        events = []
        while (event := await self.next_event()) is not None:
            events.append(event)
        return events


async def open_small_socket(port: int, rcvbuf: int = 4096) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:*port* with a small receive buffer.

    Set before connecting, so the advertised window is small too: a client
    that stops reading stalls the server's writes after a few kilobytes.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


class LogLines(logging.Handler):
    """Collects trio_chat's log messages (those starting with *prefix*)."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.prefix):
            self.lines.append(message)


@contextlib.contextmanager
def collect_logs(prefix: str = "") -> Iterator[list[str]]:
    """Collect trio_chat's info-level log lines for the block."""
    logger = logging.getLogger("trio_chat")
    handler = LogLines(prefix)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
