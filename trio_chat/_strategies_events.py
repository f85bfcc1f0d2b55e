"""Hypothesis strategies for the events the server sends.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from ._protocol import (
    MAX_PRESENCE_TEXT_CHARS,
    MAX_STATUS_CHARS,
    ChatAck,
    ChatMessage,
    CommandResult,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Joined,
    Left,
    PresenceUpdate,
    ServerEvent,
    System,
    TypingNotice,
    Welcome,
)
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


#: The default reactions (the ``reactions`` setting).
_EMOJI = ("\U0001f44d", "\u2764\ufe0f", "\U0001f602", "\U0001f389", "\U0001f62e")


@st.composite
def _chat_message(
    draw: st.DrawFn, ids: st.SearchStrategy[int], content: st.SearchStrategy[str]
) -> ChatMessage:
    """A chat message with some of its optional fields set."""
    deleted = draw(st.booleans())
    reactions = draw(
        st.dictionaries(
            st.sampled_from(_EMOJI),
            st.lists(user_ids(), min_size=1, max_size=3, unique=True).map(tuple),
            max_size=3,
        )
    )
    return ChatMessage(
        draw(ids),
        draw(room_names()),
        draw(user_ids()),
        "" if deleted else draw(content),
        draw(timestamps()),
        draw(st.none() | timestamps()),
        deleted,
        reactions or None,
        tuple(draw(st.lists(user_ids(), max_size=3, unique=True))),
    )


@st.composite
def _joined(draw: st.DrawFn) -> Joined:
    room = draw(room_names())
    history = draw(_history(room))
    return Joined(
        room,
        draw(st.lists(user_ids(), unique=True, max_size=5)),
        history,
        draw(st.booleans()),
        draw(st.none() | refs()),
        draw(st.none() | st.text("0123456789abcdef", min_size=1, max_size=16)),
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
        }
    )


@st.composite
def _error(draw: st.DrawFn) -> ErrorEvent:
    code = draw(st.sampled_from([400, 403, 404, 413, 429, 500]))
    retry = draw(st.integers(1, 600_000)) if code == 429 else None
    return ErrorEvent(code, draw(st.text(min_size=1, max_size=80)), draw(st.none() | refs()), retry)


#: Every server event class, in PROTOCOL §4 order.
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
    ErrorEvent,
    CommandResult,
)


def server_events(
    classes: Iterable[type[ServerEvent]] | None = None,
) -> st.SearchStrategy[ServerEvent]:
    """Every kind of event the server sends, with plausible field values.

    :class:`~trio_chat.Welcome`, :class:`~trio_chat.Joined` (with a
    gap-free history), :class:`~trio_chat.Left`, :class:`~trio_chat.System`,
    :class:`~trio_chat.ChatMessage`, :class:`~trio_chat.ChatAck`,
    :class:`~trio_chat.DirectAck`, :class:`~trio_chat.PresenceUpdate`,
    :class:`~trio_chat.DirectMessage`, :class:`~trio_chat.TypingNotice` and
    :class:`~trio_chat.ErrorEvent` (``retry_after_ms`` only with 429).  For
    each, ``parse_server_frame(event.to_json()) == event``.

    Args:
        classes: the event classes to draw from (default: all of
            :data:`SERVER_EVENT_CLASSES`).
    """
    ids = st.integers(1, 2**53)
    ref = st.none() | refs()
    content = st.text(min_size=1, max_size=200)
    makers: dict[type[ServerEvent], st.SearchStrategy[ServerEvent]] = {
        Welcome: st.builds(Welcome, st.text(min_size=1, max_size=40), user_ids(), _limits()),
        Joined: _joined(),
        Left: st.builds(Left, room_names(), ref),
        System: st.one_of(
            st.builds(System, st.sampled_from(["join", "leave"]), room_names(), user_ids()),
            st.builds(
                System,
                st.sampled_from(["kick", "ban", "mute", "unmute"]),
                room_names(),
                user_ids(),
                st.text(min_size=1, max_size=200),
            ),
        ),
        ChatMessage: st.one_of(
            st.builds(ChatMessage, ids, room_names(), user_ids(), content, timestamps()),
            _chat_message(ids, content),
        ),
        ChatAck: st.builds(ChatAck, ids, room_names(), timestamps(), ref),
        DirectAck: st.builds(DirectAck, user_ids(), timestamps(), ref),
        PresenceUpdate: st.builds(
            PresenceUpdate,
            user_ids(),
            st.text(min_size=1, max_size=MAX_STATUS_CHARS),
            st.none() | st.text(max_size=MAX_PRESENCE_TEXT_CHARS),
        ),
        DirectMessage: st.builds(DirectMessage, user_ids(), content, timestamps()),
        TypingNotice: st.builds(TypingNotice, room_names(), user_ids()),
        ErrorEvent: _error(),
        CommandResult: st.builds(CommandResult, room_names(), json_values(), ref),
    }
    chosen = SERVER_EVENT_CLASSES if classes is None else tuple(classes)
    unknown = [c for c in chosen if c not in makers]
    if unknown or not chosen:
        raise ValueError(f"classes must be a non-empty subset of {SERVER_EVENT_CLASSES}")
    return st.one_of([makers[c] for c in chosen])
