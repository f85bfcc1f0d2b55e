"""Hypothesis strategies for the events the server sends.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from ._message_events import HistoryPage, MessageDeleted, MessageEdited, ReactionChanged
from ._message_ops import DEFAULT_REACTIONS
from ._protocol import (
    MAX_PRESENCE_TEXT_CHARS,
    MAX_STATUS_CHARS,
    ChatAck,
    ChatMessage,
    CommandResult,
    ConversationList,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Joined,
    Left,
    PresenceUpdate,
    ServerEvent,
    System,
    TypingNotice,
    TypingWith,
    Welcome,
)
from ._room_frames import MAX_TOPIC_CHARS, ReadMarker, RoomList
from ._strategies_values import json_values, refs, room_names, timestamps, user_ids

__all__ = ["SERVER_EVENT_CLASSES", "server_events"]


@st.composite
def _history(draw: st.DrawFn, room: str) -> list[dict[str, Any]]:
    first = draw(st.integers(1, 10_000))
    size = draw(st.integers(0, 5))
    return [
        ChatMessage(
            first + i,
            room,
            draw(user_ids()),
            draw(st.text(min_size=1, max_size=40)),
            draw(timestamps()),
        ).payload()
        for i in range(size)
    ]


_EMOJI = st.sampled_from(DEFAULT_REACTIONS)
_IDS = st.integers(1, 2**53)
_REF = st.none() | refs()
_CONTENT = st.text(min_size=1, max_size=200)
_MENTIONS = st.lists(user_ids(), max_size=3, unique=True).map(tuple)


@st.composite
def _chat_message(
    draw: st.DrawFn,
    ids: st.SearchStrategy[int] = _IDS,
    content: st.SearchStrategy[str] = _CONTENT,
    room: st.SearchStrategy[str] | None = None,
) -> ChatMessage:
    """A chat message with some of its optional fields set."""
    deleted = draw(st.booleans())
    reactions = draw(
        st.dictionaries(
            _EMOJI,
            st.lists(user_ids(), min_size=1, max_size=3, unique=True).map(tuple),
            max_size=3,
        )
    )
    return ChatMessage(
        draw(ids),
        draw(room_names() if room is None else room),
        draw(user_ids()),
        "" if deleted else draw(content),
        draw(timestamps()),
        draw(st.none() | timestamps()),
        deleted,
        reactions or None,
        () if deleted else draw(_MENTIONS),
    )


@st.composite
def _direct_message(draw: st.DrawFn) -> DirectMessage:
    """A direct message as stored (with its id, ``to`` and maybe ``edited``,
    ``deleted``, ``reactions``, ``mentions``), or as the Redis store sends it."""
    if draw(st.booleans()):
        return DirectMessage(draw(user_ids()), draw(_CONTENT), draw(timestamps()))
    return DirectMessage.stored(draw(_chat_message()), draw(user_ids()))


@st.composite
def _joined(draw: st.DrawFn) -> Joined:
    room = draw(room_names())
    history = draw(_history(room))
    read = draw(st.none() | st.integers(0, 2**53))
    unread = None if read is None else draw(st.integers(0, 100))
    return Joined(
        room,
        draw(st.lists(user_ids(), unique=True, max_size=5)),
        history,
        draw(st.booleans()),
        draw(_REF),
        draw(st.none() | st.text("0123456789abcdef", min_size=1, max_size=16)),
        read,
        unread,
        None if unread is None else draw(st.integers(0, unread)),
        draw(st.none() | st.text(max_size=MAX_TOPIC_CHARS)),
    )


def _limits() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "max_message_bytes": st.integers(1, 2**31),
            "max_content_chars": st.integers(1, 2**20),
            "rate": st.fixed_dictionaries(
                {
                    "messages": st.integers(1, 10_000),
                    "per_seconds": st.integers(1, 3600) | st.floats(0.001, 3600),
                }
            ),
            "ping_interval_seconds": st.integers(1, 3600) | st.floats(0.001, 3600),
            "reactions": st.lists(_EMOJI, min_size=1, unique=True),
        }
    )


@st.composite
def _error(draw: st.DrawFn) -> ErrorEvent:
    code = draw(st.sampled_from([400, 403, 404, 413, 429, 500, 501, 503]))
    retry = draw(st.integers(1, 600_000)) if code == 429 else None
    return ErrorEvent(code, draw(st.text(min_size=1, max_size=80)), draw(_REF), retry)


def _addressed(
    cls: type[ServerEvent], *fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[ServerEvent]:
    """Events of *cls* about a room or, as ``with``, a direct conversation."""
    return st.one_of(
        st.builds(cls, room_names(), st.none(), *fields),
        st.builds(cls, st.none(), user_ids(), *fields),
    )


@st.composite
def _history_page(draw: st.DrawFn) -> HistoryPage:
    """A page of a room's history (chat payloads) or of a conversation's
    (direct payloads), oldest first."""
    first = draw(st.integers(1, 10_000))
    size = draw(st.integers(0, 4))
    ids = [st.just(first + i) for i in range(size)]
    truncated = draw(st.booleans())
    ref = draw(_REF)
    if draw(st.booleans()):
        room = draw(room_names())
        messages = [draw(_chat_message(i, room=st.just(room))).payload() for i in ids]
        return HistoryPage(room, None, messages, truncated, ref)
    with_ = draw(user_ids())
    me = draw(user_ids())
    stored = [draw(_chat_message(i)) for i in ids]
    messages = [
        DirectMessage.stored(m, with_ if m.user_id != with_ else me).payload() for m in stored
    ]
    return HistoryPage(None, with_, messages, truncated, ref)


@st.composite
def _conversations(draw: st.DrawFn) -> ConversationList:
    entries = []
    for with_ in draw(st.lists(user_ids(), unique=True, max_size=4)):
        last = draw(st.none() | _direct_message())
        read = draw(st.integers(0, 10_000))
        unread = draw(st.integers(0, 100))
        entries.append(
            {
                "with": with_,
                "last_id": 0 if last is None else draw(st.integers(1, 10_000)),
                "read": read,
                "unread": unread,
                "mentions": draw(st.integers(0, unread)),
                "last": None if last is None else last.payload(),
            }
        )
    return ConversationList(entries, draw(st.booleans()), draw(_REF))


def _room_list() -> st.SearchStrategy[RoomList]:
    entry = st.fixed_dictionaries(
        {
            "room": room_names(),
            "members": st.integers(0, 10_000),
            "topic": st.none() | st.text(max_size=MAX_TOPIC_CHARS),
        }
    )
    return st.builds(RoomList, st.lists(entry, max_size=4), st.booleans(), _REF)


def _system() -> st.SearchStrategy[System]:
    return st.one_of(
        st.builds(System, st.sampled_from(["join", "leave"]), room_names(), user_ids()),
        st.builds(
            System,
            st.sampled_from(["kick", "ban", "mute", "unmute"]),
            room_names(),
            user_ids(),
            st.text(min_size=1, max_size=200),
            _REF,
        ),
        # The text is the new topic; "" cleared it.
        st.builds(
            System,
            st.just("topic"),
            room_names(),
            user_ids(),
            st.text(max_size=MAX_TOPIC_CHARS),
            _REF,
        ),
    )


#: Every server event class, in the order of docs/protocol.md.
SERVER_EVENT_CLASSES: tuple[type[ServerEvent], ...] = (
    Welcome,
    Joined,
    Left,
    System,
    ChatMessage,
    ChatAck,
    DirectAck,
    PresenceUpdate,
    DirectMessage,
    TypingNotice,
    TypingWith,
    ConversationList,
    ReadMarker,
    RoomList,
    CommandResult,
    MessageEdited,
    MessageDeleted,
    ReactionChanged,
    HistoryPage,
    ErrorEvent,
)


def server_events(
    classes: Iterable[type[ServerEvent]] | None = None,
) -> st.SearchStrategy[ServerEvent]:
    """Every kind of event the server sends, with plausible field values.

    One strategy per class of :data:`SERVER_EVENT_CLASSES`:
    :class:`~trio_chat.Welcome`, :class:`~trio_chat.Joined` (with a
    gap-free history, with and without read markers and a topic),
    :class:`~trio_chat.Left`, :class:`~trio_chat.System` (members coming and
    going, a moderator's events, a topic set), :class:`~trio_chat.ChatMessage`
    (edited, deleted, with reactions and mentions), :class:`~trio_chat.ChatAck`,
    :class:`~trio_chat.DirectAck`, :class:`~trio_chat.PresenceUpdate`,
    :class:`~trio_chat.DirectMessage`, :class:`~trio_chat.TypingNotice` and
    ``TypingWith``, ``ConversationList``, :class:`~trio_chat.ReadMarker`,
    :class:`~trio_chat.RoomList`, ``CommandResult``,
    :class:`~trio_chat.MessageEdited`, :class:`~trio_chat.MessageDeleted`,
    :class:`~trio_chat.ReactionChanged` and :class:`~trio_chat.HistoryPage`
    (each about a room or, with ``with``, a direct conversation), and
    :class:`~trio_chat.ErrorEvent` (``retry_after_ms`` only with 429).  For
    each, ``parse_server_frame(event.to_json()) == event``.

    Args:
        classes: the event classes to draw from (default: all of
            :data:`SERVER_EVENT_CLASSES`).
    """
    makers: dict[type[ServerEvent], st.SearchStrategy[ServerEvent]] = {
        Welcome: st.builds(Welcome, st.text(min_size=1, max_size=40), user_ids(), _limits()),
        Joined: _joined(),
        Left: st.builds(Left, room_names(), _REF),
        System: _system(),
        ChatMessage: st.one_of(
            st.builds(ChatMessage, _IDS, room_names(), user_ids(), _CONTENT, timestamps()),
            _chat_message(),
        ),
        ChatAck: st.builds(ChatAck, _IDS, room_names(), timestamps(), _REF),
        DirectAck: st.builds(DirectAck, user_ids(), timestamps(), _REF, st.none() | _IDS),
        PresenceUpdate: st.builds(
            PresenceUpdate,
            user_ids(),
            st.text(min_size=1, max_size=MAX_STATUS_CHARS),
            st.none() | st.text(max_size=MAX_PRESENCE_TEXT_CHARS),
        ),
        DirectMessage: _direct_message(),
        TypingNotice: st.builds(TypingNotice, room_names(), user_ids()),
        TypingWith: st.builds(TypingWith, user_ids(), user_ids()),
        ConversationList: _conversations(),
        ReadMarker: _addressed(ReadMarker, st.integers(0, 2**53), _REF),
        RoomList: _room_list(),
        CommandResult: st.builds(CommandResult, room_names(), json_values(), _REF),
        MessageEdited: _addressed(
            MessageEdited, _IDS, user_ids(), _CONTENT, timestamps(), _MENTIONS, _REF
        ),
        MessageDeleted: _addressed(MessageDeleted, _IDS, user_ids(), user_ids(), _REF),
        ReactionChanged: _addressed(
            ReactionChanged, _IDS, _EMOJI, user_ids(), st.booleans(), st.integers(0, 1000), _REF
        ),
        HistoryPage: _history_page(),
        ErrorEvent: _error(),
    }
    chosen = SERVER_EVENT_CLASSES if classes is None else tuple(classes)
    unknown = [c for c in chosen if c not in makers]
    if unknown or not chosen:
        raise ValueError(f"classes must be a non-empty subset of {SERVER_EVENT_CLASSES}")
    return st.one_of([makers[c] for c in chosen])
