"""How the terminal client shows things: one line of text per event.

Every message line carries the message's id (``#7``), so that ``/edit``,
``/delete`` and ``/react`` can name it::

    [lobby] #7 12:01 alice: hi @carol
    [lobby] #8 12:02 * bob waves
    [lobby] #7 alice edited: hi @carol!
    [lobby] #7 bob reacted 👍 (1)
    * alice set the topic of lobby: all things trio
    (dm) #3 alice: lunch?
    (dm to alice) #4 carol: at 1

What others wrote goes through :func:`clean` first: control characters are
shown as ``�``, so a message cannot move the cursor or recolour the
terminal.  :func:`emphasize` marks the mentions of one user (reverse video),
for a terminal.  Pure: no I/O.
"""

from __future__ import annotations

import datetime
from typing import Any

from ._mentions import mention_spans
from ._message_events import MessageDeleted, MessageEdited, ReactionChanged
from ._protocol import ChatMessage, DirectMessage, ErrorEvent, PresenceUpdate, System

__all__ = [
    "ACTION_PREFIX",
    "NEW_MESSAGES",
    "clean",
    "emphasize",
    "format_event",
    "mentions_of",
    "said",
]

#: How an action message starts (``/me waves``).
ACTION_PREFIX = "/me "
#: The divider above the first message after the user's read marker.
NEW_MESSAGES = "\N{EM DASH} new messages \N{EM DASH}"
#: Reverse video on and off: how a mention of the user is marked.
_MARK_ON, _MARK_OFF = "\x1b[7m", "\x1b[27m"


def clean(text: str) -> str:
    """Text safe to print: control characters (escape sequences) made visible."""
    cleaned = []
    for char in text:
        if char == "\n":
            cleaned.append("\n    ")
        elif char == "\t" or char.isprintable():
            cleaned.append(char)
        else:
            cleaned.append("\N{REPLACEMENT CHARACTER}")
    return "".join(cleaned)


def _clock(stamp: str) -> str:
    """``HH:MM`` in local time for an RFC 3339 UTC time."""
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (ValueError, AttributeError, TypeError):
        return "--:--"
    return when.astimezone().strftime("%H:%M")


def said(user: str, content: str) -> str:
    """``alice: hi``, or ``* alice waves`` for an action."""
    if content.startswith(ACTION_PREFIX) and content[len(ACTION_PREFIX) :].strip():
        return f"* {clean(user)} {clean(content[len(ACTION_PREFIX) :].strip())}"
    return f"{clean(user)}: {clean(content)}"


def _notes(edited: object, reactions: object) -> str:
    """`` (edited)`` and the reactions with their counts, when there are any."""
    notes = " (edited)" if edited else ""
    if isinstance(reactions, dict) and reactions:
        counts = [f"{clean(str(emoji))} {len(users)}" for emoji, users in reactions.items()]
        notes += f"  [{', '.join(counts)}]"
    return notes


def _where(event: MessageEdited | MessageDeleted | ReactionChanged) -> str:
    return f"[{event.room}]" if event.room is not None else f"(dm with {clean(event.with_ or '')})"


def _message(event: ChatMessage | DirectMessage, me: str | None) -> str:
    if isinstance(event, ChatMessage):
        head = f"[{event.room}] #{event.id} {_clock(event.time)}"
        content, edited, reactions = event.content, event.edited, event.reactions
        deleted = event.deleted
        author = event.user_id
    else:
        extra: dict[str, Any] = event.extra or {}
        mine = me is not None and event.from_ == me and event.to is not None
        label = f"(dm to {clean(event.to or '')})" if mine else "(dm)"
        head = label if event.id is None else f"{label} #{event.id}"
        content, edited, reactions = event.content, extra.get("edited"), extra.get("reactions")
        deleted = extra.get("deleted") is True
        author = event.from_
    if deleted:
        return f"{head} {clean(author)}: (deleted)"
    return f"{head} {said(author, content)}{_notes(edited, reactions)}"


def format_event(event: object, *, history: bool = False, me: str | None = None) -> str | None:
    """One line for an event of the client's stream (None: not shown).

    *history*: the message is from a room's or conversation's history (sent
    before we joined, or a page asked for), marked ``(history)``.  *me* is
    the user's id: their own direct messages name the addressee.
    """
    if isinstance(event, ChatMessage | DirectMessage):
        line = _message(event, me)
        return f"(history) {line}" if history else line
    if isinstance(event, MessageEdited):
        return f"{_where(event)} #{event.id} {clean(event.user_id)} edited: {clean(event.content)}"
    if isinstance(event, MessageDeleted):
        return f"{_where(event)} #{event.id} deleted by {clean(event.by)}"
    if isinstance(event, ReactionChanged):
        verb = "reacted" if event.on else "took back"
        return (
            f"{_where(event)} #{event.id} {clean(event.user_id)} {verb} "
            f"{clean(event.emoji)} ({event.count})"
        )
    if isinstance(event, System):
        if event.event == "topic":
            who = clean(event.user_id)
            if not event.text:
                return f"* {who} cleared the topic of {event.room}"
            return f"* {who} set the topic of {event.room}: {clean(event.text)}"
        if event.text is not None and event.event not in ("join", "leave"):
            return f"* {clean(event.text)} ({event.room})"  # a moderator's action
        verb = {"join": "joined", "leave": "left"}.get(event.event, event.event)
        return f"* {clean(event.user_id)} {clean(verb)} {event.room}"
    if isinstance(event, PresenceUpdate):
        line = f"* {clean(event.user_id)} is {clean(event.status)}"
        return line + (f": {clean(event.text)}" if event.text else "")
    if isinstance(event, ErrorEvent):
        return f"! error {event.code}: {clean(event.message)}"
    return None


def mentions_of(event: object) -> tuple[str, ...]:
    """The user ids *event*'s text mentions, as the server listed them."""
    if isinstance(event, ChatMessage | MessageEdited):
        return event.mentions
    if isinstance(event, DirectMessage) and event.extra:
        found = event.extra.get("mentions")
        return tuple(m for m in found if isinstance(m, str)) if isinstance(found, list) else ()
    return ()


def emphasize(line: str, user: str) -> str:
    """*line* with each ``@user`` in it in reverse video (for a terminal)."""
    marked, end = [], 0
    for start, stop, name in mention_spans(line):
        if name == user:
            marked += [line[end:start], _MARK_ON, line[start:stop], _MARK_OFF]
            end = stop
    return "".join(marked) + line[end:]
