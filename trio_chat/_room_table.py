"""The hub's table of rooms (memory and SQLite stores), in the orders it
needs them.

:class:`RoomTable` keeps every :class:`Room` by name, least recently used
first, and the rooms without members in their own least-recently-used
order (the next to be forgotten when the table is full).  It also keeps the
room directory in the order ``rooms`` lists it (most members first, then by
name), updated as rooms, their member counts and topics change rather than
sorted per request.  What a room may be (quotas, refusals) is the hub
state's to decide; this only keeps the orders.  Pure and synchronous.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterator

import attrs

from ._log import RoomLog
from ._room_core import Key

__all__ = ["DirectoryEntry", "Room", "RoomTable", "directory_entry"]

#: A directory entry: name, member users, topic, and name and topic
#: case-folded (what a query is matched against).
DirectoryEntry = tuple[str, int, "str | None", str]


def directory_entry(name: str, members: int, topic: str | None) -> DirectoryEntry:
    """Room *name*'s entry in the directory."""
    return name, members, topic, f"{name}\n{topic or ''}".casefold()


@attrs.define
class Room:
    log: RoomLog
    #: Member connections, in join order (a dict used as an ordered set).
    conns: dict[Key, None] = attrs.Factory(dict)
    #: Member users and how many of their connections are in the room.
    users: dict[str, int] = attrs.Factory(dict)
    #: The connection that created it, while it is connected.
    creator: Key | None = None
    #: The client whose quota it counts against.
    client: str | None = None
    topic: str | None = None

    @property
    def worth_keeping(self) -> bool:
        """Whether it is kept without members: it has history or a topic."""
        return bool(self.log.entries) or self.topic is not None


class RoomTable(OrderedDict[str, Room]):
    """Rooms by name, least recently used first, with the empty ones in
    their own least-recently-used order, and the directory's order.

    Change it through its methods, which keep the orders right; reading it
    is reading an ordered dict.  The directory is kept in buckets of rooms
    with the same number of member users, each sorted by name, so that a
    member joining or leaving costs a bisection in one bucket and listing
    the first rooms costs only those rooms, whatever the table holds.
    """

    def __init__(self) -> None:
        super().__init__()
        #: The rooms without members, least recently used first.
        self._empty: OrderedDict[str, None] = OrderedDict()
        #: Member users -> the rooms with that many, sorted by name.
        self._buckets: dict[int, list[str]] = {}
        #: The bucket each room is in, and its name and topic case-folded.
        self._listed: dict[str, tuple[int, str]] = {}

    def add(self, name: str, room: Room) -> Room:
        """A new room, without members."""
        self[name] = room
        self._empty[name] = None
        self._file(name, room)
        return room

    def forget(self, name: str) -> Room:
        """Forget *name*."""
        room = self.pop(name)
        self._empty.pop(name, None)
        self._unfile(name)
        return room

    def used(self, name: str) -> None:
        """*name* was used (a join, a message): the last to be forgotten."""
        self.move_to_end(name)
        if name in self._empty:
            self._empty.move_to_end(name)

    def occupied(self, name: str) -> None:
        """*name* has its first member connection."""
        del self._empty[name]

    def vacated(self, name: str) -> None:
        """*name*'s last member connection left (and it is worth keeping)."""
        self.move_to_end(name)
        self._empty[name] = None

    def changed(self, name: str) -> None:
        """*name*'s member users or topic changed: its place in the directory."""
        self._unfile(name)
        self._file(name, self[name])

    def empty(self) -> list[str]:
        """The rooms without members, the next to be forgotten first."""
        return list(self._empty)

    def empty_count(self) -> int:
        return len(self._empty)

    def oldest_empty(self) -> str | None:
        """The next room to be forgotten (None: every room has members)."""
        return next(iter(self._empty), None)

    def directory(self) -> Iterator[DirectoryEntry]:
        """Every room as (name, member users, topic, name and topic
        case-folded), most members first, then by name (lazily)."""
        for count in sorted(self._buckets, reverse=True):
            for name in self._buckets[count]:
                yield name, count, self[name].topic, self._listed[name][1]

    def _file(self, name: str, room: Room) -> None:
        count = len(room.users)
        bisect.insort(self._buckets.setdefault(count, []), name)
        self._listed[name] = (count, directory_entry(name, count, room.topic)[3])

    def _unfile(self, name: str) -> None:
        count, _ = self._listed.pop(name)
        bucket = self._buckets[count]
        del bucket[bisect.bisect_left(bucket, name)]
        if not bucket:
            del self._buckets[count]
