"""What one process of the Redis store knows of each log it serves.

A log is a room's or a user's inbox of direct messages; for each one served
here :class:`LogProgress` is how far this process delivered it.  A
:class:`ServedRoom` adds the room's local and cluster members and its cached
recent history (the frames, as Redis keeps them), a :class:`ServedUser` its
connections here and its inbox.  Plain records, used by
:class:`~trio_chat._backplane_rooms.ClusterRooms`; no I/O.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import attrs

from ._protocol import Join
from ._room_core import Key
from ._sizes import newest_within

__all__ = [
    "EARLY_REVISIONS",
    "LogProgress",
    "ServedRoom",
    "ServedUser",
    "frame_bytes",
    "pop_oldest",
]

#: Revisions of a loading room's messages kept until it has loaded.
EARLY_REVISIONS = 256


@attrs.define(eq=False)
class LogProgress:
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
class ServedRoom:
    #: The recent messages cached here, oldest first: ``[id, frame, payload
    #: (decoded when first needed), revision]``, the revision being the
    #: room's when that frame was news (0: not known).
    history: deque[list[Any]]
    log: LogProgress = attrs.Factory(LogProgress)
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
    #: The last revision of the room's messages applied here.
    revision: int = 0
    #: Revisions told while the room loads, applied once it has (at most
    #: :data:`EARLY_REVISIONS`; past it they are read again instead).
    early: list[tuple[int, str, int, str]] = attrs.Factory(list)
    early_lost: bool = False
    #: The room's topic, as Redis last told it.
    topic: str | None = None
    #: The newest topic change told while the room loads: its membership
    #: version, origin, who set it and the topic.
    early_topic: tuple[int, str, str, str] | None = None
    #: A close told while the room loads: its membership version, who
    #: closed it, and the text.
    early_close: tuple[int, str, str] | None = None

    def cached(self, id_: int) -> list[Any] | None:
        """The cached item of message *id_* (None if it is not cached)."""
        history = self.history
        if not history:
            return None
        index = id_ - history[0][0]
        if 0 <= index < len(history) and history[index][0] == id_:
            return history[index]
        # A fill that found messages trimmed from the stream leaves gaps.
        return next((item for item in history if item[0] == id_), None)

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
            items, trimmed = newest_within(items, frame_bytes, budget)
        messages = []
        for item in items:
            if item[2] is None:
                item[2] = json.loads(item[1])["payload"]
            messages.append(item[2])
        return messages, trimmed or since + 1 < oldest


def frame_bytes(item: list[Any]) -> int:
    frame: str = item[1]
    return len(frame) if frame.isascii() else len(frame.encode())


def pop_oldest(room: ServedRoom) -> int:
    size = frame_bytes(room.history.popleft())
    room.history_bytes -= size
    return size


@attrs.define(eq=False)
class ServedUser:
    conns: dict[Key, None] = attrs.Factory(dict)
    inbox: LogProgress = attrs.Factory(LogProgress)
