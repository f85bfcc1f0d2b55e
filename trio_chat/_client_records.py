"""What the Python client's bookkeeping keeps per message and per room.

:class:`Outgoing` is a chat or direct message on its way, with the ``ref``
it keeps across re-sends; :class:`RoomState` is a room the client is in (or
about to re-join), with the highest message id delivered from it;
:class:`Presence` is the presence the user set.  Pure: no I/O, no trio.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._client_messages import chat_message
from ._client_types import ClientError
from ._protocol import (
    MAX_PRESENCE_TEXT_CHARS,
    MAX_STATUS_CHARS,
    ChatAck,
    ChatMessage,
    DirectAck,
    Joined,
    System,
)

__all__ = ["REF_ROOM", "JoinWaiter", "Outgoing", "Presence", "RoomState", "new_ref"]

#: Room kept for the ``ref`` (and JSON punctuation) when checking frame size.
REF_ROOM = 48


def new_ref() -> str:
    """A fresh ``ref`` (uuid4 hex)."""
    return uuid.uuid4().hex


@attrs.define(eq=False)
class Outgoing:
    """A chat or direct message on its way: queued, sent, or settled.

    ``ref`` is fixed when the message is submitted and reused for every
    re-send.  Once settled, exactly one of ``ack`` and ``error`` is set.
    """

    kind: str  #: "chat" or "direct"
    target: str  #: the room (chat) or the addressee (direct)
    content: str
    ref: str = attrs.field(factory=new_ref)
    #: The connection (serial) it was last written on, None while queued.
    sent_on: int | None = None
    #: The connection it was first written on.
    first_sent_on: int | None = None
    #: Connections that dropped while it was written and unacknowledged.
    drops: int = 0
    ack: ChatAck | DirectAck | None = None
    error: ClientError | None = None
    #: Called once when settled.
    callbacks: list[Callable[[], None]] = attrs.Factory(list)

    @property
    def done(self) -> bool:
        return self.ack is not None or self.error is not None

    def frame(self) -> str:
        if self.kind == "chat":
            payload = {"room": self.target, "content": self.content}
        else:
            payload = {"to": self.target, "content": self.content}
        return json.dumps(
            {"type": self.kind, "payload": payload, "ref": self.ref},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    def problem(self, limits: Mapping[str, Any]) -> ClientError | None:
        """Why the server would refuse it, by the *limits* of ``welcome``
        (413: too long, or too large a frame), or None."""
        chars = limits.get("max_content_chars")
        if isinstance(chars, int) and len(self.content) > chars:
            return ClientError(
                413,
                f"content longer than {chars} characters ({len(self.content)})",
                ref=self.ref,
            )
        limit = limits.get("max_message_bytes")
        if isinstance(limit, int):
            size = len(self.frame().encode()) + REF_ROOM
            if size > limit:
                return ClientError(413, f"frame larger than {limit} bytes ({size})", ref=self.ref)
        return None

    def dropped(self, max_attempts: int | None) -> ClientError | None:
        """Its connection dropped before the ack: queue it again, or give it
        up (the error returned) once on *max_attempts* connections."""
        self.sent_on = None
        self.drops += 1
        if max_attempts is not None and self.drops >= max_attempts:
            return ClientError(
                0, f"not acknowledged after {self.drops} dropped connections", ref=self.ref
            )
        return None

    def settle(self, ack: ChatAck | DirectAck | None, error: ClientError | None) -> None:
        if self.done:
            return
        self.ack, self.error = ack, error
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


@attrs.define
class Presence:
    """The presence the user set: sent on every connection until changed."""

    #: The status and its text, once set.
    status: tuple[str, str | None] | None = None
    #: The ``ref`` of the frame last written (a 429 names it).
    ref: str | None = None
    #: The connection (serial) it was written on.
    sent_on: int | None = None

    def set(self, status: str, text: str | None) -> None:
        """Set it; raises :class:`ClientError` 400 for what the server refuses."""
        if not isinstance(status, str) or not 0 < len(status) <= MAX_STATUS_CHARS:
            raise ClientError(400, f"status must be 1 to {MAX_STATUS_CHARS} characters")
        if text is not None and (not isinstance(text, str) or len(text) > MAX_PRESENCE_TEXT_CHARS):
            raise ClientError(400, f"text must be at most {MAX_PRESENCE_TEXT_CHARS} characters")
        self.status = (status, text)
        self.sent_on = None

    def due(self, serial: int) -> bool:
        """Whether connection *serial* is still to be told."""
        return self.status is not None and self.sent_on != serial

    def frame(self, serial: int) -> str:
        """The frame to write on connection *serial* (with a new ``ref``)."""
        assert self.status is not None
        self.sent_on, self.ref = serial, new_ref()
        status, text = self.status
        payload: dict[str, Any] = {"status": status}
        if text is not None:
            payload["text"] = text
        return json.dumps(
            {"type": "presence", "payload": payload, "ref": self.ref}, ensure_ascii=False
        )


JoinWaiter = Callable[["Joined | ClientError"], None]


@attrs.define
class RoomState:
    """A room the client is in, was in, or is about to (re-)join."""

    name: str
    #: The user wants to be in the room (re-joined after every reconnect).
    wanted: bool = True
    #: Joined at least once: ``last_id`` is a position to resume from.
    anchored: bool = False
    #: Highest message id delivered from this room.
    last_id: int = 0
    #: The ``since`` sent with this connection's join (0: none).
    floor: int = 0
    #: The room's numbering as the server last named it (``joined.epoch``).
    epoch: str | None = None
    #: Serial of the connection the ``join`` went out on / was answered on.
    join_sent_on: int | None = None
    joined_on: int | None = None
    members: set[str] = attrs.Factory(set)
    #: The latest ``joined`` answer, without its history.
    info: Joined | None = None
    join_waiters: list[JoinWaiter] = attrs.Factory(list)
    leave_waiters: list[Callable[[], None]] = attrs.Factory(list)

    def accept(self, message_id: int, *, live: bool) -> bool:
        """Whether message *message_id* is new; records it if so.

        *live* means it arrived on the current connection after the join
        (a live ``chat`` or the ack of a message first sent on it): such a
        message can only have an id at or below ``floor`` if the server
        started the room again, in which case the position is reset.
        """
        if message_id > self.last_id:
            self.last_id = message_id
            return True
        if live and message_id <= self.floor:
            self.last_id = message_id
            self.floor = 0
            return True
        return False

    def take_joined(self, joined: Joined, serial: int) -> list[ChatMessage]:
        """The room is joined on connection *serial*, as *joined* says:
        keep its members and answer; return the messages of its history
        that are new, in id order."""
        history = [m for m in map(chat_message, joined.history) if m is not None]
        if joined.epoch is not None:
            if self.epoch is not None and joined.epoch != self.epoch:
                self.last_id = 0  # the server started this room again
            self.epoch = joined.epoch
            self.floor = 0  # the epoch tells: no guessing from ids
        elif self.floor and any(m.id <= self.floor for m in history):
            self.last_id = 0  # the server started this room again
            self.floor = 0
        new = [message for message in history if self.accept(message.id, live=False)]
        self.anchored = True
        self.joined_on = serial
        self.join_sent_on = serial
        self.members = set(joined.members)
        self.info = attrs.evolve(joined, history=[])
        return new

    def take_system(self, event: System) -> None:
        """A member joined or left, or the topic changed (``""``: cleared)."""
        if event.event == "join":
            self.members.add(event.user_id)
        elif event.event == "leave":
            self.members.discard(event.user_id)
        elif event.event == "topic" and self.info is not None:
            self.info = attrs.evolve(self.info, topic=event.text or None)

    def settle_join(self, result: Joined | ClientError) -> None:
        waiters, self.join_waiters = self.join_waiters, []
        for waiter in waiters:
            waiter(result)

    def settle_leave(self) -> None:
        waiters, self.leave_waiters = self.leave_waiters, []
        for waiter in waiters:
            waiter()
