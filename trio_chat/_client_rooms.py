"""The Python client's read markers, room listings and topics, sans I/O.

:class:`ReadMarkers` keeps, per room and per direct conversation, the
user's read marker as the server last told it, and the ``read`` call on its
way: a marker that would not move forward is answered at once and never
sent; at most one ``read`` frame of a room or a conversation goes out every
:data:`READ_EVERY` seconds, and the calls made meanwhile share the one
queued, which asks for the furthest of their ids.  :func:`room_frame` checks
a ``rooms`` or ``topic`` request the way the server would and gives its
frame; :class:`RoomListing` is the typed answer to ``rooms``.  Pure: no I/O,
no trio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from ._client_calls import Call, CallBook
from ._client_types import ClientError
from ._protocol import encode_client_event, is_valid_room, is_valid_user_id
from ._room_frames import (
    MAX_QUERY_CHARS,
    MAX_TOPIC_CHARS,
    ListRooms,
    MarkRead,
    ReadMarker,
    RoomList,
    SetTopic,
)

__all__ = [
    "READ_EVERY",
    "ReadMarkers",
    "RoomInfo",
    "RoomListing",
    "room_frame",
    "room_listing",
]

#: Seconds between two ``read`` frames of one room or conversation.
READ_EVERY = 1.0

#: A room (``room``, None) or a direct conversation (None, ``with``).
_Target = tuple[str | None, str | None]


@attrs.frozen
class RoomInfo:
    """A room the user may join: ``members`` users are in it, ``topic`` is
    its topic (None: none set)."""

    room: str
    members: int
    topic: str | None


@attrs.frozen
class RoomListing:
    """The rooms the user may join, most members first, then by name: the
    answer to ``rooms``; ``truncated`` when more matched."""

    rooms: tuple[RoomInfo, ...]
    truncated: bool

    def __iter__(self) -> Iterator[RoomInfo]:
        return iter(self.rooms)

    def __len__(self) -> int:
        return len(self.rooms)


def room_listing(answer: RoomList) -> RoomListing:
    """The typed listing of *answer* (entries that are not rooms are left out)."""
    entries = []
    items: object = answer.rooms  # from the network: checked
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name, members, topic = item.get("room"), item.get("members"), item.get("topic")
        if isinstance(name, str) and type(members) is int:
            entries.append(RoomInfo(name, members, topic if isinstance(topic, str) else None))
    return RoomListing(tuple(entries), answer.truncated is True)


def _checked(frame: str, limits: Mapping[str, Any]) -> str:
    limit = limits.get("max_message_bytes")
    if isinstance(limit, int) and len(frame.encode()) > limit:
        raise ClientError(413, f"frame larger than {limit} bytes ({len(frame.encode())})")
    return frame


def room_frame(event: ListRooms | SetTopic, limits: Mapping[str, Any], joined: bool) -> str:
    """The frame of *event* (its ``ref`` set), checked first; *joined*
    tells whether the user wants to be in a ``topic``'s room.

    Raises :class:`ClientError`: 400 for a ``query`` over 64 characters, a
    bad room name, a topic that is not a string of at most 256 characters;
    403 for a room not joined.
    """
    if isinstance(event, ListRooms):
        query = event.query
        if query is not None and (not isinstance(query, str) or len(query) > MAX_QUERY_CHARS):
            raise ClientError(400, f"query must be at most {MAX_QUERY_CHARS} characters")
    else:
        if not is_valid_room(event.room):
            raise ClientError(400, f"not a valid room name: {event.room!r}")
        if not joined:
            raise ClientError(403, f"join room {event.room!r} first")
        if not isinstance(event.topic, str) or len(event.topic) > MAX_TOPIC_CHARS:
            raise ClientError(400, f"topic must be at most {MAX_TOPIC_CHARS} characters")
    return _checked(encode_client_event(event), limits)


@attrs.define
class _Marker:
    """One room's or conversation's marker, and its ``read`` call."""

    #: The marker as the server last told it (0: none).
    read: int = 0
    #: The ``read`` call queued or in flight, and the id it asks for.
    call: Call | None = None
    asked: int = 0
    #: When its last ``read`` frame was written.
    sent_at: float = -math.inf


@attrs.define
class ReadMarkers:
    """The user's read markers, and the ``read`` calls on their way."""

    markers: dict[_Target, _Marker] = attrs.Factory(dict)

    def read(self, room: str | None, with_: str | None = None) -> int:
        """The marker of *room* (or the conversation *with_*) as last told."""
        marker = self.markers.get((room, with_))
        return marker.read if marker is not None else 0

    def request(
        self,
        event: MarkRead,
        calls: CallBook,
        limits: Mapping[str, Any],
        joined: Callable[[str], bool],
    ) -> Call | ReadMarker:
        """The call that moves the marker to *event*'s id (its ``ref`` set):
        a new one, or the one queued (asking now for *event*'s id if that is
        further) or in flight (if it asks as far); or the marker as it is,
        when *event* would not move it.

        Raises :class:`ClientError`: 400 for both or neither of ``room`` and
        ``with``, a bad name, user id or id; 403 for a room *joined* says
        the user is not in.
        """
        room, peer = event.room, event.with_
        if (room is None) == (peer is None):
            raise ClientError(400, "name either a room or a user (with_), not both")
        if room is not None:
            if not is_valid_room(room):
                raise ClientError(400, f"not a valid room name: {room!r}")
            if not joined(room):
                raise ClientError(403, f"join room {room!r} first")
        elif not is_valid_user_id(peer):
            raise ClientError(400, f"not a valid user id: {peer!r}")
        if type(event.id) is not int or event.id < 0:
            raise ClientError(400, f"message ids are integers >= 0, not {event.id!r}")
        marker = self.markers.setdefault((room, peer), _Marker())
        if event.id <= marker.read:
            return ReadMarker(room, peer, marker.read)
        call = marker.call
        if call is not None and not call.done:
            if not call.written:
                if event.id > marker.asked:
                    marker.asked = event.id
                    further = attrs.evolve(event, ref=call.ref)
                    call.frame = _checked(encode_client_event(further), limits)
                return call
            if marker.asked >= event.id:
                return call
        assert event.ref is not None
        frame = _checked(encode_client_event(event), limits)
        marker.call = calls.submit(event.ref, frame, room=room, resend=True, marker=True)
        marker.asked = event.id
        return marker.call

    def next_frame(self, now: float, joined_now: Callable[[str], bool]) -> str | float | None:
        """The next ``read`` frame to write now, or seconds to wait, or None.

        A room's waits until *joined_now* says it is joined on this connection.
        """
        wait: float | None = None
        for marker in self.markers.values():
            call = marker.call
            if call is None or call.done or call.written:
                continue
            if call.room is not None and not joined_now(call.room):
                continue
            due = marker.sent_at + READ_EVERY - now
            if due > 0:
                wait = due if wait is None else min(wait, due)
                continue
            marker.sent_at = now
            call.written = True
            return call.frame
        return wait

    def told(self, event: ReadMarker, calls: CallBook) -> None:
        """The server told the marker *event*: a queued call it reaches is
        answered with it, unsent."""
        marker = self.markers.setdefault((event.room, event.with_), _Marker())
        marker.read = max(marker.read, event.id)
        call = marker.call
        if call is not None and not call.done and not call.written and marker.asked <= marker.read:
            calls.settle(call, ReadMarker(event.room, event.with_, marker.read))

    def moved(self, room: str | None, with_: str | None, id: int | None) -> None:
        """The user's own message *id* there moved the marker (posting does)."""
        if id is not None:
            marker = self.markers.setdefault((room, with_), _Marker())
            marker.read = max(marker.read, id)

    def joined(self, room: str, read: int | None) -> None:
        """A ``joined`` says the marker of *room* is *read* (0 after the
        room's ids started over; None: the server keeps no markers)."""
        if read is not None:
            self.markers.setdefault((room, None), _Marker()).read = read
