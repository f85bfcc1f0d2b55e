"""What the hub must order and keep: room logs, their budgets, and refs.

Pure and synchronous, like the hub core that uses it: nothing here does I/O
or reads a clock (callers pass ``now``).

* :class:`History` keeps every room's :class:`RoomLog`: it appends a message
  with the room's next gap-free id, reads the messages since an id, and trims
  the oldest messages first to stay within its budgets: messages per room,
  bytes per room, bytes in all, and age.
* :class:`RefMemory` remembers the answer to each accepted ``ref`` (ack
  de-duplication), bounded per user, in users and in all.

Both always keep their state in memory: that is what the hub reads, so it
never waits for a disk.  Made *durable*, they also record each change as a
small operation (:data:`LogOp`) for a store to write: :meth:`History.take_ops`
hands them over.  The memory store writes nothing; the SQLite store
(:mod:`trio_chat._sqlite_store`) writes them in one transaction per batch
and gives them back at the next start (:meth:`History.restore`).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from typing import Any

import attrs

from ._log_ops import (
    AppendOp,
    DropRoomOp,
    LogOp,
    OpenRoomOp,
    RememberOp,
    ReplaceOp,
    TrimOp,
    decode_extra,
    encode_extra,
)
from ._mentions import find_mentions
from ._protocol import ChatMessage, ServerEvent
from ._sizes import MESSAGE_OVERHEAD, REACTION_BYTES, message_bytes, retained_bytes

__all__ = [
    "MESSAGE_OVERHEAD",
    "REACTION_BYTES",
    "AppendOp",
    "DropRoomOp",
    "History",
    "LogOp",
    "OpenRoomOp",
    "RefMemory",
    "RememberOp",
    "ReplaceOp",
    "RoomLog",
    "TrimOp",
    "decode_extra",
    "encode_extra",
    "message_bytes",
    "retained_bytes",
]


def new_epoch() -> str:
    """A fresh name for a room's numbering (see :attr:`RoomLog.epoch`)."""
    return secrets.token_hex(6)


# ------------------------------------------------------------------ rooms


@attrs.define(eq=False)
class RoomLog:
    """Message ids and the retained history of one room.

    Ids start at 1 and grow by exactly 1 per message; ``entries`` holds the
    retained messages, oldest first, each with the bytes it counts for.
    ``epoch`` names this numbering: a room forgotten and created again (or
    kept only in memory, across a restart) gets a new one, so that a client
    can tell that ids started over.
    """

    room: str
    epoch: str
    entries: deque[tuple[ChatMessage, int]] = attrs.Factory(deque)
    last_id: int = 0
    bytes: int = 0
    dropped: bool = False
    #: Known to the store (its first message was recorded).
    stored: bool = False

    @property
    def history(self) -> list[ChatMessage]:
        return [message for message, _ in self.entries]

    @property
    def first_id(self) -> int:
        """The id of the oldest retained message (``last_id + 1`` if none)."""
        return self.last_id - len(self.entries) + 1

    def get(self, id_: int) -> ChatMessage | None:
        """The retained message numbered *id_* (None if it is not retained)."""
        index = id_ - self.first_id
        if 0 <= index < len(self.entries):
            return self.entries[index][0]
        return None

    def unread(self, user_id: str, after: int) -> tuple[int, int]:
        """How many retained messages with ``id > after`` are from other
        users than *user_id* and not deleted, and how many of those mention
        *user_id*."""
        entries = self.entries
        unread = mentions = 0
        for i in range(max(0, after + 1 - self.first_id), len(entries)):
            message = entries[i][0]
            if message.user_id != user_id and not message.deleted:
                unread += 1
                if user_id in message.mentions:
                    mentions += 1
        return unread, mentions

    def after(self, since: int | None) -> tuple[list[dict[str, Any]], bool]:
        """Retained messages with ``id > since`` and whether some are missing.

        Without *since* (or with a *since* beyond the last id, which means the
        room was reset since the client saw it) this is the whole retained
        history, truncated when earlier messages are no longer kept.
        """
        if since is None or since > self.last_id:
            since = 0
        oldest = self.first_id
        skip = max(0, since + 1 - oldest)
        entries = self.entries
        messages = [entries[i][0].payload() for i in range(skip, len(entries))]
        return messages, since + 1 < oldest


