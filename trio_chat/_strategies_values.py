"""Hypothesis strategies for the protocol's values: room names and user ids
(and strings that are neither), refs, timestamps and JSON values.

Part of :mod:`trio_chat.testing` (see :mod:`trio_chat._strategies`).
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import strategies as st

from ._protocol import MAX_REF_CHARS, format_time

__all__ = [
    "invalid_room_names",
    "invalid_user_ids",
    "json_values",
    "refs",
    "room_names",
    "timestamps",
    "user_ids",
]

_ALNUM = string.ascii_letters + string.digits
_ROOM_CHARS = _ALNUM + "_.:-"
_USER_CHARS = _ALNUM + "_.@-"
_MAX_NAME = 64
_LONE_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")


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
