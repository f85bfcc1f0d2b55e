"""WebSocket frame bytes for server-to-client messages (RFC 6455 §5.2).

The hub encodes each outbound message once, here, and hands the same bytes to
every recipient.  Server frames are never masked; trio_chat negotiates no
extensions, so a whole message is one frame with FIN set.
"""

from __future__ import annotations

import struct

__all__ = ["binary_frame", "text_frame"]

_OP_TEXT = 0x1
_OP_BINARY = 0x2
_FIN = 0x80


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((_FIN | opcode, n))
    elif n < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, n)
    return header + payload


def text_frame(text: str) -> bytes:
    """One unmasked, final text frame carrying *text* as UTF-8."""
    return _frame(_OP_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    """One unmasked, final binary frame carrying *data*."""
    return _frame(_OP_BINARY, data)
