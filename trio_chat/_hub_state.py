"""The hub's bookkeeping as a pure, synchronous state machine.

:class:`HubState` owns connections, users, rooms, presence, and (through
:mod:`trio_chat._log`) message ids, history and ``ref`` de-duplication.  Each
method applies one command and returns the :class:`Delivery` list it causes
(which connections receive which server event); with a durable store, the log
operations it implies (append, trim, remember a ref) are collected for
:meth:`HubState.take_ops`.  It never performs I/O and never looks at a clock
(the caller passes ``now``).  Connections are opaque hashable keys: the hub
actor uses its per-connection outlets, the tests use integers.

Refusals raise :class:`~trio_chat.ProtocolError` *before* any state changes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol, TypeVar

import attrs

from ._log import History, LogOp, RefMemory, RememberOp, RoomLog
from ._protocol import (
    Chat,
    ChatAck,
    ClientEvent,
    Direct,
    DirectAck,
    DirectMessage,
    Join,
    Joined,
    Leave,
    Left,
    Presence,
    PresenceUpdate,
    ProtocolError,
    ServerEvent,
    System,
    Typing,
    TypingNotice,
    format_time,
    parse_server_frame,
)

__all__ = ["Delivery", "HubState", "HubStats", "RoomLog", "newest_within", "payload_bytes"]

Key = Hashable
T = TypeVar("T")

#: A JSON string literal, as the protocol's encoder writes it.
_string = json.encoder.encode_basestring
#: Bytes of a chat payload's JSON besides its strings: keys, quotes, the id.
_PAYLOAD_OVERHEAD = 80
#: Bytes of a ``joined`` frame besides its history and member names.
_JOINED_OVERHEAD = 200


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def payload_bytes(payload: dict[str, Any]) -> int:
    """An upper bound, within a few bytes, of a chat payload's encoded size."""
    return (
        _utf8_len(_string(payload["content"]))
        + _utf8_len(payload["user_id"])
        + len(payload["room"])
        + len(payload["time"])
        + _PAYLOAD_OVERHEAD
    )


def _payload_bound(payload: dict[str, Any]) -> int:
    # JSON escapes a character to at most 6 bytes (``\u0001``).
    return 6 * len(payload["content"]) + 2 * len(payload["user_id"]) + 2 * _PAYLOAD_OVERHEAD


def newest_within(items: list[T], size: Callable[[T], int], budget: int) -> tuple[list[T], bool]:
    """The newest *items* (oldest first) whose sizes add up to *budget* at
    most, and whether older ones were left out."""
    total = 0
    for i in range(len(items) - 1, -1, -1):
        total += size(items[i])
        if total > budget:
            return items[i + 1 :], True
    return items, False


def joined_budget(budget: int, room: str, members: Iterable[str]) -> int:
    """What is left of *budget* for a ``joined``'s history after the rest."""
    return budget - _JOINED_OVERHEAD - len(room) - sum(_utf8_len(m) + 3 for m in members)


class Encoded(Protocol):
    """An event already encoded (as the backplane has them from Redis)."""

    def to_json(self) -> str: ...


@attrs.frozen
class Delivery:
    """*event* is to be sent to every connection in *to*, in order.

    Ephemeral deliveries (``typing``, ``presence``) may be dropped for a
    connection whose queue is more than half full.
    """

    event: ServerEvent | Encoded
    to: tuple[Key, ...]
    ephemeral: bool = False


@attrs.frozen
class HubStats:
    """A read-only snapshot of the hub's size."""

    connections: int
    users: int
    rooms: int
    messages: int
    history: int
    #: Bytes of retained history, as the history budgets count them.
    history_bytes: int = 0


@attrs.define
class _Room:
    log: RoomLog
    #: Member connections, in join order (a dict used as an ordered set).
    conns: dict[Key, None] = attrs.Factory(dict)
    #: Member users and how many of their connections are in the room.
    users: dict[str, int] = attrs.Factory(dict)
    #: The connection that created it, while it is connected.
    creator: Key | None = None
    #: The client whose quota it counts against.
    client: str | None = None


@attrs.define
class _Conn:
    user_id: str
    rooms: dict[str, None] = attrs.Factory(dict)
    #: Whose room-creation quota this connection uses.
    client: str | None = None
    #: Rooms it created that still exist.
    created: dict[str, None] = attrs.Factory(dict)


@attrs.define
class _User:
    conns: dict[Key, None] = attrs.Factory(dict)
    status: str | None = None
    text: str | None = None


