"""Small real-socket clients for the HTTP front's tests.

* :func:`http_request`: one HTTP/1.1 request with h11, answer as :class:`Reply`;
* :func:`open_http` + :meth:`HttpClient.request`: several requests on one
  socket (keep-alive);
* :func:`ws_refusal`: an upgrade the server must refuse; its HTTP status;
* :func:`raw_exchange`: raw bytes in, everything the server sends until it
  closes, out;
* :class:`LogCapture`: records of the ``trio_chat`` logger, whatever the
  logger's propagation setting.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import trio
import trio_websocket


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpClient:
    """An h11 client on one connected stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        host: str = "127.0.0.1",
    ) -> Reply:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = [("host", host), *(headers or [])]
        if body or method in ("POST", "PUT"):
            hdrs.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        response = await self._next()
        assert isinstance(response, h11.Response), response
        parts = []
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        return Reply(
            response.status_code,
            {k.decode().lower(): v.decode() for k, v in response.headers},
            b"".join(parts),
        )


@asynccontextmanager
async def open_http(
    port: int, ssl_context: ssl.SSLContext | None = None, server_hostname: str = "localhost"
) -> AsyncIterator[HttpClient]:
    stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
    if ssl_context is not None:
        stream = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname)
    async with stream:
        yield HttpClient(stream)


async def http_request(
    port: int,
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    ssl_context: ssl.SSLContext | None = None,
) -> Reply:
    with trio.fail_after(10):
        async with open_http(port, ssl_context) as client:
            return await client.request(method, target, headers=headers, body=body)


def upgrade_headers(extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    key = base64.b64encode(os.urandom(16)).decode()
    return [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", key),
        ("sec-websocket-version", "13"),
        *(extra or []),
    ]


async def ws_refusal(
    port: int,
    target: str = "/ws",
    headers: list[tuple[str, str]] | None = None,
    host: str | None = None,
) -> Reply:
    """Send an upgrade request the server must refuse; return its answer.

    Fails if the server switches protocols (101) instead.
    """
    with trio.fail_after(10):
        async with open_http(port) as client:
            reply_headers = upgrade_headers(headers)
            hdrs = [("host", host or f"127.0.0.1:{port}"), *reply_headers]
            request = b"GET %s HTTP/1.1\r\n" % target.encode()
            request += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in hdrs)
            await client.stream.send_all(request + b"\r\n")
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="GET", target=target, headers=hdrs))
            conn.send(h11.EndOfMessage())
            parts = []
            response = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await client.stream.receive_some(65536))
                    continue
                if isinstance(event, h11.InformationalResponse):
                    raise AssertionError(f"server upgraded: {event}")
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            assert response is not None
            return Reply(
                response.status_code,
                {k.decode().lower(): v.decode() for k, v in response.headers},
                b"".join(parts),
            )


async def raw_exchange(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send *data* and return every byte the server sends until it closes."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            parts = []
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                parts.append(chunk)
            return b"".join(parts)


async def rejected_status(
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Open a WebSocket with trio-websocket's client, expecting a refusal.

    Returns the HTTP status the server refused the handshake with; fails if
    the handshake succeeds.
    """
    extra = [(k.encode(), v.encode()) for k, v in headers or []]
    with trio.fail_after(10):
        try:
            async with trio_websocket.open_websocket_url(url, ssl_context, extra_headers=extra):
                pass
        except trio_websocket.ConnectionRejected as exc:
            return exc.status_code
    raise AssertionError(f"handshake to {url} was accepted")


class LogCapture(logging.Handler):
    """Collects the records of the ``trio_chat`` loggers while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    def find(self, *words: str) -> list[str]:
        return [m for m in self.messages if all(w in m for w in words)]

    def __enter__(self) -> LogCapture:
        logger = logging.getLogger("trio_chat")
        self._old_level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("trio_chat")
        logger.removeHandler(self)
        logger.setLevel(self._old_level)


# ---------------------------------------------------------------- raw WebSocket


def client_frame(
    payload: bytes,
    opcode: int = 0x1,
    *,
    fin: bool = True,
    mask: bytes = b"\x11\x22\x33\x44",
    length: int | None = None,
) -> bytes:
    """One masked client frame, as bytes (*length* overrides the header's)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def open_raw_websocket(port: int, target: str = "/ws") -> tuple[trio.SocketStream, bytes]:
    """Do the opening handshake on a plain socket; return it and the bytes
    already received after the 101 response (usually the welcome frame)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n" % (target.encode(), key)
    )
    received = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"closed during the handshake: {received!r}")
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 "):
        await stream.aclose()
        raise AssertionError(f"handshake refused: {head!r}")
    return stream, rest
