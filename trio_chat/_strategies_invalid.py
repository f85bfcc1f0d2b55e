"""Hypothesis strategies for client frames the server must refuse, each
labelled with the error it earns.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs
from hypothesis import strategies as st

from ._message_frames import MAX_EMOJI_CHARS
from ._protocol import (
    DEFAULT_MAX_CONTENT_CHARS,
    MAX_PRESENCE_TEXT_CHARS,
    MAX_REF_CHARS,
    MAX_STATUS_CHARS,
    _client_frame,
)
from ._room_frames import MAX_QUERY_CHARS, MAX_TOPIC_CHARS
from ._strategies_frames import (
    _ID_FIELDS,
    _OPTIONAL,
    _REQUIRED,
    _TARGETED,
    CLIENT_TYPES,
    _encode,
    _read_fields,
    _types,
    client_events,
)
from ._strategies_values import (
    _LONE_SURROGATES,
    invalid_room_names,
    invalid_user_ids,
    room_names,
    user_ids,
)

__all__ = ["InvalidFrame", "invalid_frame_cases", "invalid_frames"]


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


#: Defects of the frame as a whole, or of its ``type``, ``payload`` or ``ref``.
_FRAME_DEFECTS = (
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
)
#: Text fields with a length rule: (fewest, most) characters.
_LENGTHS = {
    "status": (1, MAX_STATUS_CHARS),
    "text": (0, MAX_PRESENCE_TEXT_CHARS),
    "emoji": (1, MAX_EMOJI_CHARS),
    "query": (0, MAX_QUERY_CHARS),
    "topic": (0, MAX_TOPIC_CHARS),
}
#: What a message id is not: negative, a boolean, a float, a string, ...
_NOT_ID = st.one_of(
    st.integers(max_value=-1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(0, 100).map(str),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@attrs.frozen
class _Broken:
    """How a payload defect is refused: *code*, naming *field*."""

    code: int
    field: str
    ascii_only: bool = False
    #: JSON text that replaces the placeholder ``"@@"`` (numbers JSON has
    #: and Python's ``json.dumps`` does not write).
    literal: str | None = None


def _field_defects(kind: str, payload: dict[str, Any]) -> list[str]:
    """The payload defects a frame of *kind* can have."""
    required = _REQUIRED[kind]
    defects = []
    if required:
        defects += ["field missing", "field null"]
    if any(name not in _ID_FIELDS for name in required):
        defects.append("field not a string")
    if _text_fields(kind, payload):
        defects.append("field surrogate")
    if kind in _TARGETED:
        defects += ["no log", "both logs", "log not a string"]
    if "room" in payload:
        defects.append("bad room")
    if "with" in payload or kind == "direct":
        defects.append("bad user id")
    if "content" in required:
        defects += ["empty content", "content too long"]
    if _id_fields(kind):
        defects += ["bad id", "id not finite"]
    if any(name in _LENGTHS for name in _read_fields(kind)):
        defects.append("bad length")
    if any(name in ("text", "query") for name in _OPTIONAL.get(kind, ())):
        defects.append("optional not a string")
    if kind == "command":
        defects.append("ref missing")
    return defects


def _text_fields(kind: str, payload: dict[str, Any]) -> list[str]:
    """The text fields a frame of *kind* reads: the log it names (*payload*
    holds it), its required and optional text."""
    names: list[str] = [n for n in ("room", "with") if n in payload and kind in _TARGETED]
    names += [n for n in _REQUIRED[kind] + _OPTIONAL.get(kind, ()) if n not in _ID_FIELDS]
    return names


def _id_fields(kind: str) -> list[str]:
    return [n for n in _REQUIRED[kind] + _OPTIONAL.get(kind, ()) if n in _ID_FIELDS]


def _break_field(
    draw: st.DrawFn,
    defect: str,
    kind: str,
    frame: dict[str, Any],
    max_content_chars: int,
) -> _Broken:
    """Give *frame*'s payload (or, for a command, its ``ref``) *defect*."""
    payload = frame["payload"]
    if defect in ("field missing", "field null"):
        name = draw(st.sampled_from(_REQUIRED[kind]))
        if defect == "field missing":
            del payload[name]
        else:
            payload[name] = None
        return _Broken(400, f"payload.{name}")
    if defect == "field not a string":
        name = draw(st.sampled_from([n for n in _REQUIRED[kind] if n not in _ID_FIELDS]))
        payload[name] = draw(_NOT_STRING)
        return _Broken(400, f"payload.{name}")
    if defect == "field surrogate":
        name = draw(st.sampled_from(_text_fields(kind, payload)))
        value = payload.get(name) or "x"
        at = draw(st.integers(0, len(value)))
        payload[name] = value[:at] + draw(st.sampled_from(_LONE_SURROGATES)) + value[at:]
        return _Broken(400, f"payload.{name}", ascii_only=True)
    if defect == "no log":
        # Without a room or a user the frame names no log at all.
        for name in ("room", "with"):
            payload.pop(name, None)
            if draw(st.booleans()):
                payload[name] = None
        return _Broken(400, "payload")
    if defect == "both logs":
        payload.setdefault("room", draw(room_names()))
        payload.setdefault("with", draw(user_ids()))
        return _Broken(400, "payload")
    if defect == "log not a string":
        name = "room" if "room" in payload else "with"
        payload[name] = draw(_NOT_STRING)
        return _Broken(400, f"payload.{name}")
    if defect == "bad room":
        payload["room"] = draw(invalid_room_names())
        return _Broken(400, "payload.room")
    if defect == "bad user id":
        name = "to" if kind == "direct" else "with"
        payload[name] = draw(invalid_user_ids())
        return _Broken(400, f"payload.{name}")
    if defect == "empty content":
        payload["content"] = ""
        return _Broken(400, "payload.content")
    if defect == "content too long":
        n = draw(st.integers(max_content_chars + 1, max_content_chars + 100))
        payload["content"] = draw(st.sampled_from("xé🙂")) * n
        return _Broken(413, "payload.content")
    if defect == "bad id":
        name = draw(st.sampled_from(_id_fields(kind)))
        payload[name] = draw(_NOT_ID)
        return _Broken(400, f"payload.{name}")
    if defect == "id not finite":
        # 1e400 is valid JSON for a float that overflows to infinity.
        name = draw(st.sampled_from(_id_fields(kind)))
        payload[name] = "@@"
        literal = draw(st.sampled_from(["1e400", "-1e400", "1.0", "0.0", "1E2"]))
        return _Broken(400, f"payload.{name}", literal=literal)
    if defect == "bad length":
        name = draw(st.sampled_from([n for n in _read_fields(kind) if n in _LENGTHS]))
        fewest, most = _LENGTHS[name]
        too_long = st.text(min_size=most + 1, max_size=most + 30)
        payload[name] = draw(too_long | st.just("")) if fewest else draw(too_long)
        return _Broken(400, f"payload.{name}")
    if defect == "optional not a string":
        name = draw(st.sampled_from([n for n in _OPTIONAL[kind] if n in ("text", "query")]))
        payload[name] = draw(_NOT_STRING)
        return _Broken(400, f"payload.{name}")
    if defect == "ref missing":
        # A command's result answers its ref: the ref is required.
        del frame["ref"]
        return _Broken(400, "ref")
    raise AssertionError(defect)  # pragma: no cover