@attrs.define
class HubState:
    """Rooms, members, ids, history, presence and ``ref`` de-duplication.

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
        remembered_users: users whose refs are kept at once.
        max_refs: refs kept in all.  Past either bound, the least recently
            active users' oldest refs are forgotten first, so memory stays
            bounded whatever names clients choose.

    Rooms are reclaimed so that no client can hold the table: a room left
    empty with no history is forgotten at once (its ids start again at 1);
    an empty room with history is kept until the table is full, then the
    least recently used empty room goes first (a room is used by a join, a
    message, and its last member leaving).  Every refusal is O(1).
    """

    history_size: int = 100
    ref_memory: int = 1000
    max_rooms: int = 10_000
    max_rooms_per_connection: int = 100
    max_rooms_created_per_connection: int = 100
    max_rooms_created_per_client: int = 500
    joined_bytes: int = 1 << 19
    remembered_users: int = 10_000
    max_refs: int = 100_000
    history_bytes_per_room: int = 1 << 20
    history_bytes_total: int = 128 << 20
    history_max_age: float = 0.0
    durable: bool = False

    _conns: dict[Key, _Conn] = attrs.field(init=False, factory=dict)
    _users: dict[str, _User] = attrs.field(init=False, factory=dict)
    _rooms: OrderedDict[str, _Room] = attrs.field(init=False, factory=OrderedDict)
    #: The rooms without members, least recently used first.
    _empty: OrderedDict[str, None] = attrs.field(init=False, factory=OrderedDict)
    #: Client -> rooms it created that still exist.
    _clients: dict[str, int] = attrs.field(init=False, factory=dict)
    #: Room creations refused, by the bound: ``connection``, ``client``, ``server``.
    rooms_refused: dict[str, int] = attrs.field(init=False, factory=dict)
    _messages: int = attrs.field(init=False, default=0)
    history: History = attrs.field(init=False)
    refs: RefMemory = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.history = History(
            self.history_size,
            self.history_bytes_per_room,
            self.history_bytes_total,
            self.history_max_age,
            self.durable,
        )
        self.refs = RefMemory(self.ref_memory, self.remembered_users, self.max_refs)

    # ------------------------------------------------------------ the log

    def take_ops(self) -> list[LogOp]:
        """The log operations of the commands applied since the last call,
        in order (always empty unless *durable*)."""
        return self.history.take_ops()

    def restore(
        self,
        rooms: list[tuple[str, str, int]],
        messages: list[tuple[int, str, int, str, str, str, float]],
        refs: list[tuple[str, str, str]],
    ) -> None:
        """Bring back what a store kept: rooms (without members, so a room
        left with no history is forgotten), their history and next ids, and
        remembered refs (see :meth:`History.restore`; *refs* as (user_id,
        ref, ack JSON), oldest first).  Call it on a new state, before any
        command; then write :meth:`take_ops` (trims to today's budgets) back
        to the store."""
        logs = self.history.restore(rooms, messages)
        for name, log in logs.items():
            if not log.entries:
                self.history.drop(log)
                continue
            self._rooms[name] = _Room(log)
            self._empty[name] = None
        while len(self._rooms) > self.max_rooms:
            self._drop(next(iter(self._empty)))
        for user_id, ref, ack in refs:
            self.refs.remember(user_id, ref, parse_server_frame(ack))

    def expire(self, now: float) -> None:
        """Trim the history older than ``history_max_age``."""
        self.history.expire(now)

    # ------------------------------------------------------------ queries

    def stats(self) -> HubStats:
        return HubStats(
            connections=len(self._conns),
            users=len(self._users),
            rooms=len(self._rooms),
            messages=self._messages,
            history=self.history.messages,
            history_bytes=self.history.bytes,
        )

    def user_of(self, key: Key) -> str:
        return self._conns[key].user_id

    def is_connected(self, user_id: str) -> bool:
        return user_id in self._users

    def rooms_of(self, key: Key) -> list[str]:
        return list(self._conns[key].rooms)

    def members(self, room: str) -> list[str]:
        entry = self._rooms.get(room)
        return list(entry.users) if entry else []

    def connections_in(self, room: str) -> list[Key]:
        entry = self._rooms.get(room)
        return list(entry.conns) if entry else []

    def room_names(self) -> list[str]:
        return list(self._rooms)

    def last_id(self, room: str) -> int | None:
        entry = self._rooms.get(room)
        return entry.log.last_id if entry else None

    def epoch(self, room: str) -> str | None:
        """The name of *room*'s current numbering (see :class:`RoomLog`)."""
        entry = self._rooms.get(room)
        return entry.log.epoch if entry else None

    def room_log(self, room: str) -> RoomLog | None:
        entry = self._rooms.get(room)
        return entry.log if entry else None

    # ------------------------------------------------------------ commands

    def rooms_created_by(self, client: str) -> int:
        """Rooms *client* created that still exist."""
        return self._clients.get(client, 0)

    def empty_rooms(self) -> list[str]:
        """Rooms without members, the next to be forgotten first."""
        return list(self._empty)

    def empty_room_count(self) -> int:
        return len(self._empty)

    def connect(self, key: Key, user_id: str, client: str | None = None) -> list[Delivery]:
        """Register a new connection of *user_id*, creating rooms on *client*'s quota."""
        if key in self._conns:
            raise ValueError(f"connection {key!r} is already connected")
        self._conns[key] = _Conn(user_id, client=client)
        self._users.setdefault(user_id, _User()).conns[key] = None
        return []

    def disconnect(self, key: Key) -> list[Delivery]:
        """Forget a connection: it leaves every room it was in."""
        conn = self._conns.get(key)
        if conn is None:
            return []
        deliveries: list[Delivery] = []
        for room in list(conn.rooms):
            deliveries += self._leave(key, conn, room)
        for room in conn.created:
            self._rooms[room].creator = None
        del self._conns[key]
        user = self._users[conn.user_id]
        del user.conns[key]
        if not user.conns:
            del self._users[conn.user_id]
        return deliveries

    def handle(self, key: Key, event: ClientEvent, now: float) -> list[Delivery]:
        """Apply one client event from connection *key*."""
        conn = self._conns[key]
        if isinstance(event, Chat):
            if event.room not in conn.rooms:
                raise ProtocolError(
                    403, f"join room {event.room!r} before chatting in it", event.ref
                )
            _, deliveries = self.publish(
                conn.user_id, event.room, event.content, now, ref=event.ref, sender=key
            )
            return deliveries
        if isinstance(event, Join):
            if self.history_max_age:
                self.history.expire(now)
            return self._join(key, conn, event)
        if isinstance(event, Leave):
            return [
                Delivery(Left(event.room, event.ref), (key,)),
                *self._leave(key, conn, event.room),
            ]
        if isinstance(event, Direct):
            _, deliveries = self.direct(
                conn.user_id, event.to, event.content, now, ref=event.ref, sender=key
            )
            return deliveries
        if isinstance(event, Presence):
            return self._presence(conn.user_id, event)
        if isinstance(event, Typing):
            room = self._rooms.get(event.room)
            if room is None or key not in room.conns:
                raise ProtocolError(403, f"join room {event.room!r} before typing in it", event.ref)
            others = tuple(k for k in room.conns if k != key)
            notice = TypingNotice(event.room, conn.user_id)
            return [Delivery(notice, others, ephemeral=True)] if others else []
        raise TypeError(f"not a client event: {event!r}")

    def publish(
        self,
        user_id: str,
        room: str,
        content: str,
        now: float,
        *,
        ref: str | None = None,
        sender: Key | None = None,
        create: bool = False,
    ) -> tuple[ChatAck, list[Delivery]]:
        """Publish a chat message as *user_id*; return its ack and deliveries.

        The message goes to every connection in *room* but *sender*, which
        gets the ack.  A *ref* this user already published answers with the
        original ack and publishes nothing.  Without *create*, an unknown
        room is refused with 404.
        """
        seen = self._seen(user_id, ref)
        if seen is not None:
            replay = [Delivery(seen, (sender,))] if sender is not None else []
            return seen, replay  # type: ignore[return-value]
        entry = self._rooms.get(room)
        if entry is None:
            if not create:
                raise ProtocolError(404, f"room {room!r} does not exist", ref)
            entry = self._room(room, ref)
        self._rooms.move_to_end(room)
        message = self.history.append(entry.log, user_id, content, now, format_time(now))
        self._messages += 1
        ack = ChatAck(message.id, room, message.time, ref)
        self._remember(user_id, ref, ack)
        if not entry.conns:
            if entry.log.entries:
                self._empty.move_to_end(room)
            else:
                self._drop(room)
        deliveries = [Delivery(message, tuple(k for k in entry.conns if k != sender))]
        if sender is not None:
            deliveries.append(Delivery(ack, (sender,)))
        return ack, deliveries

    def direct(
        self,
        user_id: str,
        to: str,
        content: str,
        now: float,
        *,
        ref: str | None = None,
        sender: Key | None = None,
    ) -> tuple[DirectAck, list[Delivery]]:
        """Send a direct message from *user_id* to every connection of *to*."""
        seen = self._seen(user_id, ref)
        if seen is not None:
            replay = [Delivery(seen, (sender,))] if sender is not None else []
            return seen, replay  # type: ignore[return-value]
        addressee = self._users.get(to)
        if addressee is None:
            raise ProtocolError(404, f"user {to!r} is not connected", ref)
        time = format_time(now)
        ack = DirectAck(to, time, ref)
        self._remember(user_id, ref, ack)
        deliveries = [Delivery(DirectMessage(user_id, content, time), tuple(addressee.conns))]
        if sender is not None:
            deliveries.append(Delivery(ack, (sender,)))
        return ack, deliveries

    # ------------------------------------------------------------ internals

    def _room(
        self, name: str, ref: str | None, key: Key = None, conn: _Conn | None = None
    ) -> _Room:
        """The room called *name*, created if new (by connection *key*).

        A new room counts against its creator's quotas; when the table is
        full the least recently used empty room is forgotten.  Refusals
        (403) cost O(1).
        """
        entry = self._rooms.get(name)
        if entry is not None:
            return entry
        client = None
        if conn is not None:
            client = conn.client
            if len(conn.created) >= self.max_rooms_created_per_connection:
                self._refused("connection")
                raise ProtocolError(
                    403,
                    f"a connection may have created at most "
                    f"{self.max_rooms_created_per_connection} rooms that still exist",
                    ref,
                )
            if (
                client is not None
                and self._clients.get(client, 0) >= self.max_rooms_created_per_client
            ):
                self._refused("client")
                raise ProtocolError(
                    403,
                    f"a client may have created at most "
                    f"{self.max_rooms_created_per_client} rooms that still exist",
                    ref,
                )
        if len(self._rooms) >= self.max_rooms:
            if not self._empty:
                self._refused("server")
                raise ProtocolError(403, "the server's room limit is reached", ref)
            self._drop(next(iter(self._empty)))
        entry = self._rooms[name] = _Room(self.history.open(name), client=client)
        self._empty[name] = None
        if conn is not None:
            entry.creator = key
            conn.created[name] = None
        if client is not None:
            self._clients[client] = self._clients.get(client, 0) + 1
        return entry

    def _refused(self, reason: str) -> None:
        self.rooms_refused[reason] = self.rooms_refused.get(reason, 0) + 1

    def _drop(self, name: str) -> None:
        """Forget an empty room: its ids, history and quota."""
        entry = self._rooms.pop(name)
        self._empty.pop(name, None)
        self.history.drop(entry.log)
        if entry.creator is not None:
            del self._conns[entry.creator].created[name]
        client = entry.client
        if client is not None:
            left = self._clients[client] - 1
            if left:
                self._clients[client] = left
            else:
                del self._clients[client]

    def _join(self, key: Key, conn: _Conn, event: Join) -> list[Delivery]:
        if event.room not in conn.rooms and len(conn.rooms) >= self.max_rooms_per_connection:
            raise ProtocolError(
                403,
                f"a connection may be in at most {self.max_rooms_per_connection} rooms",
                event.ref,
            )
        entry = self._room(event.room, event.ref, key, conn)
        self._rooms.move_to_end(event.room)
        deliveries: list[Delivery] = []
        if key in entry.conns:
            # Joined already: every message since its first joined has been
            # sent to it, so there is no history to send again.
            history: list[dict[str, Any]] = []
            truncated = False
        else:
            others = tuple(entry.conns)
            if not others:
                del self._empty[event.room]
            entry.conns[key] = None
            conn.rooms[event.room] = None
            count = entry.users.get(conn.user_id, 0)
            entry.users[conn.user_id] = count + 1
            if count == 0:
                # To nobody when the room was empty: still an event of the
                # room (the hub's observers see it).
                system = System("join", event.room, conn.user_id)
                deliveries.append(Delivery(system, others))
            history, truncated = entry.log.after(event.since)
            budget = joined_budget(self.joined_bytes, event.room, entry.users)
            if sum(_payload_bound(p) for p in history) > budget:
                history, trimmed = newest_within(history, payload_bytes, budget)
                truncated = truncated or trimmed
        joined = Joined(
            event.room, list(entry.users), history, truncated, event.ref, entry.log.epoch
        )
        deliveries.insert(0, Delivery(joined, (key,)))
        for member in entry.users:
            user = self._users[member]
            if user.status is not None and member != conn.user_id:
                update = PresenceUpdate(member, user.status, user.text)
                deliveries.append(Delivery(update, (key,), ephemeral=True))
        return deliveries

    def _leave(self, key: Key, conn: _Conn, room: str) -> list[Delivery]:
        entry = self._rooms.get(room)
        if entry is None or key not in entry.conns:
            return []
        del entry.conns[key]
        del conn.rooms[room]
        count = entry.users[conn.user_id] - 1
        if count:
            entry.users[conn.user_id] = count
            return []
        del entry.users[conn.user_id]
        leave = Delivery(System("leave", room, conn.user_id), tuple(entry.conns))
        if not entry.conns:
            if entry.log.entries:
                self._rooms.move_to_end(room)
                self._empty[room] = None
            else:
                self._drop(room)
        return [leave]

    def _presence(self, user_id: str, event: Presence) -> list[Delivery]:
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
