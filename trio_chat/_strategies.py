"""Hypothesis strategies for the trio_chat wire protocol.

They describe what wire protocol version 1 accepts and rejects, so that
code built on trio_chat -- clients, bots, bridges, other servers -- can be
property-tested against the same contract the server itself is tested
against:

* :func:`room_names`, :func:`user_ids` (and their ``invalid_`` twins);
* :func:`client_events` and :func:`client_frames`: valid client frames with the
  event each must parse to;
* :func:`invalid_frame_cases` and :func:`invalid_frames`: frames the server
  must refuse, labelled with the error code they earn (400 or 413) and the
  field the error message names;
* :func:`server_events`: every event the server sends.

Every strategy is a function returning a fresh ``SearchStrategy``, like
Hypothesis's own.  Text never holds lone surrogates unless a case is about
them, so every frame can be sent on a real WebSocket.

Example::

    from hypothesis import given
    from trio_chat import parse_client_frame
    from trio_chat.testing import client_frames

    @given(client_frames(types=["chat"]))
    def test_my_client_reads_chat(case):
        text, event = case
        assert parse_client_frame(text) == event
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from typing import Any

import attrs
from hypothesis import strategies as st

from ._protocol import (
    DEFAULT_MAX_CONTENT_CHARS,
    MAX_PRESENCE_TEXT_CHARS,
    MAX_REF_CHARS,
    MAX_STATUS_CHARS,
    Chat,
    ChatAck,
    ChatMessage,
    ClientEvent,
    Command,
    CommandResult,
    Direct,
    DirectAck,
    DirectMessage,
    ErrorEvent,
    Join,
    Joined,
    Leave,
    Left,
    Presence,
    PresenceUpdate,
    ServerEvent,
    System,
    Typing,
    TypingNotice,
    Welcome,
    _client_frame,
    format_time,
)

__all__ = [
    "CLIENT_TYPES",
    "SERVER_EVENT_CLASSES",
    "InvalidFrame",
    "client_events",
    "client_frames",
    "invalid_frame_cases",
    "invalid_frames",
    "invalid_room_names",
    "invalid_user_ids",
    "json_values",
    "refs",
    "room_names",
    "server_events",
    "timestamps",
    "user_ids",
]

#: Every client frame ``type`` the protocol defines.
CLIENT_TYPES = ("join", "leave", "chat", "presence", "direct", "typing", "command")

_EVENT_CLASSES: dict[str, type[ClientEvent]] = {
    "join": Join,
    "leave": Leave,
    "chat": Chat,
    "presence": Presence,
    "direct": Direct,
    "typing": Typing,
    "command": Command,
}
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

_ALNUM = string.ascii_letters + string.digits
_ROOM_CHARS = _ALNUM + "_.:-"
_USER_CHARS = _ALNUM + "_.@-"
_MAX_NAME = 64
_LONE_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")


# --------------------------------------------------------------------------
# Names


def _names(chars: str) -> st.SearchStrategy[str]:
    return st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(chars, max_size=_MAX_NAME - 1))


def room_names() -> st.SearchStrategy[str]:
    """Room names the protocol accepts: ``^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$``.

    From one character to the 64-character maximum.
    """
    return _names(_ROOM_CHARS)


def user_ids() -> st.SearchStrategy[str]:
    """User ids the protocol accepts: ``^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$``."""
    return _names(_USER_CHARS)


def _invalid_names(valid: st.SearchStrategy[str], chars: str) -> st.SearchStrategy[str]:
    # Characters outside the pattern; ':' and '@' are each valid in one of
    # room names and user ids, which makes them good boundary cases.
    bad_chars = "".join(c for c in " :@/\\#?!'\"\t\n\x00é漢🙂" if c not in chars)

    @st.composite
    def inserted(draw: st.DrawFn) -> str:
        name = draw(valid)
        at = draw(st.integers(0, len(name)))
        return name[:at] + draw(st.sampled_from(bad_chars)) + name[at:]

    return st.one_of(
        st.just(""),
        # first character must be a letter or digit
        st.builds(str.__add__, st.sampled_from("_.-:@"), st.text(chars, max_size=10)),
        # too long
        st.text(_ALNUM, min_size=_MAX_NAME + 1, max_size=_MAX_NAME + 40),
        # a character outside the pattern anywhere
        inserted(),
        # ``$`` in a Python regex matches before a trailing newline
        valid.map(lambda name: name[: _MAX_NAME - 1] + "\n"),
    )


def invalid_room_names() -> st.SearchStrategy[str]:
    """Strings that are *not* valid room names (empty, too long, bad characters)."""
    return _invalid_names(room_names(), _ROOM_CHARS)


def invalid_user_ids() -> st.SearchStrategy[str]:
    """Strings that are *not* valid user ids (empty, too long, bad characters)."""
    return _invalid_names(user_ids(), _USER_CHARS)


def refs() -> st.SearchStrategy[str]:
    """Values a client may use as a frame's ``ref``: any text up to 64 characters."""
    return st.text(max_size=MAX_REF_CHARS)


