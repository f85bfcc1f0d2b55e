"""Event streams: what happens in rooms, for an embedding program.

``async with server.subscribe(rooms=..., users=...) as events:`` opens an
:class:`EventStream`; ``async for event in events:`` yields the server
events the hub sends out, as the typed classes clients parse them into, in
the order the hub sends them:

* :class:`~trio_chat.ChatMessage` -- every message of a room, with its id;
* :class:`~trio_chat.System` -- ``join`` and ``leave`` (a user's first
  connection in, last one out; also into and out of an empty room, which
  no member sees), and the moderation events;
* :class:`~trio_chat.PresenceUpdate` -- a user's status;
* :class:`~trio_chat.DirectMessage` -- direct messages (``users`` only);
* :class:`~trio_chat.TypingNotice` -- only with ``typing=True``;
* :class:`~trio_chat.MessageEdited`, :class:`~trio_chat.MessageDeleted`,
  :class:`~trio_chat.ReactionChanged` -- a message's new text, its
  deletion (``by`` whom), a reaction turned on or off (once each, whoever
  receives it).

``rooms`` keeps the events of those rooms (a presence update: of a user who
is in one of them); ``users`` keeps those whose ``user_id`` (a direct
message's ``from``) is one of them; both None: everything.  Answers to one
connection (``joined``, ``ack``, ``error``) are not events of a room and are
not in the stream.

**Bounded, and what overflow does.** A stream holds at most ``max_events``
events and ``max_bytes`` bytes (their JSON) that its reader has not taken.
A reader that falls that far behind is dropped, as a slow client is: the
stream takes nothing more, the reader gets every event queued up to that
point, and then :class:`StreamOverflow`.  Nothing is skipped silently: what
came before the exception is complete and in order; what came after can be
read from the rooms' history (a bot's ``join`` with ``since``).

The hub offers each batch of deliveries to :class:`Observers` (its
``observer`` hook) in its own task, synchronously; a stream's queue is
filled there and never makes the hub wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import trio

from ._message_events import MessageDeleted, MessageEdited, ReactionChanged
from ._protocol import (
    ChatMessage,
    DirectMessage,
    PresenceUpdate,
    ServerEvent,
    System,
    TypingNotice,
    parse_server_frame,
)

if TYPE_CHECKING:
    from ._hub import Hub
    from ._hub_state import Delivery

__all__ = ["EventStream", "Observers", "StreamClosed", "StreamOverflow"]

#: Changes to a message: the copy with a ``ref`` (the sender's) is left out.
_CHANGES = (MessageEdited, MessageDeleted, ReactionChanged)
_ROOM_EVENTS = (ChatMessage, System, TypingNotice, *_CHANGES)


class StreamClosed(Exception):
    """The server ended an event stream or a bot (a kick, for a bot)."""


class StreamOverflow(StreamClosed):
    """An event stream (or a bot) fell too far behind and was dropped."""


class EventStream:
    """One subscription's bounded queue; iterate it with ``async for``."""

    def __init__(
        self,
        rooms: Iterable[str] | None,
        users: Iterable[str] | None,
        *,
        typing: bool,
        max_events: int,
        max_bytes: int,
    ) -> None:
        self.rooms = None if rooms is None else frozenset(rooms)
        self.users = None if users is None else frozenset(users)
        self.typing = typing
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._queue: deque[tuple[ServerEvent, int]] = deque()
        self._bytes = 0
        self._wake = trio.Event()
        #: Set when the stream takes nothing more: why, or "" (closed by
        #: its owner: the iteration just ends).
        self.ended: str | None = None
        self.overflowed = False
        #: Events queued in all, and events that would have overflowed.
        self.received = 0

    # ------------------------------------------------------------ hub side

    def wants(self, event: ServerEvent, members: Any) -> bool:
        """Whether this stream's filters keep *event*."""
        if type(event) is TypingNotice and not self.typing:
            return False
        users = self.users
        if users is not None:
            actor = event.from_ if type(event) is DirectMessage else getattr(event, "user_id", None)
            if actor not in users:
                return False
        rooms = self.rooms
        if rooms is None:
            return True
        if isinstance(event, _ROOM_EVENTS):
            return event.room in rooms
        if type(event) is PresenceUpdate:
            return any(event.user_id in members(room) for room in rooms)
        return False  # direct messages have no room

    def put(self, event: ServerEvent, size: int) -> None:
        """Queue *event* (*size* bytes of JSON); past a bound, end the stream."""
        if self.ended is not None:
            return
        if len(self._queue) >= self.max_events or self._bytes + size > self.max_bytes:
            self.overflowed = True
            self.ended = (
                f"event stream overflowed: more than {self.max_events} events or"
                f" {self.max_bytes} bytes not read"
            )
        else:
            self._queue.append((event, size))
            self._bytes += size
            self.received += 1
        self._wake.set()

    def close(self, reason: str = "") -> None:
        if self.ended is None:
            self.ended = reason
        self._wake.set()

    # ------------------------------------------------------------ reader side

    def __aiter__(self) -> AsyncIterator[ServerEvent]:
        return self

    async def __anext__(self) -> ServerEvent:
        while not self._queue:
            if self.ended is not None:
                if self.overflowed:
                    raise StreamOverflow(self.ended)
                if self.ended:
                    raise StreamClosed(self.ended)
                raise StopAsyncIteration
            self._wake = trio.Event()
            await self._wake.wait()
        event, size = self._queue.popleft()
        self._bytes -= size
        return event

    async def receive(self) -> ServerEvent:
        """The next event (one step of ``async for``)."""
        return await self.__anext__()

    @property
    def backlog(self) -> int:
        """Events queued and not yet read."""
        return len(self._queue)


class Observers:
    """The streams attached to one hub, offered every delivery it makes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.streams: list[EventStream] = []

    def add(self, stream: EventStream) -> None:
        self.streams.append(stream)
        self.hub.observer = self.see

    def remove(self, stream: EventStream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)
        stream.close()
        if not self.streams:
            self.hub.observer = None

    def close_all(self) -> None:
        for stream in list(self.streams):
            self.remove(stream)

    def see(self, deliveries: list[Delivery]) -> None:
        """The hub's observer: runs in the hub task, never blocks."""
        members = getattr(self.hub.state, "members", _nobody)
        streams = self.streams
        for delivery in deliveries:
            event = delivery.event
            if not isinstance(event, ServerEvent):
                # Already encoded (the backplane): read it back.
                try:
                    event = parse_server_frame(event.to_json())
                except ValueError:
                    continue
            if not isinstance(event, (*_ROOM_EVENTS, PresenceUpdate, DirectMessage)):
                continue
            if isinstance(event, _CHANGES) and event.ref is not None:
                continue
            size = 0
            for stream in streams:
                if stream.ended is None and stream.wants(event, members):
                    if not size:
                        text = event.to_json()
                        size = len(text) if text.isascii() else len(text.encode())
                    stream.put(event, size)


def _nobody(room: str) -> list[str]:
    return []
