"""Moderation state, sans I/O: who is muted where, and who is banned.

Nothing here touches trio or a disk: times are passed in, and the owner
(:mod:`trio_chat._moderator`) persists what must survive a restart.

* :class:`Mutes`: (user, room) -> when the mute ends, on trio's clock; the
  reader's :class:`~trio_chat._policy.Screen` refuses a muted user's chats
  in that room with 403 and the time left.
* :class:`Bans`: banned users and addresses -> (when the ban ends, reason),
  on the wall clock (bans outlive the process); checked at the handshake.

Both are bounded (``max_bans`` entries each, expired ones purged first).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs

from ._protocol import ProtocolError

__all__ = ["Ban", "Bans", "ModerationFull", "Mutes"]


class ModerationFull(ValueError):
    """The table holds ``max_bans`` entries in force: nothing more is added."""


class Mutes:
    """Users muted in rooms until a time (trio's clock)."""

    def __init__(self, limit: int, on_change: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self._until: dict[tuple[str, str], float] = {}
        self.on_change = on_change

    def __bool__(self) -> bool:
        return bool(self._until)

    def __len__(self) -> int:
        return len(self._until)

    def add(self, user_id: str, room: str, until: float, now: float) -> None:
        key = (user_id, room)
        if key not in self._until and len(self._until) >= self.limit:
            self.purge(now)
            if len(self._until) >= self.limit:
                raise ModerationFull(f"at most {self.limit} mutes may be in force")
        self._until[key] = until
        self._changed()

    def remove(self, user_id: str, room: str) -> bool:
        found = self._until.pop((user_id, room), None) is not None
        self._changed()
        return found

    def replace(self, mutes: list[tuple[str, str, float]], now: float) -> int:
        """Hold *mutes* (user, room, until) instead; return how many were
        left out (ended, or beyond the limit)."""
        self._until = {}
        for user_id, room, until in mutes:
            if until > now and len(self._until) < self.limit:
                self._until[(user_id, room)] = until
        self._changed()
        return len(mutes) - len(self._until)

    def remaining(self, user_id: str, room: str, now: float) -> float | None:
        """Seconds left of *user_id*'s mute in *room*, or None."""
        until = self._until.get((user_id, room))
        if until is None:
            return None
        if until <= now:
            del self._until[(user_id, room)]
            self._changed()
            return None
        return until - now

    def check(self, user_id: str, room: str, ref: str | None, now: float) -> None:
        """Raise 403 with the time left if *user_id* is muted in *room*."""
        left = self.remaining(user_id, room, now)
        if left is not None:
            seconds = math.ceil(left)
            raise ProtocolError(
                403,
                f"you are muted in room {room!r} for {seconds} more seconds",
                ref,
                math.ceil(left * 1000),
            )

    def all(self, now: float) -> list[tuple[str, str, float]]:
        """The mutes in force: (user, room, seconds left)."""
        return [(u, r, until - now) for (u, r), until in self._until.items() if until > now]

    def purge(self, now: float) -> None:
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


@attrs.frozen
class Ban:
    """One ban: of a user (``kind`` ``"user"``) or an address (``"ip"``)."""

    kind: str
    target: str
    #: When it ends, in seconds since the epoch (wall clock).
    until: float
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "target": self.target,
            "until": self.until,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, item: dict[str, object]) -> Ban:
        kind, target, until, reason = item["kind"], item["target"], item["until"], item["reason"]
        if kind not in ("user", "ip") or not isinstance(target, str):
            raise ValueError(f"not a ban: {item!r}")
        if not isinstance(until, int | float) or not isinstance(reason, str):
            raise ValueError(f"not a ban: {item!r}")
        return cls(kind, target, float(until), reason)


class Bans:
    """Banned users and addresses, each until a time (the wall clock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._bans: dict[tuple[str, str], Ban] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def add(self, ban: Ban, now: float) -> None:
        key = (ban.kind, ban.target)
        if key not in self._bans and len(self._bans) >= self.limit:
            self.purge(now)
            if len(self._bans) >= self.limit:
                raise ModerationFull(f"at most {self.limit} bans may be in force")
        self._bans[key] = ban

    def replace(self, bans: list[Ban], now: float) -> int:
        """Hold *bans* instead; return how many were left out (ended, or
        beyond the limit)."""
        self._bans = {}
        for ban in bans:
            if ban.until > now and len(self._bans) < self.limit:
                self._bans[(ban.kind, ban.target)] = ban
        return len(bans) - len(self._bans)

    def remove(self, kind: str, target: str) -> bool:
        return self._bans.pop((kind, target), None) is not None

    def find(self, user_id: str | None, address: str | None, now: float) -> Ban | None:
        """The ban in force on *user_id* or *address*, if any."""
        for kind, target in (("user", user_id), ("ip", address)):
            if target is None:
                continue
            ban = self._bans.get((kind, target))
            if ban is not None:
                if ban.until > now:
                    return ban
                del self._bans[(kind, target)]
        return None

    def purge(self, now: float) -> bool:
        """Forget expired bans; whether any went."""
        gone = [k for k, ban in self._bans.items() if ban.until <= now]
        for key in gone:
            del self._bans[key]
        return bool(gone)

    def all(self, now: float) -> list[Ban]:
        return [ban for ban in self._bans.values() if ban.until > now]
