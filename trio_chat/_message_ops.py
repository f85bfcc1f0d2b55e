"""Edits, deletes and reactions on a log's retained messages, and pages of
its history: the rules, pure and synchronous (the caller passes ``now``).

Each function takes the hub's :class:`~trio_chat._log.History` and one
:class:`~trio_chat._log.RoomLog`, finds the message by id in O(1), checks
the protocol's rules (raising :class:`~trio_chat.ProtocolError` before
anything changes), and puts the new version of the message in the old one's
place (:meth:`History.replace`: byte budgets and the store's operation
follow).  *where* says which log it is, in words, for the errors: ``in room
'lobby'`` or ``in the conversation with 'bob'``.
"""

from __future__ import annotations

import calendar
import time as _time
from typing import Any

import attrs

from ._log import History, RoomLog
from ._mentions import find_mentions
from ._protocol import ChatMessage, ProtocolError, format_time
from ._sizes import newest_within, payload_bytes

__all__ = [
    "DEFAULT_REACTIONS",
    "HISTORY_PAGE_BYTES",
    "Target",
    "delete_message",
    "edit_message",
    "history_page",
    "parse_time",
    "toggle_reaction",
]

#: The reactions a server offers by default (the ``reactions`` setting).
DEFAULT_REACTIONS = (
    "\U0001f44d",  # thumbs up
    "\u2764\ufe0f",  # red heart
    "\U0001f602",  # tears of joy
    "\U0001f389",  # party popper
    "\U0001f62e",  # open mouth
    "\U0001f622",  # crying
    "\U0001f440",  # eyes
    "\U0001f680",  # rocket
)
#: Encoded messages one ``history`` answer holds at most.
HISTORY_PAGE_BYTES = 64 * 1024


@attrs.frozen
class Target:
    """The log a frame names: a room's, or a direct conversation's (seen
    from one of its users: *with_* is the other)."""

    log: RoomLog
    room: str | None = None
    with_: str | None = None

    @property
    def where(self) -> str:
        """The log in words, for errors."""
        if self.room is not None:
            return f"in room {self.room!r}"
        return f"in the conversation with {self.with_!r}"


def parse_time(text: str) -> float:
    """Seconds since the epoch of a time :func:`format_time` wrote."""
    whole, _, rest = text.partition(".")
    seconds = calendar.timegm(_time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + int(rest.rstrip("Z") or 0) / 1000


def _retained(target: Target, id_: int, ref: str | None) -> ChatMessage:
    message = target.log.get(id_)
    if message is None:
        raise ProtocolError(404, f"message {id_} is not retained {target.where}", ref)
    return message


def _live(target: Target, id_: int, ref: str | None) -> ChatMessage:
    message = _retained(target, id_, ref)
    if message.deleted:
        raise ProtocolError(404, f"message {id_} {target.where} was deleted", ref)
    return message


def edit_message(
    history: History,
    target: Target,
    user_id: str,
    id_: int,
    *,
    content: str,
    now: float,
    window: float,
    ref: str | None = None,
) -> ChatMessage:
    """*user_id*'s message *id_* with *content* instead, within *window*
    seconds of its time (403 past it, or for someone else's message; 404
    if it is not retained or deleted)."""
    message = _live(target, id_, ref)
    if message.user_id != user_id:
        raise ProtocolError(403, "you can edit only your own messages", ref)
    if now - parse_time(message.time) > window:
        raise ProtocolError(403, f"messages can be edited for {window:g} s", ref)
    edited = attrs.evolve(
        message, content=content, edited=format_time(now), mentions=find_mentions(content)
    )
    history.replace(target.log, edited)
    return edited


def delete_message(
    history: History,
    target: Target,
    id_: int,
    by: str,
    *,
    any_author: bool = False,
    ref: str | None = None,
) -> tuple[ChatMessage, bool]:
    """Delete message *id_* (by its author, or by anyone with *any_author*:
    a moderator); the tombstone, and whether it was deleted just now (a
    second delete changes nothing)."""
    message = _retained(target, id_, ref)
    if not any_author and message.user_id != by:
        raise ProtocolError(403, "you can delete only your own messages", ref)
    if message.deleted:
        return message, False
    tombstone = ChatMessage(message.id, message.room, message.user_id, "", message.time)
    tombstone = attrs.evolve(tombstone, deleted=True)
    history.replace(target.log, tombstone)
    return tombstone, True


def toggle_reaction(
    history: History,
    target: Target,
    user_id: str,
    id_: int,
    *,
    emoji: str,
    allowed: tuple[str, ...],
    ref: str | None = None,
) -> tuple[ChatMessage, bool, int]:
    """Turn *user_id*'s *emoji* on message *id_* on if it was off, else
    off: the new message, whether it is on, and how many users have it on
    (400 for an emoji not *allowed*; 404 for a deleted message)."""
    if emoji not in allowed:
        raise ProtocolError(400, f"payload.emoji: must be one of {' '.join(allowed)}", ref)
    message = _live(target, id_, ref)
    reactions = dict(message.reactions or {})
    users = reactions.get(emoji, ())
    on = user_id not in users
    users = (*users, user_id) if on else tuple(u for u in users if u != user_id)
    if users:
        reactions[emoji] = users
    else:
        reactions.pop(emoji, None)
    reacted = attrs.evolve(message, reactions=reactions or None)
    history.replace(target.log, reacted)
    return reacted, on, len(users)


def history_page(
    log: RoomLog, since: int | None, before: int | None, budget: int = HISTORY_PAGE_BYTES
) -> tuple[list[dict[str, Any]], bool]:
    """Retained payloads, oldest first: with *before*, the newest with ``id
    < before``; otherwise those with ``id > since``.  At most *budget*
    bytes of them (the newest); whether older matching messages (retained
    or not any more) were left out."""
    entries, first = log.entries, log.first_id
    if before is not None:
        low, high = 1, min(before, log.last_id + 1)
    else:
        low, high = (since or 0) + 1, log.last_id + 1
    start, stop = max(low, first) - first, max(high - first, 0)
    payloads = [entries[i][0].payload() for i in range(start, min(stop, len(entries)))]
    payloads, trimmed = newest_within(payloads, payload_bytes, budget)
    return payloads, trimmed or (low < first and low < high)
