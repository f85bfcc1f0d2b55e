"""Peer: the naive trio + trio-websocket hub.

One task per connection (trio-websocket's handler); a chat frame is relayed
by awaiting ``send_message`` for each recipient in turn, from the sender's
task.  This is the straightforward design trio_chat must beat.
"""

from __future__ import annotations

import _common
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


async def main() -> None:
    args = _common.parse_args(__doc__)
    _common.raise_fd_limit()
    rooms: dict[str, set[WebSocketConnection]] = {}

    async def chat(request: WebSocketRequest) -> None:
        ws = await request.accept()
        joined: set[str] = set()
        try:
            while True:
                message = await ws.get_message()
                parsed = _common.parse(message)
                if parsed is None:
                    await ws.send_message(_common.error_frame(400, "bad frame"))
                    continue
                kind, room = parsed
                if kind == "join":
                    rooms.setdefault(room, set()).add(ws)
                    joined.add(room)
                    await ws.send_message(_common.joined_frame(room))
                elif kind == "chat" and room in joined:
                    for other in list(rooms[room]):
                        if other is not ws:
                            try:
                                await other.send_message(message)
                            except ConnectionClosed:
                                pass
                    await ws.send_message(_common.ack_frame(room))
                else:
                    await ws.send_message(_common.error_frame(403, "not a member"))
        except ConnectionClosed:
            pass
        finally:
            for room in joined:
                members = rooms.get(room)
                if members is not None:
                    members.discard(ws)
                    if not members:
                        del rooms[room]

    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    handler = echo if args.mode == "echo" else chat
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, args.host, args.port, None)
        _common.announce("trio-naive", args.host, server.port)


if __name__ == "__main__":
    _common.main_guard(lambda: trio.run(main))
