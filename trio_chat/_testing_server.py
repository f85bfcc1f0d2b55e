"""Servers and clients for tests (trio_chat's own and embedders')."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio_websocket

from ._config import Config
from ._protocol import ServerEvent, parse_server_frame
from ._server import ChatServer

__all__ = ["open_test_server", "TestClient", "open_test_client"]


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
        return self.welcome["payload"]["user_id"]

    async def send(self, type: str, payload: dict[str, Any], ref: str | None = None) -> None:
        frame: dict[str, Any] = {"type": type, "payload": payload}
        if ref is not None:
            frame["ref"] = ref
        await self.ws.send_message(json.dumps(frame))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, as a dict (fails after *timeout* seconds)."""
        with trio.fail_after(timeout):
            return json.loads(await self.ws.get_message())

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


@asynccontextmanager
async def open_test_client(
    server_or_url: ChatServer | str,
    *,
    user: str | None = None,
    token: str | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[TestClient]:
    """Connect a :class:`TestClient` and read its ``welcome`` frame."""
    url = server_or_url.url if isinstance(server_or_url, ChatServer) else server_or_url
    params = []
    if user is not None:
        params.append(f"user={user}")
    if token is not None:
        params.append(f"token={token}")
    if params:
        url += ("&" if "?" in url else "?") + "&".join(params)
    async with trio_websocket.open_websocket_url(url, subprotocols=subprotocols) as ws:
        client = TestClient(ws)
        client.welcome = await client.receive()
        yield client