def timestamps() -> st.SearchStrategy[str]:
    """Times as the server writes them: RFC 3339 UTC with milliseconds."""
    return st.integers(0, 4_102_444_799_999).map(lambda ms: format_time(ms / 1000))


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Arbitrary JSON values (finite numbers, nested lists and objects)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# --------------------------------------------------------------------------
# Valid client frames


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


# --------------------------------------------------------------------------
# Invalid client frames


@attrs.frozen
class InvalidFrame:
    """A client frame the server must refuse, and how.

    Attributes:
        text: the frame's text.
        code: the error code it must earn (PROTOCOL §5): 400, or 413 for
            content over the limit.
        field: the field the error message must name first, as
            ``"payload.room"``, ``"ref"``, ``"type"`` or ``"payload"``; None
            when the frame as a whole is at fault (not JSON, not an object)
            or when either of two fields may be blamed.
        ref: the ``ref`` the error must echo (the frame's own, when the frame
            got far enough to have a usable one), else None.
        reason: a short label of the defect, for test output.
    """

    text: str
    code: int
    field: str | None
    ref: str | None
    reason: str


_NOT_STRING = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_NOT_OBJECT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


#: Deeper than any recursion limit a test run would set.
_DEPTH = 200_000


@st.composite
def _invalid_frame(draw: st.DrawFn, types: tuple[str, ...], max_content_chars: int) -> InvalidFrame:
    event = draw(client_events(types, max_content_chars=max_content_chars))
    frame = _client_frame(event)
    payload = frame["payload"]
    ref = event.ref  # type: ignore[attr-defined]
    kind = event.type
    text_fields = [n for n in _REQUIRED[kind] + _OPTIONAL.get(kind, ()) if n != "since"]
    room_field = "room" in _REQUIRED[kind]
    defects = [
        "not json",
        "truncated",
        "trailing data",
        "nan",
        "huge number",
        "deep nesting",
        "not an object",
        "type missing",
        "type not a string",
        "unknown type",
        "payload missing",
        "payload not an object",
        "ref not a string",
        "ref too long",
        "ref surrogate",
        "field missing",
        "field null",
        "field not a string",
        "field surrogate",
    ]
    if room_field:
        defects.append("bad room")
    if kind == "direct":
        defects.append("bad user id")
    if kind in ("chat", "direct"):
        defects += ["empty content", "content too long"]
    if kind == "join":
        defects += ["bad since", "since not finite"]
    if kind == "presence":
        defects += ["bad status", "text too long", "text not a string"]
    defect = draw(st.sampled_from(defects))

    def case(
        code: int, field: str | None, *, frame_ref: bool = True, ascii_only: bool = False
    ) -> InvalidFrame:
        text = draw(_encode(frame, ascii_only=ascii_only))
        return InvalidFrame(text, code, field, ref if frame_ref else None, defect)

    def whole(text: str) -> InvalidFrame:
        return InvalidFrame(text, 400, None, None, defect)

    compact = json.dumps(frame, separators=(",", ":"))
    if defect == "not json":
        return whole(
            draw(
                st.one_of(
                    st.text().filter(lambda t: not _is_json(t)),
                    st.just(repr(frame)),  # Python's repr: single quotes
                    st.just("\ufeff" + compact),  # byte order mark
                    st.just(compact.replace('"', "'")),
                ).filter(lambda t: not _is_json(t))
            )
        )
    if defect == "truncated":
        return whole(compact[: draw(st.integers(0, len(compact) - 1))])
    if defect == "trailing data":
        return whole(compact + draw(st.sampled_from(["}", "x", "{}", ",", '"'])))
    if defect == "nan":
        literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        where = draw(st.sampled_from(["top", "payload"]))
        target = frame if where == "top" else payload
        target["__n"] = "@@"
        return whole(json.dumps(frame).replace('"@@"', literal))
    if defect == "huge number":
        # More digits than Python's int conversion allows: not JSON to it.
        # (Were that limit lifted, it would still be an ill-typed ref.)
        frame["ref"] = "@@"
        digits = draw(st.sampled_from(["", "-"])) + "9" * draw(st.integers(5_000, 20_000))
        return whole(json.dumps(frame).replace('"@@"', digits))
    if defect == "deep nesting":
        where = draw(st.sampled_from(["whole", "payload", "unbalanced"]))
        if where == "whole":
            return whole(_deep(_DEPTH))
        if where == "unbalanced":
            return whole("[" * _DEPTH)
        payload["extra"] = "@@"
        return whole(json.dumps(frame).replace('"@@"', _deep(_DEPTH)))
    if defect == "not an object":
        value = draw(
            st.one_of(
                _NOT_OBJECT,
                st.just([frame]),  # the frame in a list
                st.just(compact),  # the frame as a JSON string
            )
        )
        return whole(json.dumps(value))
    if defect == "type missing":
        del frame["type"]
        return case(400, "type")
    if defect == "type not a string":
        frame["type"] = draw(_NOT_STRING | st.none())
        return case(400, "type")
    if defect == "unknown type":
        frame["type"] = draw(
            st.one_of(
                st.sampled_from(
                    [t.upper() for t in CLIENT_TYPES]
                    + [t + " " for t in CLIENT_TYPES]
                    + ["", "ack", "error", "welcome"]
                ),
                st.text(max_size=20),
            ).filter(lambda t: t not in CLIENT_TYPES)
        )
        return case(400, "type")
    if defect == "payload missing":
        del frame["payload"]
        return case(400, "payload")
    if defect == "payload not an object":
        frame["payload"] = draw(_NOT_OBJECT)
        return case(400, "payload")
    if defect == "ref not a string":
        frame["ref"] = draw(_NOT_STRING)
        return case(400, "ref", frame_ref=False)
    if defect == "ref too long":
        frame["ref"] = draw(st.text(min_size=MAX_REF_CHARS + 1, max_size=MAX_REF_CHARS + 60))
        return case(400, "ref", frame_ref=False)
    if defect == "ref surrogate":
        frame["ref"] = draw(st.sampled_from(_LONE_SURROGATES))
        return case(400, "ref", frame_ref=False, ascii_only=True)
    if defect in ("field missing", "field null"):
        name = draw(st.sampled_from(_REQUIRED[kind]))
        if defect == "field missing":
            del payload[name]
        else:
            payload[name] = None
        if kind == "typing":
            # Without its room a typing frame names neither log it may name.
            return case(400, "payload")
        return case(400, f"payload.{name}")
    if defect == "field not a string":
        name = draw(st.sampled_from(_REQUIRED[kind]))
        payload[name] = draw(_NOT_STRING)
        return case(400, f"payload.{name}")
    if defect == "field surrogate":
        name = draw(st.sampled_from(text_fields))
        value = payload.get(name) or "x"
        at = draw(st.integers(0, len(value)))
        payload[name] = value[:at] + draw(st.sampled_from(_LONE_SURROGATES)) + value[at:]
        return case(400, f"payload.{name}", ascii_only=True)
    if defect == "bad room":
        payload["room"] = draw(invalid_room_names())
        return case(400, "payload.room")
    if defect == "bad user id":
        payload["to"] = draw(invalid_user_ids())
        return case(400, "payload.to")
    if defect == "empty content":
        payload["content"] = ""
        return case(400, "payload.content")
    if defect == "content too long":
        n = draw(st.integers(max_content_chars + 1, max_content_chars + 100))
        payload["content"] = draw(st.sampled_from("xé🙂")) * n
        return case(413, "payload.content")
    if defect == "bad since":
        payload["since"] = draw(
            st.one_of(
                st.integers(max_value=-1),
                st.booleans(),
                st.floats(allow_nan=False, allow_infinity=False),
                st.integers(0, 100).map(str),
                st.lists(st.integers(0, 3), max_size=2),
                st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
            )
        )
        return case(400, "payload.since")
    if defect == "since not finite":
        # 1e400 is valid JSON for a float that overflows to infinity.
        payload["since"] = "@@"
        literal = draw(st.sampled_from(["1e400", "-1e400", "1.0", "0.0", "1E2"]))
        text = json.dumps(frame).replace('"@@"', literal)
        return InvalidFrame(text, 400, "payload.since", ref, defect)
    if defect == "bad status":
        payload["status"] = draw(
            st.just("") | st.text(min_size=MAX_STATUS_CHARS + 1, max_size=MAX_STATUS_CHARS + 30)
        )
        return case(400, "payload.status")
    if defect == "text too long":
        payload["text"] = draw(
            st.text(min_size=MAX_PRESENCE_TEXT_CHARS + 1, max_size=MAX_PRESENCE_TEXT_CHARS + 30)
        )
        return case(400, "payload.text")
    if defect == "text not a string":
        payload["text"] = draw(_NOT_STRING)
        return case(400, "payload.text")
    raise AssertionError(defect)  # pragma: no cover


