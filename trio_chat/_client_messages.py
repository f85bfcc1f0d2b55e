"""The Python client's message calls, sans I/O: their checks, their frames
and their typed answers.

:func:`message_frame` checks an ``edit``, ``delete``, ``react`` or
``history`` request the way the server would (a log named by ``room`` or
``with``, an id, content within the announced limits, an emoji of
``limits.reactions``), so that what the server must refuse is refused at
once, and gives the frame to write.  :class:`MessagePage` and
:class:`Conversations` are the answers to ``history`` and
``conversations``, with typed messages in them: a room's as
:class:`~trio_chat._protocol.ChatMessage`, a conversation's as
:class:`~trio_chat._protocol.DirectMessage`.  Pure: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

import attrs

from ._client_types import ClientError
from ._message_events import HistoryPage
from ._message_frames import Delete, Edit, React, ReadHistory
from ._protocol import (
    ChatMessage,
    ConversationList,
    DirectMessage,
    encode_client_event,
    is_valid_room,
    is_valid_user_id,
)

__all__ = [
    "Conversation",
    "Conversations",
    "MessagePage",
    "chat_message",
    "conversation_list",
    "direct_message",
    "message_frame",
    "message_page",
]

#: The fields of a direct payload that :class:`DirectMessage` names itself.
_DIRECT_FIELDS = ("id", "from", "to", "content", "time")


@attrs.frozen
class MessagePage:
    """Retained messages of a room (``room``) or a direct conversation
    (``with_``), oldest first: the answer to ``history``.

    ``truncated`` is true when older matching messages were left out: ask
    again with ``before=page.before`` for the page before this one.
    """

    room: str | None
    with_: str | None
    messages: tuple[ChatMessage | DirectMessage, ...]
    truncated: bool

    @property
    def before(self) -> int | None:
        """The oldest id on this page (None when it is empty): the
        ``before`` that asks for the page older than this one."""
        return self.messages[0].id if self.messages else None


@attrs.frozen
class Conversation:
    """A direct conversation of the user's, with ``with_``: ``last_id``
    numbers its newest message, ``last`` is that message if it is retained;
    ``read`` is the user's read marker in it, ``unread`` how many retained
    messages after it are from ``with_`` (not deleted), and ``mentions``
    how many of those mention the user."""

    with_: str
    last_id: int
    last: DirectMessage | None
    read: int = 0
    unread: int = 0
    mentions: int = 0


@attrs.frozen
class Conversations:
    """The user's direct conversations, most recent first: the answer to
    ``conversations``; ``truncated`` when there are more."""

    conversations: tuple[Conversation, ...]
    truncated: bool

    def __iter__(self) -> Iterator[Conversation]:
        return iter(self.conversations)

    def __len__(self) -> int:
        return len(self.conversations)


def _texts(values: list[Any]) -> TypeGuard[list[str]]:
    return all(isinstance(value, str) for value in values)


def chat_message(item: object) -> ChatMessage | None:
    """The room message of the chat payload *item*; None for anything else."""
    if not isinstance(item, dict):
        return None
    id_ = item.get("id")
    texts = [item.get(k) for k in ("room", "user_id", "content", "time")]
    if type(id_) is not int or not _texts(texts):
        return None
    room, user, content, time = texts
    edited, reactions, mentions = item.get("edited"), item.get("reactions"), item.get("mentions")
    return ChatMessage(
        id_,
        room,
        user,
        content,
        time,
        edited if isinstance(edited, str) else None,
        item.get("deleted") is True,
        _reactions(reactions),
        tuple(m for m in mentions if isinstance(m, str)) if isinstance(mentions, list) else (),
    )


def direct_message(item: object) -> DirectMessage | None:
    """The direct message of the direct payload *item*; None for anything else."""
    if not isinstance(item, dict):
        return None
    id_ = item.get("id")
    texts = [item.get(k) for k in _DIRECT_FIELDS[1:]]
    if type(id_) is not int or not _texts(texts):
        return None
    sender, to, content, time = texts
    extra = {k: v for k, v in item.items() if k not in _DIRECT_FIELDS}
    return DirectMessage(sender, content, time, id_, to, extra or None)


def _reactions(value: object) -> dict[str, tuple[str, ...]] | None:
    if not isinstance(value, dict) or not value:
        return None
    return {
        emoji: tuple(u for u in users if isinstance(u, str))
        for emoji, users in value.items()
        if isinstance(users, list)
    } or None


def message_page(page: HistoryPage) -> MessagePage:
    """The typed page of *page* (payloads that are not messages are left out)."""
    read = chat_message if page.room is not None else direct_message
    items: object = page.messages  # from the network: checked
    messages = [read(item) for item in items] if isinstance(items, list) else []
    return MessagePage(
        page.room, page.with_, tuple(m for m in messages if m is not None), page.truncated is True
    )


def conversation_list(answer: ConversationList) -> Conversations:
    """The typed list of *answer* (entries that are not conversations are left out)."""
    entries = []
    items: object = answer.conversations  # from the network: checked
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        peer, last_id = item.get("with"), item.get("last_id")
        if isinstance(peer, str) and type(last_id) is int:
            counts = [item.get(k) for k in ("read", "unread", "mentions")]
            read, unread, mentions = (n if type(n) is int else 0 for n in counts)
            last = direct_message(item.get("last"))
            entries.append(Conversation(peer, last_id, last, read, unread, mentions))
    return Conversations(tuple(entries), answer.truncated is True)


def message_frame(
    event: Edit | Delete | React | ReadHistory,
    limits: Mapping[str, Any],
    joined: Mapping[str, bool],
) -> str:
    """The frame of *event* (its ``ref`` set), checked first.

    *limits* are the server's from ``welcome`` (empty before the first
    connection); *joined* tells, per room, whether the user wants to be in
    it.  Raises :class:`ClientError`: 400 for both or neither of ``room``
    and ``with``, a bad room name, user id or id, empty content, an emoji
    the server does not offer; 403 for a room not joined; 413 for content
    over ``max_content_chars``.
    """
    room, peer = event.room, event.with_
    if (room is None) == (peer is None):
        raise ClientError(400, "name either a room or a user (with_), not both")
    if room is not None:
        if not is_valid_room(room):
            raise ClientError(400, f"not a valid room name: {room!r}")
        if not joined.get(room, False):
            raise ClientError(403, f"join room {room!r} first")
    elif not is_valid_user_id(peer):
        raise ClientError(400, f"not a valid user id: {peer!r}")
    ids = [event.since, event.before] if isinstance(event, ReadHistory) else [event.id]
    for value in ids:
        if value is not None and (type(value) is not int or value < 0):
            raise ClientError(400, f"message ids are integers >= 0, not {value!r}")
    if isinstance(event, Edit):
        if not isinstance(event.content, str) or not event.content:
            raise ClientError(400, "content must be a non-empty string")
        chars = limits.get("max_content_chars")
        if isinstance(chars, int) and len(event.content) > chars:
            raise ClientError(413, f"content longer than {chars} characters ({len(event.content)})")
    if isinstance(event, React):
        offered = limits.get("reactions")
        if isinstance(offered, list) and event.emoji not in offered:
            raise ClientError(400, f"emoji must be one of {' '.join(map(str, offered))}")
    frame = encode_client_event(event)
    limit = limits.get("max_message_bytes")
    if isinstance(limit, int) and len(frame.encode()) > limit:
        raise ClientError(413, f"frame larger than {limit} bytes ({len(frame.encode())})")
    return frame
