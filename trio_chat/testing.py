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
)
from ._strategies import (
    SERVER_EVENT_CLASSES as SERVER_EVENT_CLASSES,
)
from ._strategies import (
    InvalidFrame as InvalidFrame,
)
from ._strategies import (
    client_events as client_events,
)
from ._strategies import (
    client_frames as client_frames,
)
from ._strategies import (
    invalid_frame_cases as invalid_frame_cases,
)
from ._strategies import (
    invalid_frames as invalid_frames,
)
from ._strategies import (
    invalid_room_names as invalid_room_names,
)
from ._strategies import (
    invalid_user_ids as invalid_user_ids,
)
from ._strategies import (
    json_values as json_values,
)
from ._strategies import (
    refs as refs,
)
from ._strategies import (
    room_names as room_names,
)
from ._strategies import (
    server_events as server_events,
)
from ._strategies import (
    timestamps as timestamps,
)
from ._strategies import (
    user_ids as user_ids,
)
from ._testing_server import (
    TestClient as TestClient,
)
from ._testing_server import (
    open_memory_client as open_memory_client,
)
from ._testing_server import (
    open_memory_server as open_memory_server,
)
from ._testing_server import (
    open_memory_stream as open_memory_stream,
)
from ._testing_server import (
    open_test_client as open_test_client,
)
from ._testing_server import (
    open_test_server as open_test_server,
)
