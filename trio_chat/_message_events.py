"""The server events about messages already published: edits, deletes,
reactions, and pages of history.

Each names its log as the protocol does: ``room`` for a room, or ``with``
(:attr:`with_`) for a direct conversation, the other user from the
recipient's side; exactly one of the two is set.  The copy sent to the
connection whose frame caused the event carries that frame's ``ref``.
Pure: no I/O, no trio.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from ._server_events import ServerEvent, _WithRef

__all__ = [
    "MESSAGE_EVENT_CLASSES",
    "HistoryPage",
    "MessageDeleted",
    "MessageEdited",
    "ReactionChanged",
    "parse_message_event",
]


class _Addressed(_WithRef):
    """An event about one log: ``room`` or ``with``."""

    room: str | None
    with_: str | None

    def _where(self) -> dict[str, Any]:
        return {"room": self.room} if self.room is not None else {"with": self.with_}


@attrs.frozen
class MessageEdited(_Addressed):
    """Message *id* of *user_id* now reads *content* (edited at *edited*);
    ``mentions`` are the new text's."""

    type: ClassVar[str] = "edit"
    room: str | None
    with_: str | None
    id: int
    user_id: str
    content: str
    edited: str
    mentions: tuple[str, ...] = ()
    ref: str | None = None

    def payload(self) -> dict[str, Any]:
        payload = self._where()
        payload.update(id=self.id, user_id=self.user_id, content=self.content, edited=self.edited)
        if self.mentions:
            payload["mentions"] = list(self.mentions)
        return payload


@attrs.frozen
class MessageDeleted(_Addressed):
    """Message *id* of *user_id* was deleted, by *by* (its author, a
    moderator, or the embedding program)."""

    type: ClassVar[str] = "delete"
    room: str | None
    with_: str | None
    id: int
    user_id: str
    by: str
    ref: str | None = None

    def payload(self) -> dict[str, Any]:
        payload = self._where()
        payload.update(id=self.id, user_id=self.user_id, by=self.by)
        return payload


@attrs.frozen
class ReactionChanged(_Addressed):
    """*user_id* turned their *emoji* reaction on message *id* on (or off);
    *count* users have it on now."""

    type: ClassVar[str] = "reaction"
    room: str | None
    with_: str | None
    id: int
    emoji: str
    user_id: str
    on: bool
    count: int
    ref: str | None = None

    def payload(self) -> dict[str, Any]:
        payload = self._where()
        payload.update(
            id=self.id, emoji=self.emoji, user_id=self.user_id, on=self.on, count=self.count
        )
        return payload


@attrs.frozen
class HistoryPage(_Addressed):
    """The answer to ``history``: chat payloads, oldest first; *truncated*
    when older matching messages were left out."""

    type: ClassVar[str] = "history"
    room: str | None
    with_: str | None
    messages: list[dict[str, Any]]
    truncated: bool
    ref: str | None = None

    def payload(self) -> dict[str, Any]:
        payload = self._where()
        payload.update(messages=self.messages, truncated=self.truncated)
        return payload


#: The events of this module, in docs/protocol.md order.
MESSAGE_EVENT_CLASSES: tuple[type[ServerEvent], ...] = (
    MessageEdited,
    MessageDeleted,
    ReactionChanged,
    HistoryPage,
)


def parse_message_event(kind: object, p: dict[str, Any], ref: str | None) -> ServerEvent | None:
    """The event of *kind* (one of this module's) with payload *p*; None for
    another kind.  Raises ``KeyError`` for a missing field."""
    if kind not in ("edit", "delete", "reaction", "history"):
        return None
    room, with_ = p.get("room"), p.get("with")
    if (room is None) == (with_ is None):
        raise KeyError("room")
    if kind == "edit":
        mentions = tuple(p.get("mentions", ()))
        return MessageEdited(
            room, with_, p["id"], p["user_id"], p["content"], p["edited"], mentions, ref
        )
    if kind == "delete":
        return MessageDeleted(room, with_, p["id"], p["user_id"], p["by"], ref)
    if kind == "reaction":
        return ReactionChanged(
            room, with_, p["id"], p["emoji"], p["user_id"], p["on"], p["count"], ref
        )
    return HistoryPage(room, with_, p["messages"], p["truncated"], ref)
