"""Servers and clients for tests (trio_chat's own and embedders').

* :func:`open_test_server` runs a real server on 127.0.0.1, port 0, and
  :func:`open_test_client` connects a WebSocket client to it.
* :func:`open_memory_server` runs a server that listens nowhere;
  :func:`open_memory_stream` and :func:`open_memory_client` connect to it over
  in-memory streams.  No socket is involved, so these work under trio's
  ``MockClock`` with autojump (pytest-trio's ``autojump_clock`` fixture):
  heartbeats, write timeouts and handshake deadlines take no real time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlencode

import attrs
import trio
import trio.testing
import trio_websocket

from ._config import Config
from ._connection import Connection
from ._protocol import ServerEvent, parse_server_frame
from ._server import ChatServer

__all__ = [
    "TestClient",
    "open_memory_client",
    "open_memory_server",
    "open_memory_stream",
    "open_test_client",
    "open_test_server",
]


@asynccontextmanager
async def open_test_server(
    config: Config | None = None, **kwargs: Any
) -> AsyncIterator[ChatServer]:
    """Run a :class:`ChatServer` on 127.0.0.1, port 0, for the block.

    *config* defaults to ``Config(port=0)``; other keyword arguments go to
    :class:`ChatServer`.  On exit the server is shut down gracefully.
    """
    config = config if config is not None else Config(port=0)
    config = attrs.evolve(config, host="127.0.0.1", port=0)
    server = ChatServer(config, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(config.shutdown_grace + 5):
                    await server.shutdown()
            nursery.cancel_scope.cancel()


@attrs.define
class TestClient:
    """A connected WebSocket speaking the chat protocol, for tests.

    ``welcome`` is the first frame the server sent.
    """

    __test__ = False  # not a pytest test class

    ws: trio_websocket.WebSocketConnection
    welcome: dict[str, Any] = attrs.field(factory=dict)

    @property
    def user_id(self) -> str:
        user_id: str = self.welcome["payload"]["user_id"]
        return user_id

    async def send(self, type: str, payload: dict[str, Any], ref: str | None = None) -> None:
        frame: dict[str, Any] = {"type": type, "payload": payload}
        if ref is not None:
            frame["ref"] = ref
        await self.ws.send_message(json.dumps(frame))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, as a dict (fails after *timeout* seconds)."""
        with trio.fail_after(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
        return frame

    async def receive_event(self, timeout: float = 5.0) -> ServerEvent:
        with trio.fail_after(timeout):
            return parse_server_frame(await self.ws.get_message())

    async def expect(self, type: str, timeout: float = 5.0) -> dict[str, Any]:
        """Skip frames until one of *type* arrives; return it."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.receive(timeout)
                if frame["type"] == type:
                    return frame

    async def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"room": room}
        if since is not None:
            payload["since"] = since
        await self.send("join", payload)
        return await self.expect("joined")

    async def chat(self, room: str, content: str, ref: str | None = None) -> dict[str, Any]:
        """Send a chat and return its ack (or the error that answered it)."""
        await self.send("chat", {"room": room, "content": content}, ref)
        with trio.fail_after(5):
            while True:
                frame = await self.receive()
                if frame["type"] in ("ack", "error"):
                    return frame


def _resource(path: str, user: str | None, token: str | None, key: str | None = None) -> str:
    params = {}
    if user is not None:
        params["user"] = user
    if key is not None:
        params["key"] = key
    if token is not None:
        params["token"] = token
    if not params:
        return path
    return path + ("&" if "?" in path else "?") + urlencode(params)


@asynccontextmanager
async def open_test_client(
    server_or_url: ChatServer | str,
    *,
    user: str | None = None,
    token: str | None = None,
    key: str | None = None,
    subprotocols: Sequence[str] | None = None,
) -> AsyncIterator[TestClient]:
    """Connect a :class:`TestClient` and read its ``welcome`` frame.

    *user*, *key* and *token* go into the query string (URL-encoded).  In
    anonymous mode a name is held for the key that used it first: several
    connections of one user send the same *key*.
    """
    url = server_or_url.url if isinstance(server_or_url, ChatServer) else server_or_url
    url = _resource(url, user, token, key)
    async with trio_websocket.open_websocket_url(url, subprotocols=subprotocols) as ws:
        client = TestClient(ws)
        client.welcome = await client.receive()
        yield client


@asynccontextmanager
async def open_memory_server(
    config: Config | None = None, **kwargs: Any
) -> AsyncIterator[ChatServer]:
    """Run a :class:`ChatServer` that listens on no socket, for the block.

    Connect to it with :func:`open_memory_stream` (a raw byte stream) or
    :func:`open_memory_client` (a WebSocket client).  Everything runs in
    memory, so tests may use a ``MockClock`` with autojump.  Other keyword
    arguments go to :class:`ChatServer`; on exit the server is shut down
    gracefully.
    """
    config = config if config is not None else Config()
    server = ChatServer(config, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: server.serve(listeners=[], task_status=task_status))
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(config.shutdown_grace + 5):
                    await server.shutdown()
            nursery.cancel_scope.cancel()


def connection_object(server: ChatServer, session_id: str) -> Connection:
    """The connection layer's object behind ``server.connections()``'s
    *session_id*, for trio_chat's own tests of that layer (its queue, its
    stream, its engine); not part of the public API.

    Raises:
        LookupError: no such connection is open.
    """
    for conn in server._connections:
        if conn.session_id == session_id:
            return conn
    raise LookupError(f"no open connection {session_id!r}")


def open_memory_stream(
    server: ChatServer, *, lockstep: bool = False, peer: str = "memory"
) -> trio.abc.Stream:
    """Connect a raw client stream to a running *server*; return the client end.

    The server end is served like an accepted TCP connection (HTTP requests
    and WebSocket upgrades).  By default the streams buffer without bound, so
    the server's writes never wait for the client; with *lockstep* every
    write waits until the client reads it (a client that stops reading then
    stalls the server's writer, as a full socket would).
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client, server_end = pair()
    server.serve_stream(server_end, peer)
    return client


@asynccontextmanager
async def open_memory_client(
    server: ChatServer,
    *,
    user: str | None = None,
    token: str | None = None,
    key: str | None = None,
    subprotocols: Sequence[str] | None = None,
    lockstep: bool = False,
    message_queue_size: int = 1,
) -> AsyncIterator[TestClient]:
    """Connect a :class:`TestClient` over an in-memory stream; read ``welcome``.

    Like :func:`open_test_client`, for a server started with
    :func:`open_memory_server`.  The client answers pings by itself.
    """
    stream = open_memory_stream(server, lockstep=lockstep)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            # Annotated as a socket or TLS stream, it takes any trio Stream.
            cast("trio.SocketStream", stream),
            "localhost",
            _resource("/ws", user, token, key),
            subprotocols=subprotocols,
            message_queue_size=message_queue_size,
        )
        try:
            client = TestClient(ws)
            client.welcome = await client.receive()
            yield client
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await ws.aclose()
            nursery.cancel_scope.cancel()
