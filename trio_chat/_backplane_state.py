"""The Redis store's side of the hub: one process's view of a shared cluster.

:class:`ClusterState` is the hub state when rooms are kept in Redis: the
rooms and connections served here
(:class:`~trio_chat._backplane_rooms.ClusterRooms`), and what Redis answers
and tells (this module).  The connections, users, room quotas, refusals and
the dispatch of client events are the same as for the memory and SQLite
stores (the shared :class:`~trio_chat._room_core.RoomCore`); what differs is
who assigns ids and who knows the members.  Pure and synchronous like the other states: each
command returns the :class:`~trio_chat._room_core.Delivery` list it causes
for this process's connections; what must happen in Redis is appended to an
outbox of :class:`Op` records (:meth:`ClusterState.take_ops`), whose results
come back later through :meth:`ClusterState.on_result` (a chat's delivery
and its ack come with its result: it is "appended" once Redis assigned its
id).  It never performs I/O.

What Redis decides, and this state only follows:

* chat ids (per room) and direct-message ids (per conversation) come from
  Redis and every message is kept in a Redis Stream, so every process
  delivers the same messages with the same ids;
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

from typing import Any

import attrs

from ._backplane_direct import ClusterConversations
from ._backplane_logs import ServedRoom
from ._backplane_ops import (
    FILL_COUNT,
    UNAVAILABLE,
    ChatOp,
    CloseOp,
    ConversationsOp,
    DirectOp,
    FillOp,
    FloorOp,
    LoadOp,
    MemberOp,
    MembersOp,
    OnlineOp,
    Op,
    PageOp,
    RawEvent,
    ReviseOp,
    RevisionsOp,
    RoomsOp,
    SyncOp,
    TopicOp,
)
from ._protocol import (
    CHAT_PREFIX,
    ChatAck,
    ErrorEvent,
    ProtocolError,
    System,
)
from ._room_core import Delivery, Key

__all__ = ["ClusterState"]


@attrs.define
class ClusterState(ClusterConversations):
    """This process's connections, rooms and cursors, beside Redis (see
    :class:`~trio_chat._backplane_rooms.ClusterRooms` for its arguments),
    and what Redis answers and tells.
    """

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
        """Pub/sub messages were dropped here: fill every log from Redis,
        and read every room's revised messages again."""
        for kind, name, log in self._named_logs():
            if log.ready:
                self._fill(kind, name, log)
        for name, room in self._rooms.items():
            if room.log.ready:
                self._refresh(name, room)

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
                room.members_version = room.revision = 0
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
                self._refresh(name, room)
        self.up = True

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
                elif kind == "o":
                    deliveries += self._topic_event(target[2:], int(number), origin, subject, frame)
                elif kind == "c":
                    deliveries += self._close_news(target[2:], int(number), origin, subject, frame)
                elif kind == "v":
                    deliveries += self._revised(
                        target[2:], int(number), origin, int(subject), frame
                    )
                elif kind == "t":
                    deliveries += self._remote_typing(target, origin, frame)
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

    def _system(self, name: str, room: ServedRoom, user_id: str, joined: bool) -> list[Delivery]:
        to = tuple(k for k in room.conns if self._conns[k].user_id != user_id)
        event = System("join" if joined else "leave", name, user_id)
        # Also to nobody: an event of the room, which the hub's observers see.
        return [Delivery(event, to)]

    def _remote_typing(self, target: str, origin: str, frame: str) -> list[Delivery]:
        """A typing notice from another process: in a room (*target*
        ``r:ROOM``) or to a user (``u:USER``)."""
        if origin.partition(":")[0] == self.node:
            return []
        if target[0] == "u":
            user = self._users.get(target[2:])
            to = tuple(user.conns) if user is not None else ()
        else:
            room = self._rooms.get(target[2:])
            to = tuple(room.conns) if room is not None and room.log.ready else ()
        return [Delivery(RawEvent(frame), to, ephemeral=True)] if to else []

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
        if isinstance(op, ConversationsOp):
            return self._conversations_result(op, result)
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
        if isinstance(op, ReviseOp):
            return self._revise_result(op, result)
        if isinstance(op, PageOp):
            return self._page_result(op, result)
        if isinstance(op, RevisionsOp):
            return self._revisions_result(op, result)
        if isinstance(op, TopicOp):
            return self._topic_result(op, result)
        if isinstance(op, RoomsOp):
            return self._rooms_result(op, result)
        if isinstance(op, CloseOp):
            return self._close_result(op, result)
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

    def _loaded(self, op: LoadOp, result: Any) -> list[Delivery]:
        room = self._rooms.get(op.room)
        if room is None or room.log.ready:
            return []
        deliveries: list[Delivery] = []
        if isinstance(result, BaseException):
            # The joins cannot be answered: refuse them, as if never made.
            for key, event in room.pending:
                deliveries.append(Delivery(ErrorEvent(503, UNAVAILABLE, event.ref), (key,)))
            room.pending = []
            for key in list(room.conns):
                self._leave(key, self._conns[key], op.room)
            self._drop_room(op.room, room)
            return deliveries
        room.log.ready = True
        room.log.cursor = result.last_id
        room.epoch = result.epoch or None
        room.revision = result.revision
        room.topic = result.topic or None
        for entry_id, _origin, frame in result.entries:
            if entry_id <= result.last_id:
                self._keep(op.room, room, entry_id, frame, result.revision)
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
        deliveries += self._loaded_topic(op.room)
        deliveries += self._loaded_revisions(op.room, room)
        return deliveries + self._loaded_close(op.room)

    def _members_result(
        self, name: str, version: int, members: list[str], topic: str = ""
    ) -> list[Delivery]:
        # A snapshot of the version known here is applied too: it was asked
        # for when news was found lost, the version taken from the news
        # after the gap.
        room = self._rooms.get(name)
        if room is None or not room.log.ready or version < room.members_version:
            return []
        room.members_version = version
        room.topic = topic or None
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
