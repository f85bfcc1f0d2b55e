"""Hypothesis strategies for valid client frames: the events and the many
texts a client may send for each.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

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
    Presence,
    Typing,
    _client_frame,
)
from ._strategies_values import json_values, refs, room_names, user_ids

__all__ = ["CLIENT_TYPES", "client_events", "client_frames"]

#: Every client frame ``type`` the protocol defines.
CLIENT_TYPES = ("join", "leave", "chat", "presence", "direct", "typing", "command")

#: Payload fields each type reads, required ones first.
_REQUIRED = {
    "join": ("room",),
    "leave": ("room",),
    "chat": ("room", "content"),
    "presence": ("status",),
    "direct": ("to", "content"),
    "typing": ("room",),
    "command": ("name",),
}
_OPTIONAL = {"join": ("since",), "presence": ("text",)}
#: Payload fields that hold any JSON value (read, but not text).
_JSON_FIELDS = {"command": ("args",)}


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


def client_events(
    types: Iterable[str] | None = None,
    *,
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
) -> st.SearchStrategy[ClientEvent]:
    """Valid client events (:class:`~trio_chat.Join`, :class:`~trio_chat.Chat`, ...).

    Args:
        types: the frame types to draw from (default: all six).
        max_content_chars: the server's content limit; ``content`` goes up to
            exactly this many characters.
    """
    ref = st.none() | refs()
    content = _contents(max_content_chars)
    makers = {
        "join": st.builds(
            Join,
            room_names(),
            st.none() | st.integers(0, 2**63) | st.integers(0, 10**30),
            ref,
        ),
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
        "typing": st.builds(Typing, room_names(), ref),
        # A command always has a ref: its result answers it.
        "command": st.builds(Command, room_names(), st.none() | json_values(), refs()),
    }
    return st.one_of([makers[t] for t in _types(types)])


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
    # Explicit nulls mean "absent" for the optional fields and for ref.
    for name in _OPTIONAL.get(event.type, ()):
        if name not in payload and draw(st.booleans()):
            payload[name] = None
    if "ref" not in frame and draw(st.booleans()):
        frame["ref"] = None
    # Unknown extra fields are ignored, at both levels.
    read = _REQUIRED[event.type] + _OPTIONAL.get(event.type, ()) + _JSON_FIELDS.get(event.type, ())
    payload.update(draw(_extra_fields(read)))
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
    ``ref`` (also ``"ref": null``), ``join`` with and without ``since``,
    ``presence`` with and without ``text``, unknown extra fields in the
    frame and in the payload (which must be ignored), key order, whitespace,
    ``\\u`` escapes (four hex digits), and content up to exactly *max_content_chars*
    characters.

    Args:
        types: the frame types to draw from, e.g. ``["chat", "join"]``
            (default: all six).
        max_content_chars: the server's content limit.
    """
    return _valid_frame(_types(types), max_content_chars)
