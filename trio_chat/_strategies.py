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

from ._strategies_events import (
    SERVER_EVENT_CLASSES as SERVER_EVENT_CLASSES,
    server_events as server_events,
)
from ._strategies_frames import (
    CLIENT_TYPES as CLIENT_TYPES,
    client_events as client_events,
    client_frames as client_frames,
)
from ._strategies_invalid import (
    InvalidFrame as InvalidFrame,
    invalid_frame_cases as invalid_frame_cases,
    invalid_frames as invalid_frames,
)
from ._strategies_values import (
    invalid_room_names as invalid_room_names,
    invalid_user_ids as invalid_user_ids,
    json_values as json_values,
    refs as refs,
    room_names as room_names,
    timestamps as timestamps,
    user_ids as user_ids,
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