@attrs.define
class History:
    """Every room's log, within the retention budgets.

    Args:
        size: messages retained per room.
        bytes_per_room: bytes (:func:`message_bytes`) retained per room.
        bytes_total: bytes retained over all rooms.
        max_age: seconds a message is retained (0: no age limit).
        durable: record each change as an operation for a store.

    Past a budget the oldest messages go first: the room's own for the
    per-room bounds, the server's oldest for the total and the age.  A
    message larger than a budget is kept alone until the next one comes.
    """

    size: int = 100
    bytes_per_room: int = 1 << 20
    bytes_total: int = 128 << 20
    max_age: float = 0.0
    durable: bool = False

    #: Messages retained in all, and their bytes.
    messages: int = attrs.field(init=False, default=0)
    bytes: int = attrs.field(init=False, default=0)
    #: Every retained message in append order: (log, id, bytes, at).  Entries
    #: of messages already trimmed from their room are skipped when met.
    _order: deque[tuple[RoomLog, int, int, float]] = attrs.field(init=False, factory=deque)
    _seq: int = attrs.field(init=False, default=0)
    _ops: list[LogOp] = attrs.field(init=False, factory=list)

    def take_ops(self) -> list[LogOp]:
        """The operations recorded since the last call (durable only)."""
        ops, self._ops = self._ops, []
        return ops

    def record(self, op: LogOp) -> None:
        if self.durable:
            self._ops.append(op)

    def open(self, room: str, epoch: str | None = None, last_id: int = 0) -> RoomLog:
        """A new, empty log for *room* (ids continue after *last_id*).

        A store learns of a room with its first message: a room that never
        had one has nothing worth keeping."""
        return RoomLog(room, epoch or new_epoch(), last_id=last_id, stored=epoch is not None)

    def keep(self, log: RoomLog) -> None:
        """Make the store know of *log* before its first message (for what is
        kept with it, such as a topic)."""
        if self.durable and not log.stored:
            log.stored = True
            self._ops.append(OpenRoomOp(log.room, log.epoch))

    def drop(self, log: RoomLog) -> None:
        """Forget *log* and its messages."""
        log.dropped = True
        self.messages -= len(log.entries)
        self.bytes -= log.bytes
        log.entries.clear()
        log.bytes = 0
        if log.stored:
            self.record(DropRoomOp(log.room))

    def append(
        self, log: RoomLog, user_id: str, content: str, now: float, time: str
    ) -> ChatMessage:
        """Append a message to *log* with the next id, then trim to the budgets."""
        log.last_id += 1
        mentions = find_mentions(content)
        message = ChatMessage(log.last_id, log.room, user_id, content, time, mentions=mentions)
        size = message_bytes(user_id, content, mentions)
        log.entries.append((message, size))
        log.bytes += size
        self.messages += 1
        self.bytes += size
        self._seq += 1
        self._order.append((log, message.id, size, now))
        if self.durable:
            self.keep(log)
            self._ops.append(AppendOp(message, self._seq, now))
        if len(log.entries) > self.size or log.bytes > self.bytes_per_room:
            self._trim_room(log)
        if self.bytes > self.bytes_total:
            self._trim_total(keep=log)
        if self.max_age:
            self.expire(now)
        return message

    def replace(self, log: RoomLog, message: ChatMessage) -> None:
        """Put *message* in the place of the retained message with its id
        (an edit, a tombstone, a reaction), then trim to the budgets if it
        grew: the room's oldest first (*message* too, unless it is the
        room's last), then the server's oldest, whatever their room, as a
        restore would.  O(1) but for the trimming."""
        index = message.id - log.first_id
        if not 0 <= index < len(log.entries):
            raise KeyError(message.id)
        _, old = log.entries[index]
        size = retained_bytes(message)
        log.entries[index] = (message, size)
        log.bytes += size - old
        self.bytes += size - old
        self.record(ReplaceOp(message))
        if size > old:
            if log.bytes > self.bytes_per_room:
                self._trim_room(log)
            if self.bytes > self.bytes_total:
                self._trim_total(keep=None)

    def expire(self, now: float) -> None:
        """Trim the messages older than ``max_age`` (oldest first)."""
        if not self.max_age:
            return
        limit = now - self.max_age
        order = self._order
        trimmed: dict[RoomLog, None] = {}
        while order and order[0][3] < limit:
            log, id_, _, _ = order.popleft()
            if log.dropped or id_ < log.first_id:
                continue
            self._pop_oldest(log)
            trimmed[log] = None
        self._trimmed(trimmed)

    def restore(
        self,
        rooms: list[tuple[str, str, int]],
        messages: list[tuple[int, str, int, str, str, str, float, str | None]],
    ) -> dict[str, RoomLog]:
        """Rebuild the logs a store kept: *rooms* as (name, epoch, last_id),
        *messages* as (seq, room, id, user_id, content, time, at, extra) in
        seq order (*extra*: :func:`encode_extra`'s JSON, or None).

        Returns the logs by room name, then trims them to today's budgets
        (which may be smaller than when the messages were kept).
        """
        logs = {name: self.open(name, epoch, last_id) for name, epoch, last_id in rooms}
        for seq, room, id_, user_id, content, time, at, extra in messages:
            log = logs.get(room)
            newest = log.entries[-1][0].id if log is not None and log.entries else 0
            if log is None or id_ <= newest or id_ > log.last_id:
                continue
            message = decode_extra(ChatMessage(id_, room, user_id, content, time), extra)
            size = retained_bytes(message)
            log.entries.append((message, size))
            log.bytes += size
            self.messages += 1
            self.bytes += size
            self._order.append((log, id_, size, at))
            self._seq = max(self._seq, seq)
        for log in logs.values():
            # The retained messages are always the newest, without a gap:
            # anything older than a gap goes.
            entries = log.entries
            gap = False
            while entries and entries[0][0].id != log.first_id:
                self._pop_oldest(log)
                gap = True
            if len(entries) > self.size or log.bytes > self.bytes_per_room:
                self._trim_room(log)
            elif gap:
                self._trimmed({log: None})
        if self.bytes > self.bytes_total:
            self._trim_total(keep=None)
        return logs

    # ------------------------------------------------------------ trimming

    def _pop_oldest(self, log: RoomLog) -> None:
        _, size = log.entries.popleft()
        log.bytes -= size
        self.messages -= 1
        self.bytes -= size

    def _trimmed(self, logs: dict[RoomLog, None]) -> None:
        if self.durable:
            for log in logs:
                self._ops.append(TrimOp(log.room, log.first_id))
        if len(self._order) > 2 * self.messages + 1024:
            # Compact the skipped entries away (amortized O(1) per message).
            self._order = deque(
                e for e in self._order if not e[0].dropped and e[1] >= e[0].first_id
            )

    def _trim_room(self, log: RoomLog) -> None:
        entries = log.entries
        while len(entries) > 1 and (len(entries) > self.size or log.bytes > self.bytes_per_room):
            self._pop_oldest(log)
        if self.size == 0 and entries:
            self._pop_oldest(log)
        self._trimmed({log: None})

    def _trim_total(self, keep: RoomLog | None) -> None:
        order = self._order
        trimmed: dict[RoomLog, None] = {}
        while order and self.bytes > self.bytes_total:
            log, id_, _, _ = order[0]
            if log.dropped or id_ < log.first_id:
                order.popleft()
                continue
            if log is keep and len(log.entries) == 1:
                break  # the newest message stays, however large
            order.popleft()
            self._pop_oldest(log)
            trimmed[log] = None
        self._trimmed(trimmed)


