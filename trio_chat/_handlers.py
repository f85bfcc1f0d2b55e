"""What an endpoint does with each message of a connection: chat or echo.

A :class:`~trio_chat._connection.Connection`'s reader calls its handler with
every complete message, in the reader's own task:

* :class:`ChatHandler` parses the frame, counts invalid ones, applies the
  rate limits and the token's permissions, screens it (mutes and the
  embedder's policy) and passes it to the hub, or answers an ``error``;
* :class:`EchoHandler` sends each message back as it came.

:func:`welcome_frame` is the chat endpoint's first frame.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING

import attrs
import trio

from ._frames import text_frame
from ._message_frames import MessageFrame
from ._policy import Pending, Sender
from ._protocol import (
    Chat,
    Command,
    Direct,
    Join,
    ListConversations,
    Presence,
    ProtocolError,
    Welcome,
    parse_client_frame,
)
from ._ratelimit import RateLimiter
from ._room_frames import ListRooms, SetTopic

if TYPE_CHECKING:
    from ._auth import Identity
    from ._commands import Commands
    from ._config import Config
    from ._connection import Connection
    from ._hub import Hub
    from ._metrics import Metrics
    from ._policy import Screen

__all__ = ["ChatHandler", "EchoHandler", "control_rate", "welcome_frame"]

log = logging.getLogger("trio_chat.connection")

#: Invalid frames among the last INVALID_WINDOW frames that close a
#: connection with 1008 (a ratio, so that a valid frame now and then does not
#: reset the count).
MAX_INVALID = 20
INVALID_WINDOW = 64
_WINDOW_MASK = (1 << INVALID_WINDOW) - 1
#: Rate-limit errors in one window after which a connection is closed (1008).
MAX_RATE_STRIKES = 3

_RATED = (Chat, Direct, Presence, Command, MessageFrame, ListConversations, ListRooms, SetTopic)
#: Frames about direct conversations besides those naming one (``with``).
_CONVERSING = (Direct, ListConversations)
#: join/leave/typing frames a window allows: this many times the rated
#: frames, and at least CONTROL_RATE_FLOOR.  Pings get the same allowance.
CONTROL_RATE_FACTOR = 4
CONTROL_RATE_FLOOR = 100


def control_rate(config: Config) -> int:
    """join/leave/typing frames, and pings, allowed per ``rate_seconds``."""
    return max(config.rate_messages * CONTROL_RATE_FACTOR, CONTROL_RATE_FLOOR)


def welcome_frame(session_id: str, user_id: str, config: Config) -> bytes:
    head, middle, tail = _welcome_template(
        config.max_message_bytes,
        config.max_content_chars,
        config.rate_messages,
        config.rate_seconds,
        config.ping_interval,
        reactions=config.reactions,
    )
    return text_frame(head + _json_string(session_id) + middle + _json_string(user_id) + tail)


#: A JSON string literal, exactly as the protocol's compact JSON writes it.
_json_string = json.encoder.encode_basestring
_SESSION_MARK = "\x00session"
_USER_MARK = "\x00user"


@functools.lru_cache(maxsize=8)
def _welcome_template(
    max_message_bytes: int,
    max_content_chars: int,
    rate_messages: int,
    rate_seconds: float,
    ping_interval: float,
    *,
    reactions: tuple[str, ...],
) -> tuple[str, str, str]:
    """The ``welcome`` frame's text around its two strings: the same for
    every connection of a server but those (encoded once, not per connection)."""
    limits = {
        "max_message_bytes": max_message_bytes,
        "max_content_chars": max_content_chars,
        "rate": {"messages": rate_messages, "per_seconds": rate_seconds},
        "ping_interval_seconds": ping_interval,
        "reactions": list(reactions),
    }
    text = Welcome(_SESSION_MARK, _USER_MARK, limits).to_json()
    head, _, rest = text.partition(_json_string(_SESSION_MARK))
    middle, _, tail = rest.partition(_json_string(_USER_MARK))
    return head, middle, tail


class ChatHandler:
    """The chat endpoint's reader logic for one connection."""

    def __init__(
        self,
        conn: Connection,
        hub: Hub,
        identity: Identity,
        metrics: Metrics | None = None,
        *,
        screen: Screen | None = None,
        commands: Commands | None = None,
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.identity = identity
        self.metrics = metrics
        #: Mutes and the embedder's policy (``_policy.py``), when any.
        self.screen = screen
        self._sender: Sender | None = None
        #: The embedder's commands (``_commands.py``), and this connection's
        #: calls of them still running.
        self.commands = commands
        self.commands_running = 0
        config = conn.config
        self.max_bytes = config.max_message_bytes
        self.max_chars = config.max_content_chars
        self.limiter = RateLimiter(config.rate_messages, config.rate_seconds)
        #: join, leave and typing are outside the protocol's rate, but each
        #: can make the server write to a whole room: a much wider window
        #: keeps a flood of them from amplifying without bound.
        self.control_limiter = RateLimiter(control_rate(config), config.rate_seconds)
        #: One bit per recent frame, 1 for invalid (the last INVALID_WINDOW).
        self.recent_invalid = 0

    async def __call__(self, message: str | bytes) -> None:
        conn = self.conn
        try:
            if isinstance(message, bytes):
                raise ProtocolError(400, "binary frames are not accepted; send JSON text")
            if len(message) * 4 > self.max_bytes and len(message.encode()) > self.max_bytes:
                conn.close(1009, f"frame larger than {self.max_bytes} bytes")
                return
            event = parse_client_frame(message, max_content_chars=self.max_chars)
        except ProtocolError as err:
            self._refuse(err)
            recent = self.recent_invalid = ((self.recent_invalid << 1) | 1) & _WINDOW_MASK
            if recent.bit_count() >= MAX_INVALID:
                conn.close(1008, f"{MAX_INVALID} invalid frames among the last {INVALID_WINDOW}")
            return
        except Exception:
            log.exception("unexpected error reading a frame from %s", conn.user_id)
            self._refuse(ProtocolError(500, "internal server error"))
            return
        self.recent_invalid = (self.recent_invalid << 1) & _WINDOW_MASK
        limiter = self.limiter if isinstance(event, _RATED) else self.control_limiter
        retry = limiter.check(trio.current_time())
        if retry is not None:
            if self.metrics is not None:
                self.metrics.rate_limited += 1
            if limiter.strikes > MAX_RATE_STRIKES:
                conn.close(1008, "still flooding after rate-limit errors")
                return
            self._refuse(
                ProtocolError(
                    429,
                    f"rate limit exceeded: retry in {retry} ms",
                    getattr(event, "ref", None),  # typing notices carry no ref
                    retry,
                )
            )
            return
        if isinstance(event, Join) and not self.identity.may_join(event.room):
            self._refuse(ProtocolError(403, f"not allowed to join room {event.room!r}", event.ref))
            return
        if (
            isinstance(event, _CONVERSING) or getattr(event, "with_", None) is not None
        ) and not self.identity.may_direct():
            # Refused whoever the recipient: no probing who is connected.
            doing = "send direct messages" if isinstance(event, Direct) else "use conversations"
            self._refuse(ProtocolError(403, f"not allowed to {doing}", getattr(event, "ref", None)))
            return
        if isinstance(event, ListRooms) and self.identity.rooms is not None:
            event = attrs.evolve(event, allowed=self.identity.rooms)
        if isinstance(event, Command):
            if self.commands is None:
                self._refuse(ProtocolError(404, f"no command named {event.name!r}", event.ref))
            else:
                self.commands.start(self, event)
            return
        screen = self.screen
        if screen is not None and screen.active:
            try:
                checked = screen.check(self.sender, event)
                event = await screen.finish(checked) if isinstance(checked, Pending) else checked
            except ProtocolError as err:
                self._refuse(err)
                return
        await self.hub.submit(conn.outlet, event)

    @property
    def sender(self) -> Sender:
        """Who this connection is, for the embedder's policy and commands."""
        if self._sender is None:
            conn = self.conn
            self._sender = Sender(conn.user_id, conn.session_id, conn.peer)
        return self._sender

    def _refuse(self, err: ProtocolError) -> None:
        self.hub.counters.error(err.code)
        self.conn.send_error(err)


class EchoHandler:
    """The echo endpoint: every message goes back to its sender as it came."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def __call__(self, message: str | bytes) -> None:
        self.conn.send_message(message)
