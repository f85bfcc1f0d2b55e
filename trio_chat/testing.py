"""Tools for testing code built on trio_chat (and trio_chat itself).

* Hypothesis strategies for what the protocol accepts and rejects: room names,
  user ids, valid client frames of each type (with the event each must parse
  to), invalid frames labelled with the error code they must earn, and server
  events.
* :func:`open_test_server` and :func:`open_test_client`: a real server on
  127.0.0.1 port 0 and connected WebSocket clients, for pytest-trio tests.
* :func:`open_memory_server`, :func:`open_memory_stream` and
  :func:`open_memory_client`: the same over in-memory streams, for tests that
  run on trio's ``MockClock`` (heartbeats, timeouts, deadlines).

Importing this module needs Hypothesis (``pip install 'trio-chat[test]'``).
"""

from ._strategies import (
    CLIENT_TYPES as CLIENT_TYPES,
    SERVER_EVENT_CLASSES as SERVER_EVENT_CLASSES,
    InvalidFrame as InvalidFrame,
    client_events as client_events,
    client_frames as client_frames,
    invalid_frame_cases as invalid_frame_cases,
    invalid_frames as invalid_frames,
    invalid_room_names as invalid_room_names,
    invalid_user_ids as invalid_user_ids,
    json_values as json_values,
    refs as refs,
    room_names as room_names,
    server_events as server_events,
    timestamps as timestamps,
    user_ids as user_ids,
)
from ._testing_server import (
    TestClient as TestClient,
    open_memory_client as open_memory_client,
    open_memory_server as open_memory_server,
    open_memory_stream as open_memory_stream,
    open_test_client as open_test_client,
    open_test_server as open_test_server,
)
