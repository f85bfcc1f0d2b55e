"""The client frames about messages already published: ``edit``,
``delete``, ``react`` and ``history`` (docs/protocol.md, *Conversations,
edits, reactions, read markers, rooms*).

Each names its log with ``room`` or ``with`` (:attr:`with_`, the other user
of a direct conversation), exactly one of them.  Parsed here, sans I/O, for
:func:`~trio_chat._protocol.parse_client_frame`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import attrs

from ._protocol import ClientEvent

if TYPE_CHECKING:
    from ._protocol import _Fields

__all__ = ["MAX_EMOJI_CHARS", "Delete", "Edit", "MessageFrame", "React", "ReadHistory"]

#: Longest ``emoji`` a ``react`` may carry (the server's list says which).
MAX_EMOJI_CHARS = 16


class MessageFrame(ClientEvent):
    """A frame about one log: ``room`` or ``with``."""

    #: Declared by each subclass (attrs fields); named here for the checker.
    room: str | None
    with_: str | None
    ref: str | None


@attrs.frozen
class Edit(MessageFrame):
    """Replace the text of the user's own message *id*."""

    type: ClassVar[str] = "edit"
    room: str | None
    with_: str | None
    id: int
    content: str
    ref: str | None = None


@attrs.frozen
class Delete(MessageFrame):
    """Delete message *id* (the user's own)."""

    type: ClassVar[str] = "delete"
    room: str | None
    with_: str | None
    id: int
    ref: str | None = None


@attrs.frozen
class React(MessageFrame):
    """Toggle the user's *emoji* reaction on message *id*."""

    type: ClassVar[str] = "react"
    room: str | None
    with_: str | None
    id: int
    emoji: str
    ref: str | None = None


@attrs.frozen
class ReadHistory(MessageFrame):
    """Read retained messages: with *before*, the newest with ``id <
    before``; otherwise those with ``id > since``."""

    type: ClassVar[str] = "history"
    room: str | None
    with_: str | None
    since: int | None = None
    before: int | None = None
    ref: str | None = None


def _id(fields: _Fields, name: str, *, optional: bool = False) -> int | None:
    value = fields.payload.get(name)
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:  # bool is not an id
        raise fields.fail(f"payload.{name}: must be a non-negative integer")
    return value


def parse_message_frame(kind: str, fields: _Fields, max_content_chars: int) -> ClientEvent | None:
    """The frame of *kind* (one of this module's) from its payload *fields*;
    None for another kind.  Raises :class:`~trio_chat.ProtocolError` (400,
    413) for a payload the protocol does not accept."""
    if kind not in ("edit", "delete", "react", "history"):
        return None
    room, with_ = fields.target()
    ref = fields.ref
    if kind == "history":
        since = _id(fields, "since", optional=True)
        before = _id(fields, "before", optional=True)
        return ReadHistory(room, with_, since, before, ref)
    id_ = _id(fields, "id")
    assert id_ is not None
    if kind == "edit":
        return Edit(room, with_, id_, fields.content(max_content_chars), ref)
    if kind == "delete":
        return Delete(room, with_, id_, ref)
    emoji = fields.required("emoji")
    if not emoji or len(emoji) > MAX_EMOJI_CHARS:
        raise fields.fail(f"payload.emoji: must be 1 to {MAX_EMOJI_CHARS} characters")
    return React(room, with_, id_, emoji, ref)
