"""The hub's bookkeeping as a pure, synchronous state machine (memory and SQLite).

:class:`HubState` owns rooms (a :class:`~trio_chat._room_table.RoomTable`)
with their topics, presence, read markers, and (through
:mod:`trio_chat._log`) message ids, history and ``ref`` de-duplication, on
the connections, users,
quotas and dispatch it shares with the Redis store's state
(:class:`~trio_chat._room_core.RoomCore`).  Each
method applies one command and returns the :class:`Delivery` list it causes
(which connections receive which server event); with a durable store, the log
operations it implies (append, trim, remember a ref) are collected for
:meth:`HubState.take_ops`.  It never performs I/O and never looks at a clock
(the caller passes ``now``).  Connections are opaque hashable keys: the hub
actor uses its per-connection outlets, the tests use integers.

Refusals raise :class:`~trio_chat.ProtocolError` *before* any state changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ._conversations import Conversations, is_conversation, to_oneself
from ._hub_directory import (
    conversation_list,
    joined_budget,
    list_rooms,
    mark_read,
    set_topic,
    unread_counts,
)
from ._hub_messages import apply_message_frame, find_target, moderator_delete
from ._log import History, LogOp, RefMemory, RememberOp, RoomLog
from ._log_ops import TopicOp
from ._markers import ReadMarkers
from ._message_frames import MessageFrame
from ._message_ops import DEFAULT_REACTIONS
from ._protocol import (
    ChatAck,
    ClientEvent,
    DirectAck,
    DirectMessage,
    Join,
    Joined,
    ListConversations,
    Presence,
    PresenceUpdate,
    ProtocolError,
    ServerEvent,
    System,
    TypingNotice,
    TypingTo,
    TypingWith,
    format_time,
    parse_server_frame,
)
from ._room_core import Conn, Delivery, Encoded, HubStats, Key, Post, Reply, RoomCore
from ._room_frames import ListRooms, MarkRead, SetTopic
from ._room_table import DirectoryEntry, Room, RoomTable
from ._sizes import newest_within, payload_bound, payload_bytes

if TYPE_CHECKING:
    from ._sqlite_store import Snapshot

__all__ = [
    "Delivery",
    "Encoded",
    "HubState",
    "HubStats",
    "Reply",
    "RoomLog",
    "newest_within",
    "payload_bytes",
]


@attrs.define
class _User:
    conns: dict[Key, None] = attrs.Factory(dict)
    status: str | None = None
    text: str | None = None


@attrs.define
class HubState(RoomCore["_User"]):
    """Rooms, members, ids, history, presence, read markers, topics and
    ``ref`` de-duplication.

    Args:
        history_size: messages retained per room.
        ref_memory: accepted ``ref`` values remembered per user.
        max_rooms: rooms (with their ids and history) kept at once; beyond it
            the least recently used room without members is forgotten, and a
            new room is refused when every room has members.
        max_rooms_per_connection: rooms one connection may be in at once.
        max_rooms_created_per_connection: rooms one connection may have
            created that still exist.
        max_rooms_created_per_client: the same for each client (the
            ``client`` given to :meth:`connect`: an IP, or a user).
        joined_bytes: bytes of history (and member names) one ``joined``
            carries at most: the newest messages that fit, ``truncated``
            when older ones were left out.
        max_conversations: direct conversations (with their ids and
            history) kept at once; beyond it the least recently used is
            forgotten.
        max_conversations_per_user: conversations one user may be in; a new
            one beyond it is refused (403), for its sender and its addressee.
        remembered_users: users whose refs are kept at once.
        max_refs: refs kept in all.  Past either bound, the least recently
            active users' oldest refs are forgotten first, so memory stays
            bounded whatever names clients choose.
        edit_window: seconds after its time a message may be edited.
        reactions: the emoji a ``react`` may toggle.
        read_markers_per_user: read markers kept per user.
        max_read_markers: read markers kept in all, for at most
            *remembered_users* users; past a bound the least recently moved
            go first (:class:`~trio_chat._markers.ReadMarkers`).

    Rooms are reclaimed so that no client can hold the table: a room left
    empty with no history and no topic is forgotten at once (its ids start
    again at 1); another empty room is kept until the table is full, then
    the least recently used goes first (a join, a message and its last
    member leaving use a room).  Every refusal is O(1).
    """

    history_size: int = 100
    ref_memory: int = 1000
    joined_bytes: int = 1 << 19
    remembered_users: int = 10_000
    max_refs: int = 100_000
    history_bytes_per_room: int = 1 << 20
    history_bytes_total: int = 128 << 20
    history_max_age: float = 0.0
    durable: bool = False
    edit_window: float = 3600.0
    reactions: tuple[str, ...] = DEFAULT_REACTIONS
    max_conversations: int = 10_000
    max_conversations_per_user: int = 200
    read_markers_per_user: int = 1000
    max_read_markers: int = 100_000

    _rooms: RoomTable = attrs.field(init=False, factory=RoomTable)
    _messages: int = attrs.field(init=False, default=0)
    history: History = attrs.field(init=False)
    refs: RefMemory = attrs.field(init=False)
    conversations: Conversations = attrs.field(init=False)
    markers: ReadMarkers = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.history = History(
            self.history_size,
            self.history_bytes_per_room,
            self.history_bytes_total,
            self.history_max_age,
            self.durable,
        )
        self.refs = RefMemory(self.ref_memory, self.remembered_users, self.max_refs)
        self.conversations = Conversations(
            self.history, self.max_conversations, self.max_conversations_per_user
        )
        self.markers = ReadMarkers(
            self.read_markers_per_user,
            self.remembered_users,
            self.max_read_markers,
            self.history.record,
        )

    # ------------------------------------------------------------ the log

    def take_ops(self) -> list[LogOp]:
        """The log operations of the commands applied since the last call,
        in order (always empty unless *durable*)."""
        return self.history.take_ops()

    def restore(self, snapshot: Snapshot) -> None:
        """Bring back what a store kept: rooms (without members, so a room
        left with no history and no topic is forgotten), their history, next
        ids and topics, remembered refs and read markers (see
        :meth:`History.restore`).  Call it on a new state, before any
        command; then write :meth:`take_ops` (trims to today's budgets) back
        to the store."""
        logs = self.history.restore(snapshot.rooms, snapshot.messages)
        for name, log in logs.items():
            if is_conversation(name):
                # Kept even without retained messages: its ids go on.
                self.conversations.restore(log)
                continue
            topic = snapshot.topics.get(name)
            if not log.entries and topic is None:
                self.history.drop(log)
                continue
            self._rooms.add(name, Room(log, topic=topic))
        while len(self._rooms) > self.max_rooms:
            oldest = self._rooms.oldest_empty()
            assert oldest is not None  # restored rooms have no members
            self._drop(oldest)
        for user_id, ref, ack in snapshot.refs:
            self.refs.remember(user_id, ref, parse_server_frame(ack))
        for user_id, name, epoch, id_ in snapshot.markers:
            self.markers.put(user_id, name, epoch, id_)

    def expire(self, now: float) -> None:
        """Trim the history older than ``history_max_age``."""
        self.history.expire(now)

    # ------------------------------------------------------------ queries

    def _counts(self) -> tuple[int, int, int]:
        return self._messages, self.history.messages, self.history.bytes

    def members(self, room: str) -> list[str]:
        entry = self._rooms.get(room)
        return list(entry.users) if entry else []

    def last_id(self, room: str) -> int | None:
        entry = self._rooms.get(room)
        return entry.log.last_id if entry else None

    def epoch(self, room: str) -> str | None:
        """The name of *room*'s current numbering (see :class:`RoomLog`)."""
        entry = self._rooms.get(room)
        return entry.log.epoch if entry else None

    def room(self, name: str) -> Room | None:
        """The room called *name*, if there is one."""
        return self._rooms.get(name)

    def room_log(self, room: str) -> RoomLog | None:
        entry = self._rooms.get(room)
        return entry.log if entry else None

    def empty_rooms(self) -> list[str]:
        """Rooms without members, the next to be forgotten first."""
        return self._rooms.empty()

    def empty_room_count(self) -> int:
        return self._rooms.empty_count()

    def topic(self, room: str) -> str | None:
        entry = self._rooms.get(room)
        return entry.topic if entry else None

    def directory(self) -> Iterator[DirectoryEntry]:
        """Every room as ``rooms`` lists it (:meth:`RoomTable.directory`)."""
        return self._rooms.directory()

    # ------------------------------------------------------------ topics

    def change_topic(self, room: str, topic: str, ref: str | None = None) -> list[Key]:
        """Set *room*'s topic (``""`` clears it); the room's connections.
        An unknown room is refused with 404."""
        entry = self._rooms.get(room)
        if entry is None:
            raise ProtocolError(404, f"room {room!r} does not exist", ref)
        entry.topic = topic or None
        self._rooms.changed(room)
        self.history.keep(entry.log)
        self.history.record(TopicOp(room, entry.topic))
        return list(entry.conns)

    def set_topic(
        self, room: str, topic: str, by: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Set *room*'s topic as *by* (a moderator, the embedding program)."""
        return set_topic(self, reply_to, by, SetTopic(room, topic))

    # ------------------------------------------------------------ the rooms' side

    def _new_user(self, user_id: str) -> _User:
        return _User()

    def _creator_gone(self, room: str) -> None:
        self._rooms[room].creator = None

    def _publish(self, post: Post) -> list[Delivery]:
        user_id, room, ref, sender = post.user_id, post.to, post.ref, post.reply_to
        seen = self._seen(user_id, ref)
        if seen is not None:
            return self.answer(sender, seen)
        entry = self._rooms.get(room)
        if entry is None:
            if not post.create:
                raise ProtocolError(404, f"room {room!r} does not exist", ref)
            entry = self._room(room, ref)
        self._rooms.used(room)
        message = self.history.append(
            entry.log, user_id, post.content, post.now, format_time(post.now)
        )
        self._messages += 1
        ack = ChatAck(message.id, room, message.time, ref)
        self._remember(user_id, ref, ack)
        self.markers.move(user_id, entry.log, message.id)
        if not entry.conns and not entry.worth_keeping:
            self._drop(room)
        others = tuple(k for k in entry.conns if k != sender)
        return [Delivery(message, others), *self.answer(sender, ack)]

    def _direct(self, post: Post) -> list[Delivery]:
        user_id, to, ref = post.user_id, post.to, post.ref
        seen = self._seen(user_id, ref)
        if seen is not None:
            return self.answer(post.reply_to, seen)
        if to == user_id:
            raise to_oneself(ref)
        log = self.conversations.open(user_id, to, ref)
        message = self.history.append(log, user_id, post.content, post.now, format_time(post.now))
        ack = DirectAck(to, message.time, ref, message.id)
        self._remember(user_id, ref, ack)
        self.markers.move(user_id, log, message.id)
        audience = [*self.connections_of(to), *self.connections_of(user_id)]
        sender = post.reply_to
        recipients = tuple(k for k in audience if k != sender)
        event = DirectMessage.stored(message, to)
        return [Delivery(event, recipients), *self.answer(sender, ack)]

    def _extended(self, key: Key, conn: Conn, event: ClientEvent, now: float) -> list[Delivery]:
        if isinstance(event, TypingTo):
            others = tuple(k for k in self.connections_of(event.with_) if k != key)
            notice = TypingWith(conn.user_id, conn.user_id)
            return [Delivery(notice, others, ephemeral=True)] if others else []
        if isinstance(event, ListConversations):
            return [Delivery(conversation_list(self, conn.user_id, event.ref), (key,))]
        if isinstance(event, MarkRead):
            if event.room is not None:
                self._member(conn, event.room, "marking as read", event.ref)
            return mark_read(self, key, conn.user_id, event)
        if isinstance(event, ListRooms):
            return list_rooms(self, key, event)
        if isinstance(event, SetTopic):
            self._member(conn, event.room, "setting the topic of", event.ref)
            return set_topic(self, key, conn.user_id, event)
        raise TypeError(f"not a client event: {event!r}")

    def _typing(self, key: Key, conn: Conn, room: str) -> list[Delivery]:
        others = tuple(k for k in self._rooms[room].conns if k != key)
        notice = TypingNotice(room, conn.user_id)
        return [Delivery(notice, others, ephemeral=True)] if others else []

    # ------------------------------------------------------------ edits, deletes, reactions

    def _message_frame(
        self, key: Key, conn: Conn, event: MessageFrame, now: float
    ) -> list[Delivery]:
        if event.room is not None:
            self._member(conn, event.room, "reading or changing messages in", event.ref)
        target = find_target(self, conn.user_id, event.room, event.with_, event.ref)
        return apply_message_frame(self, key, conn.user_id, event, target=target, now=now)

    def delete_any(
        self, room: str, id_: int, by: str, text: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Delete message *id_* of *room*, whoever wrote it, as moderator
        *by*: *reply_to* gets the tombstone."""
        target = find_target(self, by, room, None, None)
        return moderator_delete(self, target, id_, by, text=text, reply_to=reply_to)

    def close_room(
        self, room: str, text: str, by: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Close *room*: its connections get ``system`` ``close`` (from *by*,
        with *text*) and then ``left``, and it is forgotten with its history,
        ids and topic.  *reply_to* gets how many connections it removed; 404
        if there is no such room."""
        entry = self._rooms.get(room)
        if entry is None:
            raise ProtocolError(404, f"room {room!r} does not exist")
        keys = tuple(entry.conns)
        for key in keys:
            del self._conns[key].rooms[room]
        entry.conns.clear()
        entry.users.clear()
        self._drop(room)
        return self._closed(room, by, text, keys, reply_to)

    # ------------------------------------------------------------ internals

    def _room(self, name: str, ref: str | None, key: Key = None, conn: Conn | None = None) -> Room:
        """The room called *name*, created if new (by connection *key*).

        A new room counts against its creator's quotas; when the table is
        full the least recently used empty room is forgotten.  Refusals
        (403) cost O(1).
        """
        entry = self._rooms.get(name)
        if entry is not None:
            return entry
        full = len(self._rooms) >= self.max_rooms
        oldest = self._rooms.oldest_empty()
        if conn is not None:
            self._may_create(conn, ref, full and oldest is None)
        elif full and oldest is None:
            self._refused("server")
            raise ProtocolError(403, "the server's room limit is reached", ref)
        if full and oldest is not None:
            self._drop(oldest)
        client = conn.client if conn is not None else None
        entry = self._rooms.add(name, Room(self.history.open(name), client=client))
        if conn is not None:
            entry.creator = key
        self._created(conn, client, name)
        return entry

    def _drop(self, name: str) -> None:
        """Forget an empty room: its ids, history and quota."""
        entry = self._rooms.forget(name)
        self.history.drop(entry.log)
        self._released(entry.creator, entry.client, name)

    def _join(self, key: Key, conn: Conn, event: Join, now: float) -> list[Delivery]:
        if self.history_max_age:
            self.history.expire(now)
        entry = self._room(event.room, event.ref, key, conn)
        self._rooms.used(event.room)
        deliveries: list[Delivery] = []
        if key in entry.conns:
            # Joined already: every message since its first joined has been
            # sent to it, so there is no history to send again.
            history: list[dict[str, Any]] = []
            truncated = False
        else:
            others = tuple(entry.conns)
            if not others:
                self._rooms.occupied(event.room)
            entry.conns[key] = None
            conn.rooms[event.room] = None
            count = entry.users.get(conn.user_id, 0)
            entry.users[conn.user_id] = count + 1
            if count == 0:
                self._rooms.changed(event.room)
                # To nobody when the room was empty: still an event of the
                # room (the hub's observers see it).
                system = System("join", event.room, conn.user_id)
                deliveries.append(Delivery(system, others))
            history, truncated = entry.log.after(event.since)
            budget = joined_budget(self.joined_bytes, event.room, entry.users)
            if sum(payload_bound(p) for p in history) > budget:
                history, trimmed = newest_within(history, payload_bytes, budget)
                truncated = truncated or trimmed
        read, unread, mentions = unread_counts(self, conn.user_id, entry.log)
        joined = Joined(
            event.room,
            list(entry.users),
            history,
            truncated,
            event.ref,
            entry.log.epoch,
            read,
            unread,
            mentions,
            entry.topic,
        )
        deliveries.insert(0, Delivery(joined, (key,)))
        for member in entry.users:
            user = self._users[member]
            if user.status is not None and member != conn.user_id:
                update = PresenceUpdate(member, user.status, user.text)
                deliveries.append(Delivery(update, (key,), ephemeral=True))
        return deliveries

    def _left(self, key: Key, conn: Conn, room: str, entry: Room) -> list[Delivery]:
        count = entry.users[conn.user_id] - 1
        if count:
            entry.users[conn.user_id] = count
            return []
        del entry.users[conn.user_id]
        self._rooms.changed(room)
        leave = Delivery(System("leave", room, conn.user_id), tuple(entry.conns))
        if not entry.conns:
            if entry.worth_keeping:
                self._rooms.vacated(room)
            else:
                self._drop(room)
        return [leave]

    def _set_presence(self, user_id: str, event: Presence) -> list[Delivery]:
        user = self._users[user_id]
        user.status, user.text = event.status, event.text
        audience: dict[Key, None] = dict.fromkeys(user.conns)
        for key in user.conns:
            for room in self._conns[key].rooms:
                audience.update(dict.fromkeys(self._rooms[room].conns))
        update = PresenceUpdate(user_id, event.status, event.text)
        return [Delivery(update, tuple(audience), ephemeral=True)]

    def _seen(self, user_id: str, ref: str | None) -> ServerEvent | None:
        return self.refs.seen(user_id, ref)

    def _remember(self, user_id: str, ref: str | None, ack: ServerEvent) -> None:
        if ref is None:
            return
        self.refs.remember(user_id, ref, ack)
        if self.durable:
            self.history.record(RememberOp(user_id, ref, ack.to_json()))


def recipients(deliveries: Iterable[Delivery]) -> set[Key]:
    """Every connection some delivery goes to (a helper for tests)."""
    return {key for d in deliveries for key in d.to}
