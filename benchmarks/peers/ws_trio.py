"""Peer: websockets 17's trio server relaying with its trio ``broadcast()``.

On trio, ``websockets.trio.server.broadcast`` starts one task per recipient
in a nursery and awaits the write of each; it returns when all are written.
"""

from __future__ import annotations

import functools

import _common
import trio
from websockets.trio.server import ServerConnection, broadcast, serve


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
                    await broadcast([c for c in rooms[room] if c is not ws], message)
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
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                serve,
                handler,
                args.port,
                host=args.host,
                compression="deflate" if args.deflate else None,
                max_size=65536,
                backlog=4096,
            )
        )
        port = server.listeners[0].socket.getsockname()[1]
        _common.announce("websockets-trio", args.host, port)


if __name__ == "__main__":
    _common.main_guard(lambda: trio.run(main))