# ------------------------------------------------------------------ refs


@attrs.define
class RefMemory:
    """The answer to each ``ref`` a user had accepted, to send it again.

    Args:
        per_user: refs remembered per user (the newest).
        users: users whose refs are remembered at once.
        total: refs remembered in all.

    Past either of the last two bounds the least recently active users'
    oldest refs are forgotten first, so memory stays bounded whatever names
    clients choose.
    """

    per_user: int = 1000
    users: int = 10_000
    total: int = 100_000

    _refs: OrderedDict[str, OrderedDict[str, ServerEvent]] = attrs.field(
        init=False, factory=OrderedDict
    )
    _count: int = attrs.field(init=False, default=0)

    def __len__(self) -> int:
        return self._count

    def seen(self, user_id: str, ref: str | None) -> ServerEvent | None:
        """The answer *user_id* had for *ref*, if it is remembered."""
        if ref is None:
            return None
        refs = self._refs.get(user_id)
        if refs is None:
            return None
        seen = refs.get(ref)
        if seen is not None:
            self._refs.move_to_end(user_id)  # resending: recently active
        return seen

    def remember(self, user_id: str, ref: str, ack: ServerEvent) -> None:
        """Remember *ack* as the answer to *user_id*'s *ref*."""
        refs = self._refs.get(user_id)
        if refs is None:
            refs = self._refs[user_id] = OrderedDict()
        else:
            self._refs.move_to_end(user_id)
        if ref not in refs:
            self._count += 1
        refs[ref] = ack
        if len(refs) > self.per_user:
            refs.popitem(last=False)
            self._count -= 1
        self._trim()

    def by_user(self) -> dict[str, list[str]]:
        """Remembered refs per user, least recently active first (for tests)."""
        return {user: list(refs) for user, refs in self._refs.items()}

    def _trim(self) -> None:
        while len(self._refs) > self.users:
            _, refs = self._refs.popitem(last=False)
            self._count -= len(refs)
        while self._count > self.total:
            user_id, refs = next(iter(self._refs.items()))
            refs.popitem(last=False)
            self._count -= 1
            if not refs:
                del self._refs[user_id]
