"""Read markers, room discovery and topics on the wire: the client frames
``read``, ``rooms`` and ``topic``, and the server events ``read`` and
``rooms`` (docs/protocol.md, *Read markers*, *Rooms and topics*; a topic
change is a ``system`` event).

Parsed here, sans I/O, for :func:`~trio_chat._protocol.parse_client_frame`
and :func:`~trio_chat._protocol.parse_server_frame`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from ._message_events import _Addressed
from ._protocol import ClientEvent
from ._server_events import ServerEvent, _WithRef

if TYPE_CHECKING:
    from ._protocol import _Fields

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_TOPIC_CHARS",
    "ListRooms",
    "MarkRead",
    "ReadMarker",
    "RoomList",
    "SetTopic",
    "parse_room_event",
    "parse_room_frame",
]

#: Longest ``query`` of a ``rooms`` frame.
MAX_QUERY_CHARS = 64
#: Longest room topic.
MAX_TOPIC_CHARS = 256


# ------------------------------------------------------------------ client frames


@attrs.frozen
class MarkRead(ClientEvent):
    """The user has read *room* (or the conversation *with_*) up to *id*."""

    type: ClassVar[str] = "read"
    room: str | None
    with_: str | None
    id: int
    ref: str | None = None


@attrs.frozen
class ListRooms(ClientEvent):
    """The rooms the user may join, optionally those matching *query*.

    *allowed* is not on the wire: the server fills in the patterns of the
    connection's token (None: every room) before the hub answers.
    """

    type: ClassVar[str] = "rooms"
    query: str | None = None
    ref: str | None = None
    allowed: tuple[str, ...] | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class SetTopic(ClientEvent):
    """Set the topic of *room* (``""`` clears it)."""

    type: ClassVar[str] = "topic"
    room: str
    topic: str
    ref: str | None = None


def parse_room_frame(kind: str, fields: _Fields) -> ClientEvent | None:
    """The frame of *kind* (one of this module's) from its payload *fields*;
    None for another kind.  Raises :class:`~trio_chat.ProtocolError` (400)
    for a payload the protocol does not accept."""
    ref = fields.ref
    if kind == "read":
        room, with_ = fields.target()
        id_ = fields.payload.get("id")
        if type(id_) is not int or id_ < 0:  # bool is not an id
            raise fields.fail("payload.id: must be a non-negative integer")
        return MarkRead(room, with_, id_, ref)
    if kind == "rooms":
        query = fields.string("query", optional=True)
        if query is not None and len(query) > MAX_QUERY_CHARS:
            raise fields.fail(f"payload.query: longer than {MAX_QUERY_CHARS} characters")
        return ListRooms(query, ref)
    if kind == "topic":
        room = fields.room()
        topic = fields.string("topic")
        assert topic is not None  # string() raises for a missing required field
        if len(topic) > MAX_TOPIC_CHARS:
            raise fields.fail(f"payload.topic: longer than {MAX_TOPIC_CHARS} characters")
        return SetTopic(room, topic, ref)
    return None


# ------------------------------------------------------------------ server events


@attrs.frozen
class ReadMarker(_Addressed):
    """The user's read marker in *room* (or the conversation *with_*) is *id*."""

    type: ClassVar[str] = "read"
    room: str | None
    with_: str | None
    id: int
    ref: str | None = None

    def payload(self) -> dict[str, Any]:
        return {**self._where(), "id": self.id}


@attrs.frozen
class RoomList(_WithRef):
    """The answer to ``rooms``: ``{room, members, topic}`` items, most
    members first, then by name; *truncated* when more matched."""

    type: ClassVar[str] = "rooms"
    rooms: list[dict[str, Any]]
    truncated: bool
    ref: str | None = None


def parse_room_event(kind: object, p: dict[str, Any], ref: str | None) -> ServerEvent | None:
    """The event of *kind* (``read`` or ``rooms``) with payload *p*; None for
    another kind.  Raises ``KeyError`` for a missing field."""
    if kind == "read":
        room, with_ = p.get("room"), p.get("with")
        if (room is None) == (with_ is None):
            raise KeyError("room")
        return ReadMarker(room, with_, p["id"], ref)
    if kind == "rooms":
        return RoomList(p["rooms"], p["truncated"], ref)
    return None