@st.composite
def _invalid_frame(draw: st.DrawFn, types: tuple[str, ...], max_content_chars: int) -> InvalidFrame:
    event = draw(client_events(types, max_content_chars=max_content_chars))
    frame = _client_frame(event)
    payload = frame["payload"]
    ref = event.ref  # type: ignore[attr-defined]
    kind = event.type
    defect = draw(st.sampled_from(_FRAME_DEFECTS + tuple(_field_defects(kind, payload))))

    def case(
        code: int, field: str | None, *, frame_ref: bool = True, ascii_only: bool = False
    ) -> InvalidFrame:
        text = draw(_encode(frame, ascii_only=ascii_only))
        return InvalidFrame(text, code, field, ref if frame_ref else None, defect)

    def whole(text: str) -> InvalidFrame:
        return InvalidFrame(text, 400, None, None, defect)

    if defect not in _FRAME_DEFECTS:
        broken = _break_field(draw, defect, kind, frame, max_content_chars)
        frame_ref = "ref" in frame
        if broken.literal is not None:
            text = json.dumps(frame).replace('"@@"', broken.literal)
            return InvalidFrame(text, broken.code, broken.field, ref, defect)
        return case(broken.code, broken.field, frame_ref=frame_ref, ascii_only=broken.ascii_only)
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
    ``type``, a bad room name or user id, neither or both of ``room`` and
    ``with`` (the error names ``payload``), empty or over-long content (413),
    a bad message id, ``since`` or ``before`` (negative, boolean, float,
    string, infinite), a status, text, emoji, query or topic of the wrong
    length, a command without its ``ref``, or a string holding a lone
    surrogate.

    Args:
        types: the frame types to mutate (default: all of
            :data:`~trio_chat.testing.CLIENT_TYPES`).
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
