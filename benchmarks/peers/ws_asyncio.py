"""Peer: websockets (asyncio) hub relaying with ``websockets.broadcast()``.

``broadcast()`` writes the frame to each connection's transport without
awaiting; it is the fastest fan-out the asyncio implementation offers.
With ``--deflate`` it negotiates permessage-deflate (websockets' default
parameters); ``broadcast()`` then compresses the message once per recipient,
each connection having its own compressor.
"""

from __future__ import annotations

import asyncio

import _common
from websockets.asyncio.server import ServerConnection, broadcast, serve


async def main() -> None:
    args = _common.parse_args(__doc__)
    _common.raise_fd_limit()
    rooms: dict[str, set[ServerConnection]] = {}

    async def chat(ws: ServerConnection) -> None:
        joined: set[str] = set()
        try:
            async for message in ws:
                parsed = _common.parse(message)
                if parsed is None:
                    await ws.send(_common.error_frame(400, "bad frame"))
                    continue
                kind, room = parsed
                if kind == "join":
                    rooms.setdefault(room, set()).add(ws)
                    joined.add(room)
                    await ws.send(_common.joined_frame(room))
                elif kind == "chat" and room in joined:
                    broadcast([c for c in rooms[room] if c is not ws], message)
                    await ws.send(_common.ack_frame(room))
                else:
                    await ws.send(_common.error_frame(403, "not a member"))
        finally:
            for room in joined:
                members = rooms.get(room)
                if members is not None:
                    members.discard(ws)
                    if not members:
                        del rooms[room]

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    handler = echo if args.mode == "echo" else chat
    async with serve(
        handler,
        args.host,
        args.port,
        compression="deflate" if args.deflate else None,
        max_size=65536,
        backlog=4096,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        _common.announce("websockets-asyncio", args.host, port)
        await server.serve_forever()


if __name__ == "__main__":
    _common.main_guard(lambda: asyncio.run(main()))
