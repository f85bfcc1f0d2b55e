"""permessage-deflate (RFC 7692): negotiation, inbound decoding, shared compression.

trio_chat always answers an offer with ``server_no_context_takeover`` and
``client_no_context_takeover``:

* **outbound**, every message is compressed on its own (no back-references to
  earlier ones), so the hub compresses each event *once* per window size and
  sends the same bytes to every recipient with that window
  (:class:`Compressor`, one per window size, shared by all connections);
* **inbound**, a message never depends on the one before, so a connection
  holds no inflate state between messages (:class:`InboundDeflate` drops it
  when a message ends): about 40 KB of zlib window and state that a client
  who sent one compressed message would otherwise pin for its whole life.

Decompression is bounded: it never produces more than the inbound message
budget allows (``max_size``, in *decompressed* bytes), so a small compressed
frame cannot inflate past it (a deflate bomb ends in close 1009).

Everything here is pure: no I/O, no trio.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions import Extension
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.typing import ExtensionName

__all__ = [
    "Compressor",
    "DeflateParams",
    "InboundDeflate",
    "negotiate",
    "parse_extensions",
]

NAME = "permessage-deflate"
#: The empty stored block a sender strips from the end of each message.
_TAIL = b"\x00\x00\xff\xff"
#: Messages shorter than this go out uncompressed (allowed at any time: the
#: RSV1 bit says which): deflate's own framing would eat the gain.
MIN_COMPRESS = 64
#: zlib cannot compress raw deflate with a 256-byte window (8 bits): a client
#: that asks for one is answered ``server_max_window_bits=8`` and gets
#: uncompressed frames, which always honour the limit.
MIN_ZLIB_BITS = 9


@attrs.frozen
class DeflateParams:
    """What one accepted offer agreed on.

    ``server_bits`` is the window the server may compress with (0: send
    uncompressed frames only); ``response`` the
    ``Sec-WebSocket-Extensions`` value to answer with.
    """

    server_bits: int
    response: str


def parse_extensions(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Split ``Sec-WebSocket-Extensions`` header values into offers.

    Each offer is its name and its parameters (name, value or None), in
    order; names are lowercased, quoted values unquoted.  A malformed offer
    is returned with a parameter named ``""`` so that nothing accepts it.
    """
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    for value in values:
        for item in value.split(","):
            parts = [p.strip() for p in item.split(";")]
            if not parts[0]:
                continue
            params: list[tuple[str, str | None]] = []
            for part in parts[1:]:
                name, eq, raw = part.partition("=")
                name = name.strip().lower()
                if not eq:
                    params.append((name, None))
                    continue
                raw = raw.strip()
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1]
                params.append((name, raw))
            offers.append((parts[0].lower(), params))
    return offers


def _bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept(params: Sequence[tuple[str, str | None]]) -> DeflateParams | None:
    """The answer to one permessage-deflate offer, or None to decline it."""
    seen: set[str] = set()
    server_bits = 15
    asked_server_bits = False
    for name, value in params:
        if name in seen:
            return None  # RFC 7692 §7: a parameter given twice declines the offer
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif name == "server_max_window_bits":
            bits = _bits(value)
            if bits is None:
                return None
            server_bits, asked_server_bits = bits, True
        elif name == "client_max_window_bits":
            if value is not None and _bits(value) is None:
                return None
        else:
            return None
    response = f"{NAME}; server_no_context_takeover; client_no_context_takeover"
    if asked_server_bits:
        response += f"; server_max_window_bits={server_bits}"
    return DeflateParams(server_bits if server_bits >= MIN_ZLIB_BITS else 0, response)


def negotiate(values: Iterable[str]) -> DeflateParams | None:
    """Accept the first permessage-deflate offer we can, or None."""
    for name, params in parse_extensions(values):
        if name == NAME:
            accepted = _accept(params)
            if accepted is not None:
                return accepted
    return None


class InboundDeflate(Extension):
    """Decompresses a client's messages, within the message budget.

    A websockets :class:`~websockets.extensions.Extension`: the engine calls
    :meth:`decode` on every frame it parses.  The inflate state exists only
    while a compressed message is being received (no context takeover).
    Outbound frames are never compressed here (the engine sends only
    control frames; data frames are compressed by the hub's
    :class:`Compressor`), so :meth:`encode` returns its frame unchanged.
    """

    name = ExtensionName(NAME)

    __slots__ = ("_decoder", "decompressed")

    def __init__(self) -> None:
        #: A zlib decompressobj while a compressed message is being received.
        self._decoder: Any = None
        #: Decompressed bytes of the message being received so far.
        self.decompressed = 0

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        opcode = frame.opcode
        if opcode in CTRL_OPCODES:
            return frame
        decoder = self._decoder
        if opcode is Opcode.CONT:
            if decoder is None:
                return frame  # a continuation of an uncompressed message
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
        else:
            if not frame.rsv1:
                return frame
            decoder = self._decoder = zlib.decompressobj(-15)
            self.decompressed = 0
        data = frame.data
        if frame.fin:
            data = bytes(data) + _TAIL
        limit = 0 if max_size is None else max_size + 1
        try:
            out = decoder.decompress(data, limit)
        except zlib.error as exc:
            raise ProtocolError(f"invalid compressed data: {exc}") from None
        if max_size is not None and (len(out) > max_size or decoder.unconsumed_tail):
            self._decoder = None
            raise PayloadTooBig(None, max_size)
        self.decompressed += len(out)
        if frame.fin:
            self._decoder = None
        return Frame(opcode, out, frame.fin, False, frame.rsv2, frame.rsv3)

    def encode(self, frame: Frame) -> Frame:
        return frame


class Compressor:
    """Compresses whole messages for every connection that uses *bits*.

    One zlib stream, flushed with ``Z_FULL_FLUSH`` after each message: the
    flush resets the compressor's history, so each message's bytes stand
    alone (what ``server_no_context_takeover`` promises) and the same bytes
    suit every recipient.  The hub owns one per window size in use.
    """

    __slots__ = ("_zlib",)

    def __init__(self, bits: int = 15) -> None:
        self._zlib = zlib.compressobj(6, zlib.DEFLATED, -bits)

    def compress(self, payload: bytes) -> bytes:
        """The permessage-deflate payload for one whole message."""
        z = self._zlib
        data = z.compress(payload) + z.flush(zlib.Z_FULL_FLUSH)
        return data[:-4]  # the flush ends with the empty stored block
