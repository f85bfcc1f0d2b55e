"""WebSocket frame bytes for server-to-client messages (RFC 6455 §5.2).

The hub encodes each outbound message once, here, and hands the same bytes to
every recipient.  Server frames are never masked; a whole message is one frame
with FIN set.  With permessage-deflate (RFC 7692) a compressed message is the
same frame with RSV1 set around the compressed payload
(:func:`compressed_frame`); :class:`Encoded` keeps both forms of one message,
the compressed one made at most once per window size, on demand.
"""

from __future__ import annotations

import struct

from ._deflate import MIN_COMPRESS, Compressor

__all__ = ["Encoded", "binary_frame", "compressed_frame", "text_frame"]

_OP_TEXT = 0x1
_OP_BINARY = 0x2
_FIN = 0x80
_RSV1 = 0x40


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text_frame(text: str) -> bytes:
    """One unmasked, final text frame carrying *text* as UTF-8."""
    return _frame(_FIN | _OP_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    """One unmasked, final binary frame carrying *data*."""
    return _frame(_FIN | _OP_BINARY, data)


def compressed_frame(compressed: bytes, *, binary: bool = False) -> bytes:
    """One final frame with RSV1 set: a permessage-deflate message."""
    return _frame(_FIN | _RSV1 | (_OP_BINARY if binary else _OP_TEXT), compressed)


#: One Compressor per window size, shared by everything in this process
#: (the hub, echo): each compression stands alone, so sharing is safe.
_COMPRESSORS: dict[int, Compressor] = {}


def compressor(bits: int) -> Compressor:
    found = _COMPRESSORS.get(bits)
    if found is None:
        found = _COMPRESSORS[bits] = Compressor(bits)
    return found


class Encoded:
    """One outbound message as frame bytes, plain and compressed.

    ``plain`` is the uncompressed frame.  :meth:`for_bits` gives the frame
    for a connection whose agreed window is *bits* (0: no compression),
    compressing the payload the first time a window size asks for it and
    reusing those bytes for every later recipient with the same window.
    """

    __slots__ = ("_binary", "_payload", "_variants", "plain")

    def __init__(self, payload: bytes, *, binary: bool = False) -> None:
        self._payload = payload
        self._binary = binary
        self.plain = _frame(_FIN | (_OP_BINARY if binary else _OP_TEXT), payload)
        self._variants: dict[int, bytes] | None = None

    @classmethod
    def text(cls, text: str) -> Encoded:
        return cls(text.encode("utf-8"))

    def for_bits(self, bits: int) -> bytes:
        if not bits or len(self._payload) < MIN_COMPRESS:
            return self.plain
        variants = self._variants
        if variants is None:
            variants = self._variants = {}
        frame = variants.get(bits)
        if frame is None:
            frame = variants[bits] = compressed_frame(
                compressor(bits).compress(self._payload), binary=self._binary
            )
        return frame
