"""Direct conversations: one message log per pair of users, within bounds.

A conversation is kept like a room (a :class:`~trio_chat._log.RoomLog` in the
hub's :class:`~trio_chat._log.History`, so it shares the history budgets and
the store), under a log name no room can have: the two user ids, sorted,
joined by a space (:func:`conversation_name`; room names and user ids never
hold a space).  :class:`Conversations` indexes them by user and bounds them:
at most ``max_conversations`` in all (the least recently used is forgotten
to make room) and ``per_user`` per user (one more is refused with 403).
Pure and synchronous: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

from ._log import History, RoomLog
from ._protocol import ChatMessage, DirectMessage, ProtocolError

__all__ = [
    "Conversations",
    "conversation_name",
    "conversation_refused",
    "conversation_users",
    "direct_payload",
    "direct_view",
    "is_conversation",
    "no_conversation",
    "to_oneself",
]


def conversation_name(a: str, b: str) -> str:
    """The log name of the conversation between users *a* and *b*."""
    return f"{a} {b}" if a <= b else f"{b} {a}"


def is_conversation(name: str) -> bool:
    """Whether the log name *name* is a conversation's (not a room's)."""
    return " " in name


def conversation_users(name: str) -> tuple[str, str]:
    """The two users of the conversation whose log name is *name*."""
    a, _, b = name.partition(" ")
    return a, b


def conversation_refused(per_user: int, to: str | None, ref: str | None) -> ProtocolError:
    """The refusal (403) of a new conversation past *per_user*: the sender's
    bound, or (with *to*) the addressee's."""
    if to is None:
        return ProtocolError(403, f"a user may be in at most {per_user} conversations", ref)
    return ProtocolError(403, f"{to!r} cannot take new conversations now", ref)


def no_conversation(other: str, ref: str | None) -> ProtocolError:
    """The refusal (404) of a frame naming a conversation that does not exist."""
    return ProtocolError(404, f"there is no conversation with {other!r}", ref)


def to_oneself(ref: str | None) -> ProtocolError:
    """The refusal (400) of a ``direct`` to its sender."""
    return ProtocolError(400, "payload.to: a user cannot write to themselves", ref)


def direct_view(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat payload of a conversation's log as a ``direct`` payload."""
    view = dict(payload)
    a, b = conversation_users(view.pop("room"))
    sender = view.pop("user_id")
    return {"id": view.pop("id"), "from": sender, "to": b if sender == a else a, **view}


def direct_payload(message: ChatMessage) -> dict[str, Any]:
    """A message of a conversation's log as a ``direct`` payload."""
    a, b = conversation_users(message.room)
    return DirectMessage.stored(message, b if message.user_id == a else a).payload()


@attrs.define
class Conversations:
    """Every direct conversation's log, indexed by user.

    Args:
        history: the hub's history, which holds the logs.
        max_conversations: conversations kept at once; past it the least
            recently used one is forgotten (its ids and messages).
        per_user: conversations one user may be in; a new one past it is
            refused (403), for the sender's bound and for the addressee's.

    A conversation is used by each message in it.  Every operation is O(1)
    but :meth:`of` (O(the user's conversations)).
    """

    history: History
    max_conversations: int = 10_000
    per_user: int = 200

    #: Log name -> log, least recently used first.
    _logs: OrderedDict[str, RoomLog] = attrs.field(init=False, factory=OrderedDict)
    #: User -> the other users they have a conversation with, least
    #: recently used first.
    _by_user: dict[str, OrderedDict[str, None]] = attrs.field(init=False, factory=dict)
    #: Conversations forgotten to make room for new ones.
    evicted: int = attrs.field(init=False, default=0)

    def __len__(self) -> int:
        return len(self._logs)

    def get(self, user_id: str, other: str) -> RoomLog | None:
        """The conversation of *user_id* with *other*, if it is kept."""
        return self._logs.get(conversation_name(user_id, other))

    def names(self) -> list[str]:
        """The conversations' log names, the next to be forgotten first."""
        return list(self._logs)

    def count_of(self, user_id: str) -> int:
        """How many conversations *user_id* is in."""
        others = self._by_user.get(user_id)
        return len(others) if others else 0

    def of(self, user_id: str) -> list[tuple[str, RoomLog]]:
        """*user_id*'s conversations as (other user, log), most recent first."""
        others = self._by_user.get(user_id)
        if not others:
            return []
        logs = self._logs
        return [(other, logs[conversation_name(user_id, other)]) for other in reversed(others)]

    def open(self, sender: str, to: str, ref: str | None) -> RoomLog:
        """The conversation of *sender* with *to*, started if new, and now
        the most recently used.

        Raises:
            ProtocolError: 403 when a new conversation would take either
                user past ``per_user`` (nothing changes).
        """
        name = conversation_name(sender, to)
        log = self._logs.get(name)
        if log is None:
            if self.count_of(sender) >= self.per_user:
                raise conversation_refused(self.per_user, None, ref)
            if self.count_of(to) >= self.per_user:
                raise conversation_refused(self.per_user, to, ref)
            if len(self._logs) >= self.max_conversations:
                self.evicted += 1
                self.drop(next(iter(self._logs)))
            log = self.history.open(name)
            self._add(name, log)
            return log
        self._touch(name)
        return log

    def restore(self, log: RoomLog) -> None:
        """Keep *log* (a conversation a store gave back) as the most recently
        used; past ``max_conversations`` the least recently used goes."""
        self._add(log.room, log)
        while len(self._logs) > self.max_conversations:
            self.drop(next(iter(self._logs)))

    def drop(self, name: str) -> None:
        """Forget the conversation *name*: its ids and messages."""
        log = self._logs.pop(name)
        self.history.drop(log)
        for user_id, other in _pairs(name):
            others = self._by_user[user_id]
            del others[other]
            if not others:
                del self._by_user[user_id]

    def _add(self, name: str, log: RoomLog) -> None:
        self._logs[name] = log
        for user_id, other in _pairs(name):
            self._by_user.setdefault(user_id, OrderedDict())[other] = None

    def _touch(self, name: str) -> None:
        self._logs.move_to_end(name)
        for user_id, other in _pairs(name):
            self._by_user[user_id].move_to_end(other)


def _pairs(name: str) -> tuple[tuple[str, str], tuple[str, str]]:
    a, b = conversation_users(name)
    return (a, b), (b, a)
