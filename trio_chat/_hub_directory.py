"""The hub's listings and markers: read markers, the room directory with its
topics, and the list of a user's conversations.

* ``read`` moves the user's marker in a room or conversation (never back,
  never past the newest id) and tells every connection of the user, the
  sender's with its ``ref``; ``joined`` and ``conversations`` carry the
  marker with the unread and mention counts after it.
* ``rooms`` lists the rooms the user's token allows, most members first,
  then by name, optionally filtered by a query on name and topic, looking
  at no more than :data:`MAX_EXAMINED` rooms of that order (the ordering
  is kept by the room table as rooms change, not sorted per request).
* ``topic`` sets a room's topic; its members get a ``system`` ``topic``.

Listings hold at most :data:`MAX_LISTED` items and at most the state's
``joined_bytes`` encoded.  Pure and synchronous, like the hub state it
works on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._auth import room_allowed
from ._conversations import direct_payload
from ._hub_messages import find_target
from ._log import RoomLog
from ._protocol import ConversationList, System
from ._room_core import Delivery, Key, Reply
from ._room_frames import ListRooms, MarkRead, ReadMarker, RoomList, SetTopic
from ._room_table import DirectoryEntry
from ._sizes import payload_bound, utf8_len

if TYPE_CHECKING:
    from ._hub_state import HubState

__all__ = [
    "JOINED_OVERHEAD",
    "MAX_EXAMINED",
    "MAX_LISTED",
    "conversation_list",
    "joined_budget",
    "list_conversations",
    "list_rooms",
    "mark_read",
    "room_list",
    "set_topic",
    "unread_counts",
]

#: Bytes of a ``joined`` frame (or a listing) besides its items.
JOINED_OVERHEAD = 200
#: Bytes of one item of a listing besides its names, topic and message.
_LISTED_OVERHEAD = 120
#: Items one listing holds at most.
MAX_LISTED = 100
#: Rooms one ``rooms`` looks at, at most, in the directory's order: what a
#: query or a token's patterns cost the hub is bounded by it.
MAX_EXAMINED = 2000


def joined_budget(budget: int, room: str, members: Iterable[str]) -> int:
    """What is left of *budget* for a ``joined``'s history after the rest."""
    return budget - JOINED_OVERHEAD - len(room) - sum(utf8_len(m) + 3 for m in members)


def unread_counts(state: HubState, user_id: str, log: RoomLog) -> tuple[int, int, int]:
    """*user_id*'s marker in *log*, and how many retained messages after it
    are from others (not deleted), and how many of those mention them."""
    read = state.markers.get(user_id, log)
    unread, mentions = log.unread(user_id, read)
    return read, unread, mentions


def mark_read(state: HubState, key: Key, user_id: str, event: MarkRead) -> list[Delivery]:
    """Apply a ``read`` of *user_id* from connection *key*."""
    target = find_target(state, user_id, event.room, event.with_, event.ref)
    moved = state.markers.move(user_id, target.log, event.id)
    marker = ReadMarker(event.room, event.with_, state.markers.get(user_id, target.log))
    if moved is None:
        # Already there (or further): only the sender is answered.
        return state.answer(key, ReadMarker(event.room, event.with_, marker.id, event.ref))
    others = tuple(k for k in state.connections_of(user_id) if k != key)
    deliveries = [Delivery(marker, others)] if others else []
    return deliveries + state.answer(key, ReadMarker(event.room, event.with_, moved, event.ref))


def set_topic(
    state: HubState, reply_to: Key | Reply | None, user_id: str, event: SetTopic
) -> list[Delivery]:
    """Set *event*'s room's topic as *user_id*: every connection in the room
    gets a ``system`` ``topic``, *reply_to* with the frame's ``ref``."""
    audience = [k for k in state.change_topic(event.room, event.topic, event.ref) if k != reply_to]
    system = System("topic", event.room, user_id, event.topic)
    deliveries = [Delivery(system, tuple(audience))]
    return deliveries + state.answer(
        reply_to, System("topic", event.room, user_id, event.topic, event.ref)
    )


def list_rooms(state: HubState, key: Key, event: ListRooms) -> list[Delivery]:
    """Answer a ``rooms``: the rooms *event*'s token allows (and its query
    matches), most members first, then by name."""
    return [Delivery(room_list(state.directory(), event, state.joined_bytes), (key,))]


def room_list(
    directory: Iterable[DirectoryEntry], event: ListRooms, budget: int, more: bool = False
) -> RoomList:
    """The answer to *event* from the *directory*'s rooms, in its order
    (most members first, then by name), within *budget* bytes (the state's
    ``joined_bytes``) and :data:`MAX_EXAMINED` rooms looked at; *more*: the
    directory holds rooms beyond those given."""
    query = event.query.casefold() if event.query else None
    allowed = event.allowed
    items: list[dict[str, Any]] = []
    budget -= JOINED_OVERHEAD
    truncated = more
    for examined, (name, members, topic, folded) in enumerate(directory):
        if examined == MAX_EXAMINED:
            truncated = True
            break
        if allowed is not None and not room_allowed(name, allowed):
            continue
        if query is not None and query not in folded:
            continue
        cost = _LISTED_OVERHEAD + len(name) + (6 * len(topic) if topic else 0)
        if len(items) == MAX_LISTED or cost > budget:
            truncated = True
            break
        budget -= cost
        items.append({"room": name, "members": members, "topic": topic})
    return RoomList(items, truncated, event.ref)


def conversation_list(state: HubState, user_id: str, ref: str | None) -> ConversationList:
    """*user_id*'s conversations, most recent first, each with the user's
    read marker and unread counts."""
    items = (
        (other, log, state.markers.get(user_id, log))
        for other, log in state.conversations.of(user_id)
    )
    return list_conversations(items, user_id, state.joined_bytes, ref)


def list_conversations(
    items: Iterable[tuple[str, RoomLog, int]], user_id: str, joined_bytes: int, ref: str | None
) -> ConversationList:
    """The ``conversations`` answer for *user_id*'s *items* (the other user,
    the log, the user's read marker in it), most recent first, within the
    listing bounds (*joined_bytes* encoded at most)."""
    listed: list[dict[str, Any]] = []
    budget = joined_bytes - JOINED_OVERHEAD
    truncated = False
    for other, log, read in items:
        last = log.entries[-1][0] if log.entries else None
        cost = _LISTED_OVERHEAD + 2 * utf8_len(other)
        if last is not None:
            cost += payload_bound(last.payload())
        if len(listed) == MAX_LISTED or cost > budget:
            truncated = True
            break
        budget -= cost
        unread, mentions = log.unread(user_id, read)
        item: dict[str, Any] = {"with": other, "last_id": log.last_id}
        item.update(read=read, unread=unread, mentions=mentions)
        item["last"] = direct_payload(last) if last is not None else None
        listed.append(item)
    return ConversationList(listed, truncated, ref)
