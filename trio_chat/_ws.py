"""One server-side WebSocket's frames: bytes in, messages and replies out.

:class:`WebSocket` drives websockets' sans-I/O engine
(:class:`websockets.protocol.Protocol`, started in the OPEN state: the
opening handshake was checked and answered by :mod:`trio_chat._handshake`)
and adds what a chat server needs on top of it:

* **messages**: fragments are assembled here, text is checked as UTF-8 as it
  arrives (a bad byte ends the connection at once, close 1007);
* **the inbound message budget** (``max_message_bytes``, enforced by
  :class:`FrameGuard` as frames arrive): a message's first frame plus the
  wire bytes of every further frame received while it is assembled --
  continuation and control frames, headers included -- may not exceed it:
  300,000 empty fragments cost 1.8 MB on the wire and close 1009 after about
  11,000 of them.  The engine itself refuses any single frame, and any
  message once decompressed, over the budget before it is read or inflated
  (1009);
* **pings** count against a budget of their own (``max_pings`` per
  ``ping_seconds``); a ping flood is closed with 1008.  Pongs to the
  heartbeat's ping are recognised by their payload (:attr:`ponged`);
* **what really happened**: the close code *sent* (read from the close frame
  the engine wrote) and the one *received*, and which came first.

Pure: no I/O, no trio.  The caller feeds :meth:`receive` and writes what
:meth:`data_to_send` returns (an empty bytes object there means: the
closing handshake is over, close the transport).
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable
from typing import cast

from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions import Extension
from websockets.frames import Close as EngineClose, Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.typing import ExtensionName

from ._deflate import InboundDeflate

__all__ = ["Close", "WebSocket"]

#: The engine logs every connection's end at INFO: keep only its warnings.
_ENGINE_LOG = logging.getLogger("trio_chat.websocket")
_ENGINE_LOG.setLevel(logging.WARNING)

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE
_OPEN = State.OPEN
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _wire_size(payload: int) -> int:
    """Bytes a masked client frame with *payload* bytes takes on the wire."""
    return payload + (6 if payload < 126 else 8 if payload < 65536 else 14)


class FrameGuard(Extension):
    """Sees every frame the engine parses, on the wire, before anything else.

    Installed as an extension (never negotiated: it changes no frame), it
    enforces the inbound message budget as frames arrive, counting each
    frame's wire bytes (compressed, as sent) while a fragmented message is
    open, and remembers a close frame that arrives in the middle of one.
    RFC 6455 §5.4 lets control frames come between fragments, a close
    included; the engine answers that case with 1002, and
    :meth:`WebSocket.data_to_send` corrects it to the client's own code.
    """

    name = ExtensionName("trio-chat-frame-guard")

    __slots__ = ("close_mid_message", "cost", "in_message", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.cost = 0
        self.in_message = False
        #: The payload of a close frame received between fragments.
        self.close_mid_message: bytes | None = None

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        opcode = frame.opcode
        if opcode is _TEXT or opcode is _BINARY:
            if not frame.fin:
                self.in_message = True
                self.cost = len(frame.data)
        elif self.in_message:
            self.cost += _wire_size(len(frame.data))
            if self.cost > self.max_bytes:
                raise PayloadTooBig(None, self.max_bytes)
            if opcode is _CONT:
                if frame.fin:
                    self.in_message = False
            elif opcode is _CLOSE:
                self.close_mid_message = bytes(frame.data)
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


def _valid_close(payload: bytes) -> tuple[int, str] | None:
    if not payload:
        return 1005, ""
    try:
        close = EngineClose.parse(payload)
    except (ProtocolError, UnicodeDecodeError):
        return None
    return close.code, close.reason


class Close:
    """A close code and reason, and whether we sent it or the client did."""

    __slots__ = ("by_client", "code", "reason")

    def __init__(self, code: int, reason: str, *, by_client: bool) -> None:
        self.code = code
        self.reason = reason
        self.by_client = by_client

    def __repr__(self) -> str:
        return f"<Close {self.code} {'received' if self.by_client else 'sent'}>"


def _parse_close(data: bytes) -> tuple[int, str]:
    if len(data) < 2:
        return 1005, ""
    return int.from_bytes(data[:2], "big"), bytes(data[2:]).decode("utf-8", "replace")


class WebSocket:
    """The engine of one accepted connection, and its inbound budgets.

    Args:
        max_message_bytes: the inbound message budget (see the module doc).
        deflate: permessage-deflate was agreed (decompress RSV1 messages).
        max_pings, ping_seconds: pings allowed per window.
        now: the clock (seconds) used for the ping windows.
    """

    __slots__ = (
        "_guard",
        "_now",
        "_parts",
        "_ping_count",
        "_ping_start",
        "_proto",
        "_text",
        "_utf8",
        "closes",
        "max_bytes",
        "max_pings",
        "ping_payload",
        "ping_seconds",
        "ponged",
        "wants_write",
    )

    def __init__(
        self,
        *,
        max_message_bytes: int,
        deflate: bool = False,
        max_pings: int = 100,
        ping_seconds: float = 10.0,
        now: Callable[[], float],
    ) -> None:
        proto = Protocol(Side.SERVER, state=_OPEN, max_size=max_message_bytes, logger=_ENGINE_LOG)
        # Extensions decode in reverse order: the guard sees wire frames first.
        self._guard = FrameGuard(max_message_bytes)
        proto.extensions = [InboundDeflate(), self._guard] if deflate else [self._guard]
        self._proto = proto
        self.max_bytes = max_message_bytes
        self.max_pings = max_pings
        self.ping_seconds = ping_seconds
        self._now = now
        self._ping_start = -ping_seconds
        self._ping_count = 0
        #: Pieces of the message being assembled (None: no message open).
        self._parts: list[str] | list[bytes] | None = None
        self._text = False
        self._utf8: codecs.IncrementalDecoder | None = None
        #: Close frames, in the order they were sent or received.
        self.closes: list[Close] = []
        #: The payload of the heartbeat's outstanding ping, if any.
        self.ping_payload: bytes | None = None
        #: Set when the pong for :attr:`ping_payload` arrives.
        self.ponged = False
        #: The engine has frames to write (see :meth:`data_to_send`).
        self.wants_write = False

    # ------------------------------------------------------------ state

    @property
    def open(self) -> bool:
        """Neither side has sent a close frame and the engine has not failed."""
        return self._proto.state is _OPEN

    @property
    def pong_pending(self) -> bool:
        """The heartbeat's ping has not been answered yet."""
        return self.ping_payload is not None

    @property
    def first_close(self) -> Close | None:
        """The close frame that began the closing handshake, if any."""
        return self.closes[0] if self.closes else None

    def close_sent(self) -> Close | None:
        for close in self.closes:
            if not close.by_client:
                return close
        return None

    # ------------------------------------------------------------ input

    def receive(self, data: bytes | bytearray) -> list[str | bytes]:
        """Feed bytes read from the client (b"" at EOF); return whole messages."""
        proto = self._proto
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
        messages: list[str | bytes] = []
        # After the handshake the engine's events are all frames.
        for frame in cast("list[Frame]", proto.events_received()):
            opcode = frame.opcode
            payload = cast(bytes, frame.data)
            if opcode is _TEXT or opcode is _BINARY:
                if frame.fin:
                    if opcode is _TEXT:
                        try:
                            messages.append(bytes(payload).decode("utf-8"))
                        except UnicodeDecodeError:
                            self._fail(1007, "invalid UTF-8 in a text message")
                            break
                    else:
                        messages.append(bytes(payload))
                    continue
                self._text = opcode is _TEXT
                if self._text:
                    self._utf8 = _utf8_decoder()
                    try:
                        self._parts = [self._utf8.decode(payload)]
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8 in a text message")
                        break
                else:
                    self._parts = [bytes(payload)]
                continue
            if opcode is _CONT:
                message = self._continue(payload, frame.fin)
                if message is None:
                    if self._parts is None:
                        break  # the text was not UTF-8: failed
                    continue
                messages.append(message)
            elif opcode is _PING:
                self.wants_write = True  # the engine answered it
                if not self._ping_allowed():
                    self._fail(1008, "too many pings")
                    break
            elif opcode is _PONG:
                if self.ping_payload is not None and payload == self.ping_payload:
                    self.ping_payload = None
                    self.ponged = True
            elif opcode is _CLOSE:
                code, reason = _parse_close(payload)
                self.closes.append(Close(code, reason, by_client=True))
                self.wants_write = True
        return messages

    def _continue(self, payload: bytes, fin: bool) -> str | bytes | None:
        parts = self._parts
        assert parts is not None  # the engine refuses a continuation out of turn
        if self._text:
            assert self._utf8 is not None
            try:
                parts.append(self._utf8.decode(payload, fin))  # type: ignore[arg-type]
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in a text message")
                return None
        else:
            parts.append(bytes(payload))  # type: ignore[arg-type]
        if not fin:
            return None
        self._parts = None
        self._utf8 = None
        if self._text:
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def _ping_allowed(self) -> bool:
        now = self._now()
        if now - self._ping_start >= self.ping_seconds:
            self._ping_start = now
            self._ping_count = 0
        self._ping_count += 1
        return self._ping_count <= self.max_pings

    def _fail(self, code: int, reason: str) -> None:
        self._parts = None
        self._utf8 = None
        self._proto.fail(code, reason)
        self.wants_write = True

    # ------------------------------------------------------------ output

    def send_ping(self, payload: bytes) -> None:
        """Queue the heartbeat's ping (see :attr:`ponged`)."""
        self.ping_payload = payload
        self.ponged = False
        self._proto.send_ping(payload)
        self.wants_write = True

    def send_close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake (only while :attr:`open`)."""
        self._proto.send_close(code, reason)
        self.wants_write = True

    def data_to_send(self) -> list[bytes]:
        """The frames to write, in order; ``b""`` means: close the transport."""
        self.wants_write = False
        writes = self._proto.data_to_send()
        for i, data in enumerate(writes):
            if data[:1] == b"\x88" and len(data) >= 2:
                # A server close frame: unmasked, its payload under 126 bytes.
                code, reason = _parse_close(data[2:])
                echo = self._guard.close_mid_message
                if code == 1002 and echo is not None:
                    # The client closed between fragments (allowed): answer
                    # its close, not a protocol error.
                    self._guard.close_mid_message = None
                    received = _valid_close(echo)
                    if received is not None:
                        code, reason = received
                        self.closes.append(Close(code, reason, by_client=True))
                        writes[i] = bytes((0x88, len(echo))) + echo
                self.closes.append(Close(code, reason, by_client=False))
        return writes
