"""Peer: picows (Cython, asyncio) hub relaying with ``transport.send()``.

picows calls ``on_ws_frame`` for every frame straight from its Cython frame
parser, and ``transport.send()`` writes the frame to the asyncio transport
without awaiting: a relay costs one ``send`` per recipient.  The generator
never fragments a message, so the hub handles whole text frames only.  Pings
are answered by picows itself; the server pings idle connections every 20 s
(``enable_auto_ping``), like websockets' default keepalive.  picows has no
permessage-deflate: an offer of it is ignored, and the connection runs
uncompressed.
"""

from __future__ import annotations

import asyncio

import _common
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

TEXT = WSMsgType.TEXT


def main_factory(mode: str):
    rooms: dict[str, set[WSTransport]] = {}

    class Chat(WSListener):
        __slots__ = ("joined",)

        def __init__(self) -> None:
            self.joined: set[str] = set()

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
                return
            if kind != TEXT or not frame.fin:
                return
            message = frame.get_payload_as_bytes()
            parsed = _common.parse(message)
            if parsed is None:
                transport.send(TEXT, _common.error_frame(400, "bad frame").encode())
                return
            kind_, room = parsed
            if kind_ == "join":
                rooms.setdefault(room, set()).add(transport)
                self.joined.add(room)
                transport.send(TEXT, _common.joined_frame(room).encode())
            elif kind_ == "chat" and room in self.joined:
                for other in rooms[room]:
                    if other is not transport:
                        other.send(TEXT, message)
                transport.send(TEXT, _common.ack_frame(room).encode())
            else:
                transport.send(TEXT, _common.error_frame(403, "not a member").encode())

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            for room in self.joined:
                members = rooms.get(room)
                if members is not None:
                    members.discard(transport)
                    if not members:
                        del rooms[room]
            self.joined.clear()

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif kind in (TEXT, WSMsgType.BINARY):
                transport.send(kind, frame.get_payload_as_bytes(), fin=frame.fin)

    listener = Echo if mode == "echo" else Chat

    def factory(_request: WSUpgradeRequest) -> WSListener:
        return listener()

    return factory


async def main() -> None:
    args = _common.parse_args(__doc__)
    _common.raise_fd_limit()
    server = await ws_create_server(
        main_factory(args.mode),
        args.host,
        args.port,
        enable_auto_ping=True,
        auto_ping_idle_timeout=20,
        auto_ping_reply_timeout=20,
        max_frame_size=65536,
        backlog=4096,
    )
    port = server.sockets[0].getsockname()[1]
    _common.announce("picows", args.host, port)
    await server.serve_forever()


if __name__ == "__main__":
    _common.main_guard(lambda: asyncio.run(main()))
