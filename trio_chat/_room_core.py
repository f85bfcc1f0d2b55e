"""What every hub state shares, whichever store keeps the rooms.

:class:`RoomCore` is the part of the hub's bookkeeping that does not depend
on where messages are ordered and kept: connections and their users, the
room quotas and their 403 refusals, the dispatch of client events, and where
an ack goes (:meth:`RoomCore.answer`).  :class:`~trio_chat._hub_state.HubState`
(the memory and SQLite stores, ids assigned here) and
:class:`~trio_chat._backplane_state.ClusterState` (the Redis store, ids
assigned by Redis) build on it, so that both apply the same rules with the
same words; each supplies the room side (joining, leaving, publishing,
presence, typing).

The contract of every command: it returns the deliveries to make now, and
queues the operations its store must carry out (``take_ops``).  The answer
to a ``chat`` or ``direct`` goes to its *reply_to*: a connection (which the
message itself skips), a :class:`Reply` (an embedder's call), or nowhere.
Pure and synchronous: no I/O, no clock.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import attrs

from ._message_frames import MessageFrame
from ._protocol import (
    Chat,
    ClientEvent,
    Direct,
    Join,
    Leave,
    Left,
    Presence,
    ProtocolError,
    ServerEvent,
    System,
    Typing,
)

__all__ = ["Conn", "Delivery", "Encoded", "HubStats", "Key", "Post", "Reply", "RoomCore"]

Key = Hashable


class Encoded(Protocol):
    """An event already encoded (as the Redis store has them)."""

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


class Reply:
    """Where the answer to an embedder's ``publish`` or ``direct`` goes:
    :meth:`resolve` keeps it and calls *done* (the hub actor wakes its
    caller)."""

    __slots__ = ("done", "error", "value")

    def __init__(self, done: Callable[[], None] = lambda: None) -> None:
        self.done = done
        self.value: Any = None
        self.error: BaseException | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.done()


@attrs.frozen
class Post:
    """A ``chat`` (*to* a room) or ``direct`` (*to* a user) on its way in."""

    user_id: str
    to: str
    content: str
    now: float
    ref: str | None = None
    #: Who gets the ack (and whom the message skips).
    reply_to: Key | Reply | None = None
    #: A chat may create its room (else: 404 for an unknown room).
    create: bool = False


@attrs.define(eq=False)
class Conn:
    """One connection: its user, its rooms, whose room quota it uses."""

    user_id: str
    client: str | None = None
    rooms: dict[str, None] = attrs.Factory(dict)
    #: Rooms it created that still exist (with Redis: that it opened here).
    created: dict[str, None] = attrs.Factory(dict)
    #: How the Redis store names it to other processes (``node:serial``).
    origin: str = "-"


class _User(Protocol):
    conns: dict[Key, None]


U = TypeVar("U", bound=_User)


@attrs.define(kw_only=True)
class RoomCore(abc.ABC, Generic[U]):
    """Connections, users, room quotas and the dispatch of client events.

    Args:
        max_rooms: rooms kept at once (what happens past it is the store's).
        max_rooms_per_connection: rooms one connection may be in at once.
        max_rooms_created_per_connection: rooms one connection may have
            created that still exist.
        max_rooms_created_per_client: the same for each client (the
            ``client`` given to :meth:`connect`: an IP, or a user).

    Every refusal is O(1) and raises :class:`~trio_chat.ProtocolError`
    before any state changes.
    """

    max_rooms: int = 10_000
    max_rooms_per_connection: int = 100
    max_rooms_created_per_connection: int = 100
    max_rooms_created_per_client: int = 500

    _conns: dict[Key, Conn] = attrs.field(init=False, factory=dict)
    _users: dict[str, U] = attrs.field(init=False, factory=dict)
    #: Client -> rooms it created that still exist.
    _clients: dict[str, int] = attrs.field(init=False, factory=dict)
    #: Room creations refused, by the bound: ``connection``, ``client``, ``server``.
    rooms_refused: dict[str, int] = attrs.field(init=False, factory=dict)
    #: The rooms kept here, by name (each with ``conns``, its connections
    #: here); the store's state says what else.
    _rooms: dict[str, Any] = attrs.field(init=False, factory=dict)

    # ------------------------------------------------------------ queries

    def user_of(self, key: Key) -> str:
        return self._conns[key].user_id

    def has_connection(self, key: Key) -> bool:
        """Whether the connection *key* is connected here."""
        return key in self._conns

    def is_connected(self, user_id: str) -> bool:
        """Whether *user_id* has a connection here."""
        return user_id in self._users

    def connections_of(self, user_id: str) -> list[Key]:
        """The connections of *user_id* here (none when it is not connected)."""
        user = self._users.get(user_id)
        return list(user.conns) if user is not None else []

    def rooms_of(self, key: Key) -> list[str]:
        return list(self._conns[key].rooms)

    def rooms_created_by(self, client: str) -> int:
        """Rooms *client* created that still exist."""
        return self._clients.get(client, 0)

    def stats(self) -> HubStats:
        messages, history, history_bytes = self._counts()
        return HubStats(
            len(self._conns), len(self._users), len(self._rooms), messages, history, history_bytes
        )

    @abc.abstractmethod
    def _counts(self) -> tuple[int, int, int]:
        """Messages published here, and the history kept (messages, bytes)."""

    def room_names(self) -> list[str]:
        """The rooms kept here."""
        return list(self._rooms)

    @abc.abstractmethod
    def members(self, room: str) -> list[str]:
        """The users in *room*."""

    def connections_in(self, room: str) -> list[Key]:
        """The connections here in *room*, in join order."""
        entry = self._rooms.get(room)
        return list(entry.conns) if entry else []

    @abc.abstractmethod
    def last_id(self, room: str) -> int | None:
        """The id of *room*'s newest message (None: not known here)."""

    @abc.abstractmethod
    def take_ops(self) -> list[Any]:
        """What the store must carry out for the commands applied since the
        last call, in order."""

    # ------------------------------------------------------------ commands

    def connect(self, key: Key, user_id: str, client: str | None = None) -> list[Delivery]:
        """Register a new connection of *user_id*, creating rooms on *client*'s quota."""
        if key in self._conns:
            raise ValueError(f"connection {key!r} is already connected")
        self._conns[key] = self._new_conn(key, user_id, client)
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = self._new_user(user_id)
        user.conns[key] = None
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
            self._creator_gone(room)
        del self._conns[key]
        self._conn_gone(conn)
        user = self._users[conn.user_id]
        del user.conns[key]
        if not user.conns:
            del self._users[conn.user_id]
            self._user_gone(conn.user_id)
        return deliveries

    def handle(self, key: Key, event: ClientEvent, now: float) -> list[Delivery]:
        """Apply one client event from connection *key*."""
        conn = self._conns[key]
        if isinstance(event, Chat):
            self._member(conn, event.room, "chatting in", event.ref)
            content = event.content
            return self.publish(
                conn.user_id, event.room, content, now, ref=event.ref, reply_to=key, create=True
            )
        if isinstance(event, Join):
            if event.room not in conn.rooms and len(conn.rooms) >= self.max_rooms_per_connection:
                raise ProtocolError(
                    403,
                    f"a connection may be in at most {self.max_rooms_per_connection} rooms",
                    event.ref,
                )
            return self._join(key, conn, event, now)
        if isinstance(event, Leave):
            return [
                Delivery(Left(event.room, event.ref), (key,)),
                *self._leave(key, conn, event.room),
            ]
        if isinstance(event, Direct):
            return self.direct(
                conn.user_id, event.to, event.content, now, ref=event.ref, reply_to=key
            )
        if isinstance(event, Presence):
            return self._set_presence(conn.user_id, event)
        if isinstance(event, Typing):
            self._member(conn, event.room, "typing in", event.ref)
            return self._typing(key, conn, event.room)
        if isinstance(event, MessageFrame):
            return self._message_frame(key, conn, event, now)
        return self._extended(key, conn, event, now)

    def publish(
        self,
        user_id: str,
        room: str,
        content: str,
        now: float,
        *,
        ref: str | None = None,
        reply_to: Key | Reply | None = None,
        create: bool = False,
    ) -> list[Delivery]:
        """Publish a chat message as *user_id* into *room*.

        The message goes to every connection in *room* but *reply_to*, and
        its ack to *reply_to*.  A *ref* this user already published is
        answered with the original ack and publishes nothing.  Without
        *create*, an unknown room is refused with 404.
        """
        return self._publish(Post(user_id, room, content, now, ref, reply_to, create))

    def direct(
        self,
        user_id: str,
        to: str,
        content: str,
        now: float,
        *,
        ref: str | None = None,
        reply_to: Key | Reply | None = None,
    ) -> list[Delivery]:
        """Send a direct message from *user_id* to *to*: stored in their
        conversation, to every connection of *to* and of *user_id* but
        *reply_to*, which gets the ack."""
        return self._direct(Post(user_id, to, content, now, ref, reply_to))

    # ------------------------------------------------------------ moderation

    #: The refusal of what a store does not offer (error 501).
    not_offered: ClassVar[str] = "not available with this store"

    def delete_any(
        self, room: str, id_: int, by: str, text: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Delete message *id_* of *room*, whoever wrote it, as moderator
        *by*: *reply_to* gets the tombstone (a :class:`ChatMessage`)."""
        raise ProtocolError(501, self.not_offered)

    def set_topic(
        self, room: str, topic: str, by: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Set *room*'s topic as *by* (a moderator, the embedding program)."""
        raise ProtocolError(501, self.not_offered)

    def close_room(
        self, room: str, text: str, by: str, reply_to: Reply | None = None
    ) -> list[Delivery]:
        """Close *room* as moderator *by*: *reply_to* gets how many
        connections it removed."""
        raise ProtocolError(501, self.not_offered)

    @staticmethod
    def _closed(
        room: str, by: str, text: str, keys: tuple[Key, ...], reply_to: Reply | None = None
    ) -> list[Delivery]:
        """What the connections *keys* removed from *room* by a close get:
        ``system`` ``close`` (from *by*, with *text*), then ``left``;
        *reply_to* gets how many they are."""
        if reply_to is not None:
            reply_to.resolve(len(keys))
        return [Delivery(System("close", room, by, text), keys), Delivery(Left(room), keys)]

    def answer(
        self,
        reply_to: Key | Reply | None,
        ack: ServerEvent | None,
        error: ProtocolError | None = None,
    ) -> list[Delivery]:
        """Send *ack* (or *error*) to *reply_to*, if it is still there."""
        if isinstance(reply_to, Reply):
            reply_to.resolve(ack, error)
            return []
        if reply_to is None or reply_to not in self._conns:
            return []
        event = error.to_event() if error is not None else ack
        return [] if event is None else [Delivery(event, (reply_to,))]

    # ------------------------------------------------------------ quotas

    def _member(self, conn: Conn, room: str, doing: str, ref: str | None) -> None:
        if room not in conn.rooms:
            raise ProtocolError(403, f"join room {room!r} before {doing} it", ref)

    def _may_create(self, conn: Conn, ref: str | None, full: bool) -> None:
        """Refuse a new room by *conn* beyond its quotas, or when the
        server's rooms are *full*."""
        if len(conn.created) >= self.max_rooms_created_per_connection:
            self._refused("connection")
            raise ProtocolError(
                403,
                f"a connection may have created at most "
                f"{self.max_rooms_created_per_connection} rooms that still exist",
                ref,
            )
        client = conn.client
        if client is not None and self._clients.get(client, 0) >= self.max_rooms_created_per_client:
            self._refused("client")
            raise ProtocolError(
                403,
                f"a client may have created at most "
                f"{self.max_rooms_created_per_client} rooms that still exist",
                ref,
            )
        if full:
            self._refused("server")
            raise ProtocolError(403, "the server's room limit is reached", ref)

    def _created(self, conn: Conn | None, client: str | None, room: str) -> None:
        """*room* now counts against *conn*'s and *client*'s quotas."""
        if conn is not None:
            conn.created[room] = None
        if client is not None:
            self._clients[client] = self._clients.get(client, 0) + 1

    def _released(self, creator: Key | None, client: str | None, room: str) -> None:
        """*room* is gone: it no longer counts against its creator's quotas."""
        if creator is not None:
            del self._conns[creator].created[room]
        if client is not None:
            left = self._clients[client] - 1
            if left:
                self._clients[client] = left
            else:
                del self._clients[client]

    def _refused(self, reason: str) -> None:
        self.rooms_refused[reason] = self.rooms_refused.get(reason, 0) + 1

    # ------------------------------------------------------------ the store's side

    def _new_conn(self, key: Key, user_id: str, client: str | None) -> Conn:
        return Conn(user_id, client)

    @abc.abstractmethod
    def _new_user(self, user_id: str) -> U:
        """The store's record of a user's first connection here."""

    def _conn_gone(self, conn: Conn) -> None:
        """A connection was forgotten (after leaving its rooms)."""

    def _user_gone(self, user_id: str) -> None:
        """*user_id*'s last connection here was forgotten."""

    @abc.abstractmethod
    def _creator_gone(self, room: str) -> None:
        """The connection that created *room* is gone: the room no longer
        counts against that connection's quota."""

    @abc.abstractmethod
    def _join(self, key: Key, conn: Conn, event: Join, now: float) -> list[Delivery]:
        """*conn* joins ``event.room`` (created within the quotas): its
        ``joined``, and the notice to the others."""

    def _leave(self, key: Key, conn: Conn, room: str) -> list[Delivery]:
        """*conn* leaves *room* (nothing if it is not in it)."""
        entry = self._rooms.get(room)
        if entry is None or key not in entry.conns:
            return []
        del entry.conns[key]
        del conn.rooms[room]
        return self._left(key, conn, room, entry)

    @abc.abstractmethod
    def _left(self, key: Key, conn: Conn, room: str, entry: Any, /) -> list[Delivery]:
        """What the store does once *conn* left *room* (*entry*, its state)."""

    @abc.abstractmethod
    def _publish(self, post: Post) -> list[Delivery]:
        """A chat message into a room, appended to its log."""

    @abc.abstractmethod
    def _direct(self, post: Post) -> list[Delivery]:
        """A direct message to a user."""

    @abc.abstractmethod
    def _set_presence(self, user_id: str, event: Presence) -> list[Delivery]:
        """*user_id*'s new presence, told to those who see it."""

    @abc.abstractmethod
    def _typing(self, key: Key, conn: Conn, room: str) -> list[Delivery]:
        """A typing notice in *room*."""

    @abc.abstractmethod
    def _message_frame(
        self, key: Key, conn: Conn, event: MessageFrame, now: float
    ) -> list[Delivery]:
        """An ``edit``, ``delete``, ``react`` or ``history`` of a log's
        messages (or its refusal, if the store does not offer it)."""

    @abc.abstractmethod
    def _extended(self, key: Key, conn: Conn, event: ClientEvent, now: float) -> list[Delivery]:
        """A client event of the protocol's extensions (conversations, read
        markers, topics, ...): applied, or refused if the store does not
        offer it.  Raises ``TypeError`` for what is no client event."""
