"""Shared bits of the peer servers: command line, fd limit, the listening line.

Every peer speaks the subset of the trio_chat protocol the load generator
uses: ``join`` is answered with ``joined``; ``chat`` is relayed verbatim (the
raw frame, not re-encoded) to the room's other connections and answered with
an ``ack``.  In ``echo`` mode every message is sent back unchanged.
Compression is off unless ``--deflate`` is given.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import urllib.parse


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", nargs="?", choices=["serve", "echo"], default="serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="negotiate permessage-deflate when the client offers it (where the library can)",
    )
    return parser.parse_args()


def raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit (10,000+ sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(name: str, host: str, port: int) -> None:
    print(f"{name} listening on ws://{host}:{port}/ws", flush=True)


def user_from_path(path: str) -> str:
    query = urllib.parse.urlsplit(path).query
    return urllib.parse.parse_qs(query).get("user", ["guest"])[0]


def joined_frame(room: str) -> str:
    return json.dumps({"type": "joined", "payload": {"room": room, "members": []}})


def ack_frame(room: str) -> str:
    return json.dumps({"type": "ack", "payload": {"room": room}})


def error_frame(code: int, message: str) -> str:
    return json.dumps({"type": "error", "payload": {"code": code, "message": message}})


def parse(message: str | bytes) -> tuple[str, str] | None:
    """Return (type, room) of a client frame, or None if it is malformed."""
    try:
        frame = json.loads(message)
        return frame["type"], frame.get("payload", {}).get("room", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def main_guard(coro_main) -> None:
    try:
        coro_main()
    except KeyboardInterrupt:
        sys.exit(0)
