"""Read markers: how far each user has read each room and conversation.

A marker is kept per user and log (a room, or a direct conversation's log)
with the log's numbering (:attr:`~trio_chat._log.RoomLog.epoch`): a marker
of a room that was forgotten and created again, whose ids started over,
reads as 0.  Markers only move forward, and never past the log's newest id.

Bounded whatever clients send: at most ``per_user`` markers per user and
``total`` in all, for at most ``users`` users; past a bound the least
recently moved marker (or user) is forgotten first.  Each change is handed
to *record* as a :class:`~trio_chat._log_ops.MarkOp` (or
:class:`~trio_chat._log_ops.ForgetMarkOp`) for a durable store.  Pure and
synchronous: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import attrs

from ._log import RoomLog
from ._log_ops import ForgetMarkOp, LogOp, MarkOp

__all__ = ["ReadMarkers"]


def _ignore(op: LogOp) -> None:
    pass


@attrs.define
class ReadMarkers:
    """Every user's read markers, within bounds.

    Args:
        per_user: markers kept per user.
        users: users whose markers are kept.
        total: markers kept in all.
        record: called with each change, for a durable store.
    """

    per_user: int = 1000
    users: int = 10_000
    total: int = 100_000
    record: Callable[[LogOp], None] = _ignore

    #: user -> log name -> (epoch, id); least recently moved first.
    _marks: OrderedDict[str, OrderedDict[str, tuple[str, int]]] = attrs.field(
        init=False, factory=OrderedDict
    )
    _count: int = attrs.field(init=False, default=0)

    def __len__(self) -> int:
        return self._count

    def get(self, user_id: str, log: RoomLog) -> int:
        """*user_id*'s marker in *log* (0 if none, or from an earlier numbering)."""
        marks = self._marks.get(user_id)
        if marks is None:
            return 0
        mark = marks.get(log.room)
        return mark[1] if mark is not None and mark[0] == log.epoch else 0

    def move(self, user_id: str, log: RoomLog, id_: int) -> int | None:
        """Move *user_id*'s marker in *log* to *id_* (clamped to the newest
        id); the new marker, or None if it did not move."""
        id_ = min(id_, log.last_id)
        if id_ <= self.get(user_id, log):
            return None
        self.put(user_id, log.room, log.epoch, id_)
        self.record(MarkOp(user_id, log.room, log.epoch, id_))
        return id_

    def put(self, user_id: str, name: str, epoch: str, id_: int) -> None:
        """Set a marker as it is (a store's, when restoring), within the bounds."""
        marks = self._marks.get(user_id)
        if marks is None:
            marks = self._marks[user_id] = OrderedDict()
        else:
            self._marks.move_to_end(user_id)
        if marks.pop(name, None) is None:
            self._count += 1
        marks[name] = (epoch, id_)
        if len(marks) > self.per_user:
            self._forget(user_id, marks, next(iter(marks)))
        while self._count > self.total or len(self._marks) > self.users:
            oldest, theirs = next(iter(self._marks.items()))
            self._forget(oldest, theirs, next(iter(theirs)))

    def _forget(self, user_id: str, marks: OrderedDict[str, tuple[str, int]], name: str) -> None:
        del marks[name]
        self._count -= 1
        if not marks:
            del self._marks[user_id]
        self.record(ForgetMarkOp(user_id, name))
