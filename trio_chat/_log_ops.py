"""The operations a durable hub hands its store, and how a message's fields
beyond its text are written for it.

Each operation is one change the hub made in memory (:mod:`trio_chat._log`,
the read markers, the topics), small and in order; the SQLite store
(:mod:`trio_chat._sqlite_store`) writes a batch of them in one transaction.
Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ._protocol import ChatMessage

__all__ = [
    "AppendOp",
    "DropRoomOp",
    "ForgetMarkOp",
    "LogOp",
    "MarkOp",
    "OpenRoomOp",
    "RememberOp",
    "ReplaceOp",
    "TopicOp",
    "TrimOp",
    "decode_extra",
    "encode_extra",
]


def encode_extra(message: ChatMessage) -> str | None:
    """A message's fields beyond its text (``edited``, ``deleted``,
    ``reactions``, ``mentions``) as JSON for a store; None when it has none."""
    extra: dict[str, Any] = {}
    if message.edited is not None:
        extra["edited"] = message.edited
    if message.deleted:
        extra["deleted"] = True
    if message.reactions:
        extra["reactions"] = message.reactions
    if message.mentions:
        extra["mentions"] = message.mentions
    return json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra else None


def decode_extra(message: ChatMessage, extra: str | None) -> ChatMessage:
    """*message* with the fields :func:`encode_extra` wrote back on it.

    Raises ``ValueError`` for text that :func:`encode_extra` did not write.
    """
    if extra is None:
        return message
    fields = json.loads(extra)
    if not isinstance(fields, dict):
        raise ValueError(f"message {message.room} #{message.id}: bad fields {extra[:40]!r}")
    reactions = fields.get("reactions")
    return attrs.evolve(
        message,
        edited=fields.get("edited"),
        deleted=fields.get("deleted") is True,
        reactions={e: tuple(u) for e, u in reactions.items()} if reactions else None,
        mentions=tuple(fields.get("mentions", ())),
    )


# ------------------------------------------------------------------ ops


@attrs.frozen
class OpenRoomOp:
    """A room's log was created, numbering from 1 under *epoch*."""

    room: str
    epoch: str


@attrs.frozen
class DropRoomOp:
    """A room's log was forgotten, with its ids and every message."""

    room: str


@attrs.frozen
class AppendOp:
    """*message* was appended; *seq* orders appends across rooms, *at* is
    its time in seconds since the epoch."""

    message: ChatMessage
    seq: int
    at: float


@attrs.frozen
class ReplaceOp:
    """A retained message was edited, deleted or reacted to: *message* is
    what it is now (same room and id)."""

    message: ChatMessage


@attrs.frozen
class TrimOp:
    """Messages of *room* with ids below *first_id* are no longer kept."""

    room: str
    first_id: int


@attrs.frozen
class RememberOp:
    """*user_id*'s *ref* was accepted; *ack* (JSON) answers it again."""

    user_id: str
    ref: str
    ack: str


@attrs.frozen
class TopicOp:
    """*room*'s topic is now *topic* (None: it has none)."""

    room: str
    topic: str | None


@attrs.frozen
class MarkOp:
    """*user_id* has read the log *name* (numbered under *epoch*) up to *id*."""

    user_id: str
    name: str
    epoch: str
    id: int


@attrs.frozen
class ForgetMarkOp:
    """*user_id*'s read marker in the log *name* is forgotten."""

    user_id: str
    name: str


LogOp = (
    OpenRoomOp
    | DropRoomOp
    | AppendOp
    | ReplaceOp
    | TrimOp
    | RememberOp
    | TopicOp
    | MarkOp
    | ForgetMarkOp
)
