"""The Redis store's side of the hub: one process's view of a shared cluster.

:class:`ClusterState` is the hub state when rooms are kept in Redis.  The
connections, users, room quotas, refusals and the dispatch of client events
are the same as for the memory and SQLite stores (the shared
:class:`~trio_chat._room_core.RoomCore`); what differs is who assigns ids and
who knows the members.  Pure and synchronous like the other states: each
command returns the :class:`~trio_chat._room_core.Delivery` list it causes
for this process's connections; what must happen in Redis is appended to an
outbox of :class:`Op` records (:meth:`ClusterState.take_ops`), whose results
come back later through :meth:`ClusterState.on_result` (a chat's delivery
and its ack come with its result: it is "appended" once Redis assigned its
id).  It never performs I/O.

What Redis decides, and this state only follows:

* chat ids (per room) and direct-message ids (per addressee) come from Redis
  and every message is kept in a Redis Stream, so every process delivers the
  same messages with the same ids;
* pub/sub messages are only a wake-up: each *log* (a room, or a user's inbox)
  has a cursor, the last id delivered here.  An id at or below the cursor is
  a duplicate and ignored; an id beyond ``cursor + 1`` means pub/sub lost
  something, and the log is filled from the stream (:class:`FillOp`).  After
  every (re)connection every log is filled from its cursor, so a message
  acknowledged by any process reaches each connection here exactly once;
* cluster membership of rooms (who is in a room on any process) and whether a
  user is connected anywhere: ``system`` join/leave events are published by
  Redis when a user's first connection in the whole cluster joins or the last
  one leaves, and carry a per-room version so that a stale snapshot never
  overrides a newer event.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any

import attrs

from ._backplane_ops import (
    FILL_COUNT,
    UNAVAILABLE,
    ChatOp,
    DirectOp,
    FillOp,
    FloorOp,
    LoadOp,
    MemberOp,
    MembersOp,
    OnlineOp,
    Op,
    PresenceOp,
    RawEvent,
    SyncOp,
    TypingOp,
)
from ._hub_state import joined_budget, newest_within
from ._mentions import find_mentions
from ._message_frames import MessageFrame
from ._protocol import (
    CHAT_PREFIX,
    ChatAck,
    ClientEvent,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Join,
    Joined,
    Presence,
    PresenceUpdate,
    ProtocolError,
    System,
    TypingNotice,
    chat_suffix,
    format_time,
    parse_server_frame,
)
from ._room_core import Conn, Delivery, Key, Post, Reply, RoomCore

__all__ = ["ClusterState"]

# --------------------------------------------------------------------------
# Local bookkeeping


@attrs.define(eq=False)
class _Log:
    """Delivery progress of one log (a room or a user's inbox) here."""

    #: The last id delivered to this process's connections.
    cursor: int = 0
    #: False until the starting cursor is known (a load is in flight).
    ready: bool = False
    #: A :class:`FillOp` is in flight.
    filling: bool = False
    #: The highest id seen on pub/sub but not delivered (loading or filling).
    seen: int = 0


@attrs.define(eq=False)
class _Room:
    history: deque[list[Any]]
    log: _Log = attrs.Factory(_Log)
    #: Local member connections, in join order.
    conns: dict[Key, None] = attrs.Factory(dict)
    #: Local member users and how many of their connections are in the room.
    local_users: dict[str, int] = attrs.Factory(dict)
    #: Cluster members as Redis last told us, and the version of that news.
    members: dict[str, None] = attrs.Factory(dict)
    members_version: int = 0
    #: Joins waiting for the room to load.
    pending: list[tuple[Key, Join]] = attrs.Factory(list)
    #: Bytes of the frames in :attr:`history`.
    history_bytes: int = 0
    #: The connection that opened it here, while connected.
    creator: Key | None = None
    #: The client whose quota it counts against.
    client: str | None = None
    #: The name of the room's numbering, once loaded.
    epoch: str | None = None

    def after(
        self, since: int | None, budget: int | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """History payloads with ``id > since`` and whether some are missing.

        With *budget*, only the newest whose frames add up to at most that
        many bytes (older ones count as missing).
        """
        last = self.log.cursor
        if since is None or since > last:
            since = 0
        oldest = self.history[0][0] if self.history else last + 1
        items = [item for item in self.history if item[0] > since]
        trimmed = False
        if budget is not None:
            items, trimmed = newest_within(items, _frame_bytes, budget)
        messages = []
        for item in items:
            if item[2] is None:
                item[2] = json.loads(item[1])["payload"]
            messages.append(item[2])
        return messages, trimmed or since + 1 < oldest


def _frame_bytes(item: list[Any]) -> int:
    frame: str = item[1]
    return len(frame) if frame.isascii() else len(frame.encode())


def _pop_oldest(room: _Room) -> int:
    size = _frame_bytes(room.history.popleft())
    room.history_bytes -= size
    return size


@attrs.define(eq=False)
class _User:
    conns: dict[Key, None] = attrs.Factory(dict)
    inbox: _Log = attrs.Factory(_Log)


def _error(code: int, message: str, ref: str | None) -> ErrorEvent:
    return ErrorEvent(code, message, ref)


@attrs.define
class ClusterState(RoomCore["_User"]):
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
    """

    node: str
    history_size: int = 100
    joined_bytes: int = 1 << 19
    history_bytes_total: int = 128 << 20
    prefix: str = "trio_chat:"

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

    _rooms: dict[str, _Room] = attrs.field(init=False, factory=dict)
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

    def _new_user(self, user_id: str) -> _User:
        if self.up:
            self._ops.append(OnlineOp(user_id, True))
        return _User()

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

    def _message_frame(
        self, key: Key, conn: Conn, event: MessageFrame, now: float
    ) -> list[Delivery]:
        raise ProtocolError(501, "not available with the Redis store", event.ref)

    def _extended(self, key: Key, conn: Conn, event: ClientEvent, now: float) -> list[Delivery]:
        if not isinstance(event, ClientEvent):
            raise TypeError(f"not a client event: {event!r}")
        raise ProtocolError(501, "not available with the Redis store", getattr(event, "ref", None))

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

    def _direct(self, post: Post) -> list[Delivery]:
        """Ask Redis to deliver a direct message to every connection of *to*."""
        if not self.up:
            raise ProtocolError(503, UNAVAILABLE, post.ref)
        time = format_time(post.now)
        frame = DirectMessage(post.user_id, post.content, time).to_json()
        origin = self._origin(post.reply_to)
        self._ops.append(
            DirectOp(
                post.user_id,
                post.to,
                frame,
                time,
                post.ref,
                origin,
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

    def _open_room(self, name: str, key: Key, conn: Conn, ref: str | None) -> _Room:
        """Start serving room *name* here for *conn*, within the quotas (O(1))."""
        self._may_create(conn, ref, len(self._rooms) >= self.max_rooms)
        room = self._rooms[name] = _Room(
            deque(maxlen=self.history_size), creator=key, client=conn.client
        )
        self._created(conn, conn.client, name)
        self._ops.append(LoadOp(name, self.history_size, self.joined_bytes))
        return room

    def _joined(
        self, key: Key, name: str, room: _Room, user_id: str, event: Join, *, fresh: bool = True
    ) -> list[Delivery]:
        members = self.members(name)
        if fresh:
            budget = joined_budget(self.joined_bytes, name, members)
            history, truncated = room.after(event.since, budget)
        else:
            history, truncated = [], False
        joined = Joined(name, members, history, truncated, event.ref, room.epoch)
        deliveries = [Delivery(joined, (key,))]
        for member in members:
            frame = self._presence.get(member)
            if frame is not None and member != user_id:
                deliveries.append(Delivery(RawEvent(frame), (key,), ephemeral=True))
        return deliveries

    def _left(self, key: Key, conn: Conn, name: str, room: _Room) -> list[Delivery]:
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

    def _keep(self, name: str, room: _Room, item: list[Any]) -> None:
        """Append *item* to *room*'s cached history, within the bounds: per
        room what one ``joined`` carries at most (``joined_bytes``, and the
        ``history_size`` count); in all ``history_bytes_total``, the least
        recently written room losing its oldest first."""
        history = room.history
        before = room.history_bytes
        if len(history) == history.maxlen and history:
            _pop_oldest(room)
        history.append(item)
        room.history_bytes += _frame_bytes(item)
        while room.history_bytes > self.joined_bytes and history:
            _pop_oldest(room)
        self._history_bytes += room.history_bytes - before
        written = self._written
        written[name] = None
        written.move_to_end(name)
        while self._history_bytes > self.history_bytes_total and written:
            oldest = next(iter(written))
            victim = self._rooms[oldest]
            if victim.history:
                self._history_bytes -= _pop_oldest(victim)
            if not victim.history:
                del written[oldest]

    def _drop_room(self, name: str, room: _Room) -> None:
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

    # ------------------------------------------------------------ Redis status

    def on_connected(self) -> None:
        """Redis is reachable again (subscribed): register and catch up."""
        self._generation += 1
        self._sync()

    def on_disconnected(self) -> None:
        """Redis is unreachable: refuse chat and direct until it is back."""
        self._generation += 1
        self.up = False
        self._syncing = False
        for log in self._logs():
            log.filling = False

    def on_tick(self) -> None:
        """Called periodically: retry a sync that could not be sent."""
        if self.want_sync and not self._syncing:
            self._sync()

    def on_overflow(self) -> None:
        """Pub/sub messages were dropped here: fill every log from Redis."""
        for kind, name, log in self._named_logs():
            if log.ready:
                self._fill(kind, name, log)

    def _sync(self) -> None:
        entries = []
        for name, room in self._rooms.items():
            entries += [f"m {name} {user}" for user in room.local_users]
        entries += [f"u {user}" for user in self._users]
        waiting = [u for u, user in self._users.items() if not user.inbox.ready]
        self.want_sync = False
        self._syncing = True
        self._ops.append(SyncOp(entries, waiting, self._generation))

    def _synced(self, epoch: str, inbox_ids: dict[str, int]) -> None:
        self._syncing = False
        if self.epoch is not None and epoch != self.epoch:
            # Redis lost its data: ids start again from what was delivered
            # here, and everything in the new streams is new.
            for name, room in self._rooms.items():
                room.members_version = 0
                if room.log.ready:
                    self._ops.append(FloorOp(name, room.log.cursor, room.epoch or ""))
                    self._history_bytes -= room.history_bytes
                    room.history.clear()
                    room.history_bytes = 0
            for log in self._logs():
                if log.ready:
                    log.cursor = log.seen = 0
        self.epoch = epoch
        for user_id, last in inbox_ids.items():
            user = self._users.get(user_id)
            if user is not None and not user.inbox.ready:
                user.inbox.ready = True
                user.inbox.cursor = last
        for kind, name, log in self._named_logs():
            if log.ready:
                log.filling = False
                self._fill(kind, name, log)
        for name, room in self._rooms.items():
            if room.log.ready:
                self._ops.append(MembersOp(name))
        self.up = True

    # ------------------------------------------------------------ logs

    def _log(self, kind: str, name: str) -> _Log | None:
        if kind == "r":
            room = self._rooms.get(name)
            return room.log if room is not None else None
        user = self._users.get(name)
        return user.inbox if user is not None else None

    def _logs(self) -> list[_Log]:
        return [r.log for r in self._rooms.values()] + [u.inbox for u in self._users.values()]

    def _named_logs(self) -> list[tuple[str, str, _Log]]:
        return [("r", n, r.log) for n, r in self._rooms.items()] + [
            ("u", n, u.inbox) for n, u in self._users.items()
        ]

    def _fill(self, kind: str, name: str, log: _Log) -> None:
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
                self._keep(name, room, [entry_id, frame, None])
                sender = self._origins.get(origin)
                if sender is None:
                    to = tuple(room.conns)
                else:
                    to = tuple(k for k in room.conns if k is not sender)
            else:
                to = tuple(self._users[name].conns)
            if to:
                deliveries.append(Delivery(RawEvent(frame), to))
        return deliveries

    # ------------------------------------------------------------ pub/sub

    def on_messages(self, items: list[tuple[str, str]]) -> list[Delivery]:
        """Apply pub/sub messages: ``(channel, data)`` pairs, in order."""
        deliveries: list[Delivery] = []
        skip = len(self.prefix) + 3  # "<prefix>ch:"
        for channel, data in items:
            try:
                target = channel[skip:]
                if target == "m":
                    deliveries += self._batch(data)
                    continue
                kind, number, origin, subject, frame = data.split(" ", 4)
                if kind == "m":
                    deliveries += self._ingest(
                        target[0], target[2:], [(int(number), origin, frame)], True
                    )
                elif kind in {"j", "l"}:
                    deliveries += self._member_event(target[2:], subject, kind == "j", int(number))
                elif kind == "t":
                    deliveries += self._remote_typing(target[2:], origin, frame)
                elif kind == "p":
                    deliveries += self._remote_presence(subject, origin, frame)
            except (ValueError, IndexError, KeyError):
                continue  # not one of ours
        return deliveries

    def _batch(self, data: str) -> list[Delivery]:
        """Chat messages published by one script call: ``ROOM ID ORIGIN
        FRAME``, one a line."""
        deliveries: list[Delivery] = []
        for line in data.split("\n"):
            room, number, origin, frame = line.split(" ", 3)
            if room in self._rooms:
                deliveries += self._ingest("r", room, [(int(number), origin, frame)], True)
        return deliveries

    def _member_event(self, name: str, user_id: str, joined: bool, version: int) -> list[Delivery]:
        room = self._rooms.get(name)
        if room is None or not room.log.ready or version <= room.members_version:
            return []
        if version > room.members_version + 1:
            self._ops.append(MembersOp(name))  # some news was lost
        room.members_version = version
        if joined == (user_id in room.members):
            return []
        if joined:
            room.members[user_id] = None
            self._index(user_id, name)
        else:
            del room.members[user_id]
            if user_id not in room.local_users:
                self._unindex(user_id, name)
            else:
                return []
        return self._system(name, room, user_id, joined)

    def _system(self, name: str, room: _Room, user_id: str, joined: bool) -> list[Delivery]:
        to = tuple(k for k in room.conns if self._conns[k].user_id != user_id)
        event = System("join" if joined else "leave", name, user_id)
        return [Delivery(event, to)] if to else []

    def _remote_typing(self, name: str, origin: str, frame: str) -> list[Delivery]:
        if origin.partition(":")[0] == self.node:
            return []
        room = self._rooms.get(name)
        if room is None or not room.log.ready or not room.conns:
            return []
        return [Delivery(RawEvent(frame), tuple(room.conns), ephemeral=True)]

    def _remote_presence(self, user_id: str, origin: str, frame: str) -> list[Delivery]:
        if origin == self.node:
            return []
        if user_id not in self._users and user_id not in self._member_rooms:
            return []
        self._presence[user_id] = frame
        audience = self._audience(user_id)
        return [Delivery(RawEvent(frame), audience, ephemeral=True)] if audience else []

    # ------------------------------------------------------------ results

    def on_result(self, op: Op, result: Any) -> list[Delivery]:
        """Apply the result of an op: a value, or the exception it failed with."""
        failed = isinstance(result, BaseException)
        if isinstance(op, ChatOp):
            return self._chat_result(op, result)
        if isinstance(op, DirectOp):
            return self._direct_result(op, result)
        if isinstance(op, FillOp):
            log = self._log(op.kind, op.name)
            if log is None:
                return []
            log.filling = False
            if failed:
                self.want_sync = True
                return []
            deliveries = self._ingest(op.kind, op.name, result, False)
            if len(result) >= FILL_COUNT or log.seen > log.cursor:
                self._fill(op.kind, op.name, log)
            return deliveries
        if isinstance(op, LoadOp):
            return self._loaded(op, result)
        if isinstance(op, MembersOp):
            return [] if failed else self._members_result(op.room, *result)
        if isinstance(op, OnlineOp):
            if failed:
                self.want_sync = True
            elif op.online:
                user = self._users.get(op.user_id)
                if user is not None and not user.inbox.ready:
                    user.inbox.ready = True
                    user.inbox.cursor = result
                    if user.inbox.seen > result:
                        self._fill("u", op.user_id, user.inbox)
            return []
        if isinstance(op, MemberOp):
            if failed:
                self.want_sync = True
            return []
        if isinstance(op, SyncOp):
            if op.generation != self._generation:
                return []  # made for a connection that is gone
            if failed:
                self._syncing = False
                self.want_sync = True
            else:
                self._synced(*result)
            return []
        return []  # presence, typing, floor: nothing to answer

    def _remembered(self, reply_to: Any, ack: str, ref: str | None) -> list[Delivery]:
        """Answer a resent ``ref`` with the ack Redis remembered for it (its
        frame, as the other stores keep it too)."""
        try:
            event = parse_server_frame(ack)
        except ValueError:  # not one this version wrote: ask for a retry later
            return self.answer(reply_to, None, ProtocolError(503, UNAVAILABLE, ref))
        return self.answer(reply_to, event, None)

    def _failure(self, result: BaseException, ref: str | None) -> ProtocolError:
        if isinstance(result, ProtocolError):
            return result
        return ProtocolError(503, UNAVAILABLE, ref)

    def _chat_result(self, op: ChatOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.ref))
        status = result[0]
        if status == "ok":
            self.messages += 1
            id_ = int(result[1])
            # Delivered here now (pub/sub's copy is then a duplicate): who
            # has the ack finds the message in the room's history.
            entry = (id_, op.origin, CHAT_PREFIX + str(id_) + op.suffix)
            deliveries = self._ingest("r", op.room, [entry], True)
            return deliveries + self.answer(
                op.reply_to, ChatAck(id_, op.room, op.time, op.ref), None
            )
        if status == "dup":
            return self._remembered(op.reply_to, result[1], op.ref)
        if status == "noroom":
            error = ProtocolError(404, f"room {op.room!r} does not exist", op.ref)
            return self.answer(op.reply_to, None, error)
        # "epoch": Redis lost its data since this process last synced.
        self.want_sync = True
        return self.answer(op.reply_to, None, ProtocolError(503, UNAVAILABLE, op.ref))

    def _direct_result(self, op: DirectOp, result: Any) -> list[Delivery]:
        if isinstance(result, BaseException):
            return self.answer(op.reply_to, None, self._failure(result, op.ref))
        status = result[0]
        if status == "ok":
            return self.answer(op.reply_to, DirectAck(op.to, op.time, op.ref), None)
        if status == "dup":
            return self._remembered(op.reply_to, result[1], op.ref)
        if status == "absent":
            error = ProtocolError(404, f"user {op.to!r} is not connected", op.ref)
            return self.answer(op.reply_to, None, error)
        self.want_sync = True
        return self.answer(op.reply_to, None, ProtocolError(503, UNAVAILABLE, op.ref))

    def _loaded(self, op: LoadOp, result: Any) -> list[Delivery]:
        room = self._rooms.get(op.room)
        if room is None or room.log.ready:
            return []
        deliveries: list[Delivery] = []
        if isinstance(result, BaseException):
            # The joins cannot be answered: refuse them, as if never made.
            for key, event in room.pending:
                deliveries.append(Delivery(_error(503, UNAVAILABLE, event.ref), (key,)))
            room.pending = []
            for key in list(room.conns):
                self._leave(key, self._conns[key], op.room)
            self._drop_room(op.room, room)
            return deliveries
        room.log.ready = True
        room.log.cursor = result.last_id
        room.epoch = result.epoch or None
        for entry_id, _origin, frame in result.entries:
            if entry_id <= result.last_id:
                self._keep(op.room, room, [entry_id, frame, None])
        room.members_version = result.members_version
        for user_id in result.members:
            room.members[user_id] = None
            self._index(user_id, op.room)
        for user_id, frame in result.presence.items():
            self._presence.setdefault(user_id, frame)
        answered: set[Key] = set()
        for key, event in room.pending:
            if key in room.conns:
                user_id = self._conns[key].user_id
                fresh = key not in answered
                answered.add(key)
                deliveries += self._joined(key, op.room, room, user_id, event, fresh=fresh)
        room.pending = []
        if not room.conns:
            self._drop_room(op.room, room)
            return deliveries
        if room.log.seen > room.log.cursor:
            self._fill("r", op.room, room.log)
        return deliveries

    def _members_result(self, name: str, version: int, members: list[str]) -> list[Delivery]:
        room = self._rooms.get(name)
        if room is None or not room.log.ready or version <= room.members_version:
            return []
        room.members_version = version
        now = dict.fromkeys(members)
        deliveries: list[Delivery] = []
        for user_id in list(room.members):
            if user_id not in now:
                del room.members[user_id]
                if user_id not in room.local_users:
                    self._unindex(user_id, name)
                    deliveries += self._system(name, room, user_id, False)
        for user_id in members:
            if user_id not in room.members:
                room.members[user_id] = None
                self._index(user_id, name)
                deliveries += self._system(name, room, user_id, True)
        return deliveries
