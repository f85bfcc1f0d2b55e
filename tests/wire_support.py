"""Helpers for tests of the frame-writing path and of misbehaving peers.

* :func:`stream_pair` -- two connected :class:`trio.SocketStream` over a real
  socketpair, optionally with tiny kernel buffers so writes go partial.
* :func:`parse_frames` -- split server-to-client bytes into whole frames, and
  report what is left over (a truncated frame), independently of wsproto.
* :class:`RawClient` -- a WebSocket client driven by hand with wsproto: it
  never answers pings or closes by itself and reads only when told to, and it
  keeps every byte the server sent after the handshake for :func:`parse_frames`.
* :func:`open_served_connection` -- a real server serving one connection over
  a socketpair (everything a TCP client gets), with a :class:`RawClient` on
  the other end.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Request
from wsproto.frame_protocol import FrameProtocol

from trio_chat._config import Config
from trio_chat._connection import Connection
from trio_chat._hub import Outlet
from trio_chat._server import ChatServer
from trio_chat._stream import WireStream
from trio_chat._testing_server import connection_object, open_test_server

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA

#: Tiny kernel buffers: a few KB fill them.
SMALL_BUFFER = 4096


def shrink_buffers(sock: Any, size: int = SMALL_BUFFER) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def stream_pair(*, small: bool = False) -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected pair of socket streams (``small``: shrink both buffers)."""
    a, b = trio.socket.socketpair()
    if small:
        shrink_buffers(a)
        shrink_buffers(b)
    return trio.SocketStream(a), trio.SocketStream(b)


@attrs.frozen
class Frame:
    opcode: int
    fin: bool
    payload: bytes

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Whole unmasked frames in *data*, and the bytes of a truncated last one.

    Raises AssertionError on anything a server must never send: RSV bits
    (no extension is negotiated), a masked frame, an unknown opcode.
    """
    frames: list[Frame] = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 2:
            break
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x70 == 0, f"RSV bits set in frame header at byte {pos}: {b0:#x}"
        assert not b1 & 0x80, f"masked server frame at byte {pos}"
        opcode = b0 & 0x0F
        assert opcode in (0x0, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG), (
            f"unknown opcode {opcode:#x} at byte {pos}"
        )
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if n - pos < 4:
                break
            length = struct.unpack("!H", data[pos + 2 : pos + 4])[0]
            head = 4
        elif length == 127:
            if n - pos < 10:
                break
            length = struct.unpack("!Q", data[pos + 2 : pos + 10])[0]
            head = 10
        if n - pos < head + length:
            break
        frames.append(Frame(opcode, bool(b0 & 0x80), bytes(data[pos + head : pos + head + length])))
        pos += head + length
    return frames, bytes(data[pos:])


def assert_nothing_after_close(frames: list[Frame], rest: bytes) -> Frame | None:
    """At most one close frame, and if there is one, nothing after it."""
    for i, frame in enumerate(frames):
        if frame.opcode == OP_CLOSE:
            assert i == len(frames) - 1, f"frames after the close frame: {frames[i + 1 :]!r}"
            assert rest == b"", f"bytes after the close frame: {rest[:40]!r}"
            return frame
    return None


class RawClient:
    """A WebSocket client over any trio stream, moved one step at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.raw = bytearray()  # every byte after the handshake response
        self.eof = False
        self._handshake = bytearray()

    # -------------------------------------------------------------- sending

    def request_bytes(self, target: str = "/ws") -> bytes:
        return self.ws.send(Request(host="localhost", target=target))

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    # -------------------------------------------------------------- receiving

    async def read_handshake(self) -> AcceptConnection:
        """Read the server's 101 response; keep any bytes after it."""
        while b"\r\n\r\n" not in self._handshake:
            data = await self.stream.receive_some(65536)
            assert data, "EOF before the handshake response"
            self._handshake += data
        head, _, after = bytes(self._handshake).partition(b"\r\n\r\n")
        self.ws.receive_data(head + b"\r\n\r\n")
        events = list(self.ws.events())
        assert events and isinstance(events[0], AcceptConnection), events
        self.raw += after
        return events[0]

    async def read_some(self, max_bytes: int = 65536) -> bytes:
        """One read; b"" at EOF.  ECONNRESET counts as EOF too."""
        if self.eof:
            return b""
        try:
            data = await self.stream.receive_some(max_bytes)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.eof = True
        self.raw += data
        return data

    async def read_until_eof(self) -> None:
        while await self.read_some():
            pass

    def frames(self) -> tuple[list[Frame], bytes]:
        return parse_frames(bytes(self.raw))

    async def read_frames(self, count: int, opcode: int | None = None) -> list[Frame]:
        """Read until *count* frames (of *opcode*, if given) have arrived."""
        while True:
            frames, _ = self.frames()
            wanted = [f for f in frames if opcode is None or f.opcode == opcode]
            if len(wanted) >= count:
                return wanted
            if not await self.read_some():
                raise AssertionError(f"EOF after {len(wanted)} of {count} frames")

    def wsproto_frames(self) -> list[Any]:
        """Every byte received so far, parsed by wsproto's frame parser.

        An independent check of :func:`parse_frames`: wsproto raises
        ``ParseFailed`` on anything that is not valid framing from a server
        (masked frames, RSV bits, bad control frames, text that is not UTF-8).
        """
        proto = FrameProtocol(client=True, extensions=[])
        proto.receive_bytes(bytes(self.raw))
        return list(proto.received_frames())


@attrs.define
class Served:
    """A served connection and its raw client (see :func:`open_served_connection`)."""

    server: ChatServer
    conn: Connection
    client: RawClient
    finished: trio.Event

    @property
    def wire(self) -> WireStream:
        return self.conn.stream

    @property
    def outlet(self) -> Outlet:
        return self.conn.outlet


def only_connection(server: ChatServer) -> Connection | None:
    """The server's one open connection, if it has one (test introspection)."""
    connections = server.connections()
    assert len(connections) <= 1, connections
    return connection_object(server, connections[0].session_id) if connections else None


@asynccontextmanager
async def open_served_connection(
    config: Config | None = None,
    *,
    echo: bool = True,
    small: bool = True,
    transport_pair: tuple[trio.abc.Stream, trio.abc.Stream] | None = None,
) -> AsyncIterator[Served]:
    """A real server serving one connection over a socketpair, and its client.

    The server side goes through everything a TCP connection does
    (``ChatServer.handle_stream``: the HTTP front, WireStream,
    trio-websocket, Connection with its reader, writer and heartbeat, the
    echo or chat handler); the client side is a :class:`RawClient`, already
    past the opening handshake.  ``finished`` is set once the server is done
    with the connection.  Pushing frames into ``served.outlet`` does what
    the hub does.
    """
    config = config or Config(port=0)
    config = attrs.evolve(config, shutdown_grace=min(config.shutdown_grace, 1.0))
    if transport_pair is None:
        transport_pair = stream_pair(small=small)
    server_side, client_side = transport_pair
    client = RawClient(client_side)
    finished = trio.Event()
    async with (
        open_test_server(config, echo=echo) as server,
        trio.open_nursery() as nursery,
    ):

        async def serve() -> None:
            try:
                await server.handle_stream(server_side, "socketpair")
            finally:
                finished.set()

        nursery.start_soon(serve)
        with trio.fail_after(5):
            await client.send_raw(client.request_bytes())
            await client.read_handshake()
            while (conn := only_connection(server)) is None:
                await trio.sleep(0.001)
        try:
            yield Served(server, conn, client, finished)
        finally:
            nursery.cancel_scope.cancel()
