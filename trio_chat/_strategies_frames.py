"""Hypothesis strategies for valid client frames: the events and the many
texts a client may send for each.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from ._message_frames import MAX_EMOJI_CHARS, Delete, Edit, React, ReadHistory
from ._message_ops import DEFAULT_REACTIONS
from ._protocol import (
    DEFAULT_MAX_CONTENT_CHARS,
    MAX_PRESENCE_TEXT_CHARS,
    MAX_STATUS_CHARS,
    Chat,
    ClientEvent,
    Command,
    Direct,
    Join,
    Leave,
    ListConversations,
    Presence,
    Typing,
    TypingTo,
    _client_frame,
)
from ._room_frames import MAX_QUERY_CHARS, MAX_TOPIC_CHARS, ListRooms, MarkRead, SetTopic
from ._strategies_values import json_values, refs, room_names, user_ids

__all__ = ["CLIENT_TYPES", "client_events", "client_frames"]

#: Every client frame ``type`` the protocol defines.
CLIENT_TYPES = (
    "join",
    "leave",
    "chat",
    "presence",
    "direct",
    "typing",
    "conversations",
    "command",
    "edit",
    "delete",
    "react",
    "history",
    "read",
    "rooms",
    "topic",
)

#: The types that name their log with ``room`` or ``with``, exactly one.
_TARGETED = frozenset({"typing", "edit", "delete", "react", "history", "read"})
#: Payload fields each type reads beside its log, required ones first.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "join": ("room",),
    "leave": ("room",),
    "chat": ("room", "content"),
    "presence": ("status",),
    "direct": ("to", "content"),
    "typing": (),
    "conversations": (),
    "command": ("name",),
    "edit": ("id", "content"),
    "delete": ("id",),
    "react": ("id", "emoji"),
    "history": (),
    "read": ("id",),
    "rooms": (),
    "topic": ("room", "topic"),
}
_OPTIONAL = {
    "join": ("since",),
    "presence": ("text",),
    "history": ("since", "before"),
    "rooms": ("query",),
}
#: Payload fields that hold a message id (a non-negative integer).
_ID_FIELDS = frozenset({"id", "since", "before"})
#: Payload fields that hold any JSON value (read, but not text).
_JSON_FIELDS = {"command": ("args",)}


def _read_fields(kind: str) -> tuple[str, ...]:
    """Every payload field a frame of *kind* reads."""
    target = ("room", "with") if kind in _TARGETED else ()
    return target + _REQUIRED[kind] + _OPTIONAL.get(kind, ()) + _JSON_FIELDS.get(kind, ())


def _contents(max_chars: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(min_size=1, max_size=min(max_chars, 200)),
        # exactly the limit, in characters (not bytes)
        st.sampled_from("xé漢🙂").map(lambda c: c * max_chars),
    )


def _types(types: Iterable[str] | None) -> tuple[str, ...]:
    chosen = CLIENT_TYPES if types is None else tuple(types)
    unknown = set(chosen) - set(CLIENT_TYPES)
    if unknown or not chosen:
        raise ValueError(f"types must be a non-empty subset of {CLIENT_TYPES}")
    return chosen


def _ids() -> st.SearchStrategy[int]:
    return st.integers(0, 2**63) | st.integers(0, 10**30)


def _targeted(
    cls: type[ClientEvent], *fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[ClientEvent]:
    """Events of *cls* naming a room or, as ``with``, a user."""
    return st.one_of(
        st.builds(cls, room_names(), st.none(), *fields),
        st.builds(cls, st.none(), user_ids(), *fields),
    )


def client_events(
    types: Iterable[str] | None = None,
    *,
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
) -> st.SearchStrategy[ClientEvent]:
    """Valid client events (:class:`~trio_chat.Join`, :class:`~trio_chat.Chat`,
    :class:`~trio_chat.Edit`, ...), one type of :data:`CLIENT_TYPES` each.

    ``typing`` draws both :class:`~trio_chat.Typing` (to a room) and
    ``TypingTo`` (to a user); ``edit``, ``delete``, ``react``, ``history``
    and ``read`` name a room or a user (``with``).

    Args:
        types: the frame types to draw from (default: all of
            :data:`CLIENT_TYPES`).
        max_content_chars: the server's content limit; ``content`` goes up to
            exactly this many characters.
    """
    ref = st.none() | refs()
    content = _contents(max_content_chars)
    makers = {
        "join": st.builds(Join, room_names(), st.none() | _ids(), ref),
        "leave": st.builds(Leave, room_names(), ref),
        "chat": st.builds(Chat, room_names(), content, ref),
        "presence": st.builds(
            Presence,
            st.sampled_from(["online", "away", "busy"])
            | st.text(min_size=1, max_size=MAX_STATUS_CHARS),
            st.none() | st.text(max_size=MAX_PRESENCE_TEXT_CHARS),
            ref,
        ),
        "direct": st.builds(Direct, user_ids(), content, ref),
        "typing": st.builds(Typing, room_names(), ref) | st.builds(TypingTo, user_ids(), ref),
        "conversations": st.builds(ListConversations, ref),
        # A command always has a ref: its result answers it.
        "command": st.builds(Command, room_names(), st.none() | json_values(), refs()),
        "edit": _targeted(Edit, _ids(), content, ref),
        "delete": _targeted(Delete, _ids(), ref),
        # Any short text parses; the server's list says which it takes.
        "react": _targeted(React, _ids(), st.sampled_from(DEFAULT_REACTIONS) | _emoji(), ref),
        "history": _targeted(ReadHistory, st.none() | _ids(), st.none() | _ids(), ref),
        "read": _targeted(MarkRead, _ids(), ref),
        "rooms": st.builds(
            ListRooms, st.none() | st.text(max_size=MAX_QUERY_CHARS) | room_names(), ref
        ),
        "topic": st.builds(SetTopic, room_names(), st.text(max_size=MAX_TOPIC_CHARS), ref),
    }
    return st.one_of([makers[t] for t in _types(types)])


def _emoji() -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=MAX_EMOJI_CHARS)


def _extra_fields(taken: Iterable[str]) -> st.SearchStrategy[dict[str, Any]]:
    taken = set(taken)
    return st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in taken), json_values(), max_size=3
    )


@st.composite
def _encode(draw: st.DrawFn, frame: dict[str, Any], *, ascii_only: bool = False) -> str:
    """Serialize *frame* the many ways a client may: key order, spacing, escapes."""

    def shuffled(obj: dict[str, Any]) -> dict[str, Any]:
        keys = draw(st.permutations(list(obj)))
        return {k: obj[k] for k in keys}

    frame = shuffled(frame)
    if isinstance(frame.get("payload"), dict):
        frame["payload"] = shuffled(frame["payload"])
    style = draw(st.sampled_from(["compact", "spaced", "indented"]))
    ensure_ascii = ascii_only or draw(st.booleans())
    if style == "compact":
        return json.dumps(frame, ensure_ascii=ensure_ascii, separators=(",", ":"))
    if style == "spaced":
        return " " + json.dumps(frame, ensure_ascii=ensure_ascii) + "\n"
    return json.dumps(frame, ensure_ascii=ensure_ascii, indent=2)


@st.composite
def _valid_frame(
    draw: st.DrawFn, types: tuple[str, ...], max_content_chars: int
) -> tuple[str, ClientEvent]:
    event = draw(client_events(types, max_content_chars=max_content_chars))
    frame = _client_frame(event)
    payload = frame["payload"]
    # Explicit nulls mean "absent" for the optional fields, for the log a
    # frame does not name, and for ref.
    absent = _OPTIONAL.get(event.type, ()) + (("room", "with") if event.type in _TARGETED else ())
    for name in absent:
        if name not in payload and draw(st.booleans()):
            payload[name] = None
    if "ref" not in frame and draw(st.booleans()):
        frame["ref"] = None
    # Unknown extra fields are ignored, at both levels.
    payload.update(draw(_extra_fields(_read_fields(event.type))))
    frame.update(draw(_extra_fields(("type", "payload", "ref"))))
    return draw(_encode(frame)), event


def client_frames(
    types: Iterable[str] | None = None,
    *,
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
) -> st.SearchStrategy[tuple[str, ClientEvent]]:
    """Valid client frames as ``(json_text, expected_event)`` pairs.

    ``json_text`` is one text frame a client may send, and
    ``parse_client_frame(json_text)`` must return ``expected_event``.  The
    frames vary everything the protocol leaves free: with and without
    ``ref`` (also ``"ref": null``), each optional field (``since``,
    ``before``, ``text``, ``query``) present, absent or null, the log not
    named (``room`` or ``with``) absent or null, unknown extra fields in the
    frame and in the payload (which must be ignored), key order, whitespace,
    ``\\u`` escapes (four hex digits), and content up to exactly
    *max_content_chars* characters.

    Args:
        types: the frame types to draw from, e.g. ``["chat", "join"]``
            (default: all of :data:`CLIENT_TYPES`).
        max_content_chars: the server's content limit.
    """
    return _valid_frame(_types(types), max_content_chars)
