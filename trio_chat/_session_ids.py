"""Session ids: the random name of each WebSocket connection.

Pure: no I/O but the OS's randomness, no trio.
"""

from __future__ import annotations

import base64
import os
import secrets

__all__ = ["SESSION_ID_BYTES", "session_id"]

#: Random bytes per session id (12 characters of URL-safe base64), and how
#: many ids' worth are drawn from the OS at once.
SESSION_ID_BYTES = 9
_SESSION_IDS_PER_DRAW = 256
_session_pool = bytearray()


def session_id() -> str:
    """A new session id: as ``secrets.token_urlsafe(9)``, from a pool of the
    same OS randomness drawn for many ids at once (one system call less per
    connection).  A forked child starts with an empty pool."""
    if not _session_pool:
        _session_pool.extend(secrets.token_bytes(SESSION_ID_BYTES * _SESSION_IDS_PER_DRAW))
    raw = bytes(_session_pool[-SESSION_ID_BYTES:])
    del _session_pool[-SESSION_ID_BYTES:]
    return base64.urlsafe_b64encode(raw).decode("ascii")


os.register_at_fork(after_in_child=_session_pool.clear)
