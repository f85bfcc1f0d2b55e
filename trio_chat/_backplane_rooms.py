"""The Redis store's rooms and connections in one process.

:class:`ClusterRooms` is the part of :class:`~trio_chat._backplane_state.ClusterState`
that serves this process's connections: joining, leaving, publishing (as
ops for Redis), presence, typing, the cached history of each served room
within its bounds, and the delivery of each log's new entries exactly once
and in id order (:meth:`ClusterRooms._ingest`).  What Redis answers and
tells is applied by the subclass.  Pure and synchronous: no I/O.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import ClassVar

import attrs

from ._backplane_logs import LogProgress, ServedRoom, ServedUser, frame_bytes, pop_oldest
from ._backplane_ops import (
    NOT_OFFERED,
    UNAVAILABLE,
    ChatOp,
    FillOp,
    LoadOp,
    MemberOp,
    OnlineOp,
    Op,
    PresenceOp,
    RawEvent,
    TypingOp,
)
from ._hub_directory import joined_budget
from ._mentions import find_mentions
from ._message_ops import DEFAULT_REACTIONS
from ._protocol import (
    ClientEvent,
    Join,
    Joined,
    Presence,
    PresenceUpdate,
    ProtocolError,
    TypingNotice,
    TypingTo,
    TypingWith,
    chat_suffix,
    format_time,
)
from ._room_core import Conn, Delivery, Key, Post, Reply, RoomCore

__all__ = ["ClusterRooms"]


@attrs.define
class ClusterRooms(RoomCore[ServedUser]):
    """This process's connections, rooms and cursors, beside Redis.

    Args:
        node: this process's id in the cluster (no spaces or colons).
        history_size: messages a ``joined`` carries at most.
        max_rooms: rooms served here at once (a new one beyond: 403).
        max_rooms_per_connection: rooms one connection may be in.
        max_rooms_created_per_connection: rooms served here that one
            connection may have opened (a new one beyond: 403).
        max_rooms_created_per_client: the same per client (an IP or a user).
        joined_bytes: bytes of history one ``joined`` carries at most (and
            so what is cached per room).
        history_bytes_total: bytes of history cached here in all.
        prefix: the Redis key prefix (pub/sub channels start with it).
        edit_window: seconds after its time a message may be edited.
        reactions: the emoji a ``react`` may toggle.
    """

    not_offered: ClassVar[str] = NOT_OFFERED

    node: str
    history_size: int = 100
    joined_bytes: int = 1 << 19
    history_bytes_total: int = 128 << 20
    prefix: str = "trio_chat:"
    edit_window: float = 3600.0
    reactions: tuple[str, ...] = DEFAULT_REACTIONS

    #: Redis is reachable and this process's state is registered there.
    up: bool = attrs.field(init=False, default=False)
    #: The Redis data set this state belongs to (changes if Redis lost data).
    epoch: str | None = attrs.field(init=False, default=None)
    #: A :class:`SyncOp` is wanted (set when a registration op failed).
    want_sync: bool = attrs.field(init=False, default=False)
    #: Messages published through this process.
    messages: int = attrs.field(init=False, default=0)
    #: Messages a fill found already trimmed from the stream.
    lost: int = attrs.field(init=False, default=0)

    _rooms: dict[str, ServedRoom] = attrs.field(init=False, factory=dict)
    _origins: dict[str, Key] = attrs.field(init=False, factory=dict)
    #: user -> served rooms where the user is a member (cluster or local).
    _member_rooms: dict[str, set[str]] = attrs.field(init=False, factory=dict)
    #: user -> presence frame, for users this process has an audience for.
    _presence: dict[str, str] = attrs.field(init=False, factory=dict)
    _ops: list[Op] = attrs.field(init=False, factory=list)
    _serial: int = attrs.field(init=False, default=0)
    _syncing: bool = attrs.field(init=False, default=False)
    _generation: int = attrs.field(init=False, default=0)
    #: Bytes of history cached here in all; rooms with some, least recently
    #: written first.
    _history_bytes: int = attrs.field(init=False, default=0)
    _written: OrderedDict[str, None] = attrs.field(init=False, factory=OrderedDict)

    # ------------------------------------------------------------ queries

    @property
    def history_bytes(self) -> int:
        """Bytes of history cached here for the rooms served."""
        return self._history_bytes

    def member_rooms(self, user_id: str) -> list[str]:
        """The rooms served here where *user_id* is a member, on any process."""
        return sorted(self._member_rooms.get(user_id, ()))

    def _counts(self) -> tuple[int, int, int]:
        return self.messages, sum(len(r.history) for r in self._rooms.values()), 0

    def members(self, room: str) -> list[str]:
        """The room's members across the cluster, as far as known here."""
        entry = self._rooms.get(room)
        if entry is None:
            return []
        return list(entry.members) + [u for u in entry.local_users if u not in entry.members]

    def last_id(self, room: str) -> int | None:
        entry = self._rooms.get(room)
        return entry.log.cursor if entry and entry.log.ready else None

    def cursor(self, kind: str, name: str) -> int | None:
        """The last id delivered here for a room (``"r"``) or inbox (``"u"``)."""
        log = self._log(kind, name)
        return log.cursor if log is not None and log.ready else None

    def take_ops(self) -> list[Op]:
        """The ops requested since the last call, in order."""
        ops, self._ops = self._ops, []
        return ops

    # ------------------------------------------------------------ connections

    def _new_conn(self, key: Key, user_id: str, client: str | None) -> Conn:
        self._serial += 1
        origin = f"{self.node}:{self._serial}"
        self._origins[origin] = key
        return Conn(user_id, client, origin=origin)

    def _new_user(self, user_id: str) -> ServedUser:
        if self.up:
            self._ops.append(OnlineOp(user_id, True))
        return ServedUser()

    def _conn_gone(self, conn: Conn) -> None:
        del self._origins[conn.origin]

    def _user_gone(self, user_id: str) -> None:
        if self.up:
            self._ops.append(OnlineOp(user_id, False))
        self._forget_presence(user_id)

    def _creator_gone(self, room: str) -> None:
        self._rooms[room].creator = None

    def _typing(self, key: Key, conn: Conn, name: str) -> list[Delivery]:
        frame = TypingNotice(name, conn.user_id).to_json()
        if self.up:
            self._ops.append(TypingOp(name, conn.user_id, conn.origin, frame))
        room = self._rooms[name]
        if not room.log.ready:
            return []
        others = tuple(k for k in room.conns if k != key)
        return [Delivery(RawEvent(frame), others, ephemeral=True)] if others else []

    def _extended(self, key: Key, conn: Conn, event: ClientEvent, now: float) -> list[Delivery]:
        if isinstance(event, TypingTo):
            return self._typing_to(key, conn, event.with_)
        if not isinstance(event, ClientEvent):
            raise TypeError(f"not a client event: {event!r}")
        raise ProtocolError(501, NOT_OFFERED, getattr(event, "ref", None))

    def _typing_to(self, key: Key, conn: Conn, to: str) -> list[Delivery]:
        """A ``typing`` to user *to*: their connections here at once, those
        on other processes through Redis."""
        frame = TypingWith(conn.user_id, conn.user_id).to_json()
        if self.up:
            self._ops.append(TypingOp(to, conn.user_id, conn.origin, frame, "u"))
        user = self._users.get(to)
        others = tuple(k for k in user.conns if k != key) if user is not None else ()
        return [Delivery(RawEvent(frame), others, ephemeral=True)] if others else []

    def _origin(self, reply_to: Key | Reply | None) -> str:
        """How pub/sub names the sending connection (``-``: none here)."""
        conn = self._conns.get(reply_to) if reply_to is not None else None
        return conn.origin if conn is not None else "-"

    def _publish(self, post: Post) -> list[Delivery]:
        """Ask Redis to publish a chat message; the ack comes with its answer."""
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE, post.ref)
        time = format_time(post.now)
        mentions = find_mentions(post.content)
        suffix = chat_suffix(post.to, post.user_id, post.content, time, mentions)
        origin = self._origin(post.reply_to)
        self._ops.append(
            ChatOp(
                post.to,
                post.user_id,
                suffix,
                time,
                post.ref,
                origin,
                post.create,
                self.epoch or "",
                post.reply_to,
            )
        )
        return []

    # ------------------------------------------------------------ rooms

    def _join(self, key: Key, conn: Conn, event: Join, now: float) -> list[Delivery]:
        name = event.room
        room = self._rooms.get(name)
        if room is None:
            if not self.up:
                raise ProtocolError(503, UNAVAILABLE, event.ref)
            room = self._open_room(name, key, conn, event.ref)
        elif key in room.conns and room.log.ready:
            # Joined already: it has been sent every message since.
            return self._joined(key, name, room, conn.user_id, event, fresh=False)
        if key not in room.conns:
            room.conns[key] = None
            conn.rooms[name] = None
            count = room.local_users.get(conn.user_id, 0)
            room.local_users[conn.user_id] = count + 1
            if count == 0:
                self._index(conn.user_id, name)
                if self.up:
                    self._ops.append(MemberOp(name, conn.user_id, True))
        if not room.log.ready:
            room.pending.append((key, event))
            return []
        return self._joined(key, name, room, conn.user_id, event)

    def _open_room(self, name: str, key: Key, conn: Conn, ref: str | None) -> ServedRoom:
        """Start serving room *name* here for *conn*, within the quotas (O(1))."""
        self._may_create(conn, ref, len(self._rooms) >= self.max_rooms)
        room = self._rooms[name] = ServedRoom(
            deque(maxlen=self.history_size), creator=key, client=conn.client
        )
        self._created(conn, conn.client, name)
        self._ops.append(LoadOp(name, self.history_size, self.joined_bytes))
        return room

    def _joined(
        self,
        key: Key,
        name: str,
        room: ServedRoom,
        user_id: str,
        event: Join,
        *,
        fresh: bool = True,
    ) -> list[Delivery]:
        members = self.members(name)
        if fresh:
            budget = joined_budget(self.joined_bytes, name, members)
            history, truncated = room.after(event.since, budget)
        else:
            history, truncated = [], False
        joined = Joined(name, members, history, truncated, event.ref, room.epoch, topic=room.topic)
        deliveries = [Delivery(joined, (key,))]
        for member in members:
            frame = self._presence.get(member)
            if frame is not None and member != user_id:
                deliveries.append(Delivery(RawEvent(frame), (key,), ephemeral=True))
        return deliveries

    def _left(self, key: Key, conn: Conn, name: str, room: ServedRoom) -> list[Delivery]:
        if room.pending:
            room.pending = [(k, e) for k, e in room.pending if k != key]
        count = room.local_users[conn.user_id] - 1
        if count:
            room.local_users[conn.user_id] = count
        else:
            del room.local_users[conn.user_id]
            if self.up:
                self._ops.append(MemberOp(name, conn.user_id, False))
            if conn.user_id not in room.members:
                self._unindex(conn.user_id, name)
        if not room.conns and room.log.ready:
            # (A room still loading is kept until it has loaded: joining and
            # leaving again cannot make it read from Redis more than once.)
            self._drop_room(name, room)
        return []

    def _keep(self, name: str, room: ServedRoom, id_: int, frame: str, revision: int = 0) -> None:
        """Append message *id_* (its *frame*) to *room*'s cached history,
        within the bounds: per room what one ``joined`` carries at most
        (``joined_bytes``, and the ``history_size`` count); in all
        ``history_bytes_total``, the least recently written room losing its
        oldest first."""
        history = room.history
        before = room.history_bytes
        if len(history) == history.maxlen and history:
            pop_oldest(room)
        item = [id_, frame, None, revision]
        history.append(item)
        room.history_bytes += frame_bytes(item)
        self._bound(name, room, before)

    def _recache(self, name: str, room: ServedRoom, id_: int, frame: str, revision: int) -> None:
        """Message *id_* of *room* now reads *frame* (as of *revision*), if
        it is cached here and was not newer; within the same bounds."""
        item = room.cached(id_)
        if item is None or item[3] > revision:
            return
        before = room.history_bytes
        room.history_bytes -= frame_bytes(item)
        item[1:] = [frame, None, revision]
        room.history_bytes += frame_bytes(item)
        self._bound(name, room, before)

    def _bound(self, name: str, room: ServedRoom, before: int) -> None:
        """Trim the cache after *room*'s history grew from *before* bytes."""
        history = room.history
        while room.history_bytes > self.joined_bytes and history:
            pop_oldest(room)
        self._history_bytes += room.history_bytes - before
        written = self._written
        written[name] = None
        written.move_to_end(name)
        while self._history_bytes > self.history_bytes_total and written:
            oldest = next(iter(written))
            victim = self._rooms[oldest]
            if victim.history:
                self._history_bytes -= pop_oldest(victim)
            if not victim.history:
                del written[oldest]

    def _drop_room(self, name: str, room: ServedRoom) -> None:
        del self._rooms[name]
        self._history_bytes -= room.history_bytes
        self._written.pop(name, None)
        self._released(room.creator, room.client, name)
        for user_id in list(room.members) + list(room.local_users):
            self._unindex(user_id, name)

    def _index(self, user_id: str, room: str) -> None:
        self._member_rooms.setdefault(user_id, set()).add(room)

    def _unindex(self, user_id: str, room: str) -> None:
        rooms = self._member_rooms.get(user_id)
        if rooms is None:
            return
        rooms.discard(room)
        if not rooms:
            del self._member_rooms[user_id]
            self._forget_presence(user_id)

    # ------------------------------------------------------------ presence

    def _forget_presence(self, user_id: str) -> None:
        if user_id not in self._users and user_id not in self._member_rooms:
            self._presence.pop(user_id, None)

    def _audience(self, user_id: str) -> tuple[Key, ...]:
        audience: dict[Key, None] = {}
        user = self._users.get(user_id)
        if user is not None:
            audience.update(dict.fromkeys(user.conns))
        for name in self._member_rooms.get(user_id, ()):
            room = self._rooms[name]
            if room.log.ready:
                audience.update(dict.fromkeys(room.conns))
        return tuple(audience)

    def _set_presence(self, user_id: str, event: Presence) -> list[Delivery]:
        frame = PresenceUpdate(user_id, event.status, event.text).to_json()
        self._presence[user_id] = frame
        if self.up:
            self._ops.append(PresenceOp(user_id, frame))
        return [Delivery(RawEvent(frame), self._audience(user_id), ephemeral=True)]

    # ------------------------------------------------------------ logs

    def _log(self, kind: str, name: str) -> LogProgress | None:
        if kind == "r":
            room = self._rooms.get(name)
            return room.log if room is not None else None
        user = self._users.get(name)
        return user.inbox if user is not None else None

    def _logs(self) -> list[LogProgress]:
        return [r.log for r in self._rooms.values()] + [u.inbox for u in self._users.values()]

    def _named_logs(self) -> list[tuple[str, str, LogProgress]]:
        return [("r", n, r.log) for n, r in self._rooms.items()] + [
            ("u", n, u.inbox) for n, u in self._users.items()
        ]

    def _fill(self, kind: str, name: str, log: LogProgress) -> None:
        if not log.filling:
            log.filling = True
            self._ops.append(FillOp(kind, name, log.cursor))

    def _ingest(
        self, kind: str, name: str, entries: list[tuple[int, str, str]], live: bool
    ) -> list[Delivery]:
        """Deliver new log entries here, each exactly once and in id order.

        *live* entries come from pub/sub, which keeps order but may lose
        messages: a gap is filled from the stream.  Other entries come from
        the stream itself; a gap there means the stream was trimmed.
        """
        log = self._log(kind, name)
        if log is None:
            return []
        if not log.ready:
            if entries:
                log.seen = max(log.seen, entries[-1][0])
            return []
        deliveries: list[Delivery] = []
        for entry_id, origin, frame in entries:
            if entry_id <= log.cursor:
                continue
            if entry_id != log.cursor + 1:
                if live:
                    log.seen = max(log.seen, entry_id)
                    self._fill(kind, name, log)
                    continue
                self.lost += entry_id - log.cursor - 1
            log.cursor = entry_id
            if kind == "r":
                room = self._rooms[name]
                self._keep(name, room, entry_id, frame)
                conns = room.conns
            else:
                conns = self._users[name].conns
            sender = self._origins.get(origin)
            to = tuple(conns) if sender is None else tuple(k for k in conns if k is not sender)
            # To nobody here but the sender: still an event of the room
            # (the hub's observers see it).
            if to or kind == "r":
                deliveries.append(Delivery(RawEvent(frame), to))
        return deliveries
