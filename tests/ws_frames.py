"""Client-side frame bytes for tests of the connection layer, built by hand.

Independent of both engines: a masked client frame is written here byte by
byte, so tests can send exactly what a hostile client would (any opcode, RSV
bits, a bad length, an unmasked frame).
"""

from __future__ import annotations

import os
import struct
import zlib

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    masked: bool = True,
    mask: bytes | None = None,
) -> bytes:
    """One client frame, masked unless told otherwise."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0) | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    key = mask if mask is not None else os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def deflate_message(payload: bytes, compressor: zlib._Compress | None = None) -> bytes:
    """*payload* compressed as a permessage-deflate message (tail stripped).

    With a *compressor*, its context carries over between messages (context
    takeover); without, each message stands alone.
    """
    z = compressor or zlib.compressobj(6, zlib.DEFLATED, -15)
    data = z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()
