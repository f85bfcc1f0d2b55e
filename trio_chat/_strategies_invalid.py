"""Hypothesis strategies for client frames the server must refuse, each
labelled with the error it earns.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import attrs
from hypothesis import strategies as st

from ._protocol import (
    DEFAULT_MAX_CONTENT_CHARS,
    MAX_PRESENCE_TEXT_CHARS,
    MAX_REF_CHARS,
    MAX_STATUS_CHARS,
    _client_frame,
)
from ._strategies_frames import _OPTIONAL, _REQUIRED, CLIENT_TYPES, _encode, _types, client_events
from ._strategies_values import _LONE_SURROGATES, invalid_room_names, invalid_user_ids

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
