"""Topics, the room directory and closing rooms with the Redis store.

The rules are the other stores' (docs/protocol.md, *Rooms and topics*);
what differs is where a room's topic is kept and who orders its changes:

* a ``topic`` (or a moderator's :meth:`ClusterDirectory.set_topic`) is set
  in Redis by a script (:class:`~trio_chat._backplane_ops.TopicOp`) that
  takes the room's next membership version and publishes the change, so
  that every process serving the room orders it with the joins and leaves,
  keeps the new topic for its ``joined`` and tells its members; the
  process that sent it does so from the script's answer, which also
  answers the sender;
* a room's load (:class:`~trio_chat._backplane_ops.LoadOp`) reads its
  topic, and so does a read of its members after news was found lost;
* a ``rooms`` reads the first :data:`~trio_chat._hub_directory.MAX_EXAMINED`
  rooms of the cluster's directory, which Redis keeps in the order it lists
  them (most member users across the cluster first, then by name) as
  members join and leave anywhere (:class:`~trio_chat._backplane_ops.RoomsOp`,
  one round trip); the answer is cut from them by the other stores' rule
  (:func:`~trio_chat._hub_directory.room_list`: the token's patterns, the
  query, the bounds);
* a moderator's :meth:`ClusterDirectory.close_room` is one script
  (:class:`~trio_chat._backplane_ops.CloseOp`) that removes the room's
  members on every process from Redis, drops its keys and publishes the
  close with the room's next membership version: each process serving the
  room removes its own member connections from it, with the events the
  other stores send (``system`` ``close``, then ``left``), and forgets it.

Pure and synchronous like the rest of the state: no I/O.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._backplane_logs import ServedRoom
from ._backplane_messages import ClusterMessages
from ._backplane_ops import UNAVAILABLE, CloseOp, MemberOp, MembersOp, RoomsOp, TopicOp
from ._hub_directory import MAX_EXAMINED, room_list
from ._protocol import ClientEvent, ProtocolError, System
from ._room_core import Conn, Delivery, Key, Reply
from ._room_frames import ListRooms, SetTopic
from ._room_table import directory_entry

__all__ = ["MAX_CLOSE_COUNTS", "ClusterDirectory"]

#: Closes of this process whose news came before their answer, whose
#: counts are kept for it at most.
MAX_CLOSE_COUNTS = 64


@attrs.define
class ClusterDirectory(ClusterMessages):
    """The rooms of :class:`~trio_chat._backplane_messages.ClusterMessages`,
    with their topics, the cluster's directory and closing rooms."""

    #: (room, version) -> connections a close of this process removed here,
    #: for its answer that comes after.
    _close_counts: dict[tuple[str, int], int] = attrs.field(init=False, factory=dict)

    def set_topic(
        self, room: str, topic: str, by: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Set *room*'s topic as *by* (a moderator, the embedding program),
        on every process; *reply_to* gets the ``system`` ``topic`` once
        Redis has it (404 if there is no such room)."""
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE)
        self._ops.append(TopicOp(room, topic, by, "-", None, reply_to))
        return []

    def _extended(self, key: Key, conn: Conn, event: ClientEvent, now: float) -> list[Delivery]:
        if isinstance(event, SetTopic):
            self._member(conn, event.room, "setting the topic of", event.ref)
            if not self.up:
                raise ProtocolError(503, UNAVAILABLE, event.ref)
            op = TopicOp(event.room, event.topic, conn.user_id, conn.origin, event.ref, key)
            self._ops.append(op)
            return []
        if isinstance(event, ListRooms):
            if not self.up:
                raise ProtocolError(503, UNAVAILABLE, event.ref)
            self._ops.append(RoomsOp(event, MAX_EXAMINED, key))
            return []
        return super()._extended(key, conn, event, now)

    def _rooms_result(self, op: RoomsOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.request.ref))
        more, rooms = result
        directory = (directory_entry(name, n, topic or None) for name, n, topic in rooms)
        return self.answer(op.reply_to, room_list(directory, op.request, self.joined_bytes, more))

    def _topic_result(self, op: TopicOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.ref))
        if result[0] != "ok":
            error = ProtocolError(404, f"room {op.room!r} does not exist", op.ref)
            return self.answer(op.reply_to, None, error)
        # Told here now (pub/sub's copy is then stale): who has the answer
        # finds the topic in the room's next joined.
        deliveries = self._topic_event(op.room, int(result[1]), op.origin, op.user_id, op.topic)
        answer = System("topic", op.room, op.user_id, op.topic, op.ref)
        return deliveries + self.answer(op.reply_to, answer)

    def _topic_event(
        self, name: str, version: int, origin: str, user_id: str, topic: str
    ) -> list[Delivery]:
        """Room *name*'s topic is now *topic*, set by *user_id* through
        *origin*, as of membership *version*."""
        room = self._rooms.get(name)
        if room is None:
            return []
        if not room.log.ready:
            if room.early_topic is None or version > room.early_topic[0]:
                room.early_topic = (version, origin, user_id, topic)
            return []
        if version <= room.members_version:
            return []
        if version > room.members_version + 1:
            self._ops.append(MembersOp(name))  # some news was lost
        room.members_version = version
        room.topic = topic or None
        sender = self._origins.get(origin)
        to = tuple(k for k in room.conns if k is not sender)
        # Also to nobody: an event of the room, which the hub's observers see.
        return [Delivery(System("topic", name, user_id, topic), to)]

    def _loaded_topic(self, name: str) -> list[Delivery]:
        """Apply a topic change told while room *name* loaded, if the load
        did not see it."""
        room = self._rooms[name]
        early, room.early_topic = room.early_topic, None
        if early is None or early[0] <= room.members_version:
            return []
        return self._topic_event(name, *early)

    # ------------------------------------------------------------ closing

    def close_room(
        self, room: str, text: str, by: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Close *room* as moderator *by*, on every process; *reply_to* gets
        how many connections it removed here and memberships elsewhere (404
        if there is no such room)."""
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE)
        self._ops.append(CloseOp(room, by, text, reply_to))
        return []

    def _close_result(self, op: CloseOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, None))
        if result[0] != "ok":
            error = ProtocolError(404, f"room {op.room!r} does not exist")
            return self.answer(op.reply_to, None, error)
        # Closed here now, unless pub/sub's copy came first (then this
        # answer is stale, and the copy counted the connections).
        version = int(result[1])
        closed, deliveries = self._close_event(op.room, version, op.user_id, op.text)
        closed += self._close_counts.pop((op.room, version), 0)
        if isinstance(op.reply_to, Reply):
            op.reply_to.resolve(closed + int(result[2]))
        return deliveries

    def _close_news(self, name: str, version: int, node: str, by: str, text: str) -> list[Delivery]:
        """A close published by process *node* (this one: before its
        answer, which then finds the count here)."""
        closed, deliveries = self._close_event(name, version, by, text)
        if node == self.node and closed:
            counts = self._close_counts
            counts[(name, version)] = closed
            if len(counts) > MAX_CLOSE_COUNTS:
                del counts[next(iter(counts))]
        return deliveries

    def _close_event(
        self, name: str, version: int, by: str, text: str
    ) -> tuple[int, list[Delivery]]:
        """Room *name* was closed by *by* (with *text*) as of membership
        *version*: how many connections it removed here, and their events."""
        room = self._rooms.get(name)
        if room is None:
            return 0, []
        if not room.log.ready:
            if room.early_close is None or version > room.early_close[0]:
                room.early_close = (version, by, text)
            return 0, []
        if version <= room.members_version:
            return 0, []  # a close of the room before it was loaded again
        return self._close_here(name, room, by, text)

    def _close_here(
        self, name: str, room: ServedRoom, by: str, text: str
    ) -> tuple[int, list[Delivery]]:
        keys = tuple(room.conns)
        for key in keys:
            del self._conns[key].rooms[name]
        self._drop_room(name, room)
        # Redis removed them already; a join of this process that Redis
        # applied after the close is undone so.
        for user_id in room.local_users:
            if self.up:
                self._ops.append(MemberOp(name, user_id, False))
        return len(keys), self._closed(name, by, text, keys)

    def _loaded_close(self, name: str) -> list[Delivery]:
        """Apply a close told while room *name* loaded, if the load did not
        see it (its joins were answered first)."""
        room = self._rooms.get(name)
        if room is None:
            return []
        early, room.early_close = room.early_close, None
        if early is None or early[0] <= room.members_version:
            return []
        return self._close_here(name, room, early[1], early[2])[1]