def invalid_frame_cases(
    types: Iterable[str] | None = None,
    *,
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
) -> st.SearchStrategy[InvalidFrame]:
    """Frames the server must refuse, as :class:`InvalidFrame` records.

    Each case has exactly one defect: not JSON (garbage, truncated, trailing
    data, a byte order mark, ``NaN``/``Infinity``, numbers too long to
    convert, nesting deeper than any parser allows), not an object, a missing
    or ill-typed ``type``/``payload``/``ref`` or payload field, an unknown
    ``type``, a bad room name or user id, empty or over-long content (413),
    a bad ``since`` (negative, boolean, float, string, infinite), a bad
    presence status or text, or a string holding a lone surrogate.

    Args:
        types: the frame types to mutate (default: all six).
        max_content_chars: the server's content limit.
    """
    return _invalid_frame(_types(types), max_content_chars)


def invalid_frames(
    types: Iterable[str] | None = None,
    *,
    max_content_chars: int = DEFAULT_MAX_CONTENT_CHARS,
) -> st.SearchStrategy[tuple[str, int]]:
    """Frames the server must refuse, as ``(text, expected_code)`` pairs.

    The same cases as :func:`invalid_frame_cases`, without the labels;
    ``expected_code`` is the PROTOCOL §5 code: 400, or 413 for content over
    *max_content_chars*.
    """
    return invalid_frame_cases(types, max_content_chars=max_content_chars).map(
        lambda case: (case.text, case.code)
    )


# --------------------------------------------------------------------------
# Server events


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
