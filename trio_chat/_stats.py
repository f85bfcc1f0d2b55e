"""What a running server reports of itself: :class:`ServerStats` (counts)
and :class:`ConnectionInfo` (one open WebSocket), read-only snapshots that
:meth:`ChatServer.stats` and :meth:`ChatServer.connections` return."""

from __future__ import annotations

import attrs

__all__ = ["ConnectionInfo", "ServerStats"]


@attrs.frozen
class ServerStats:
    """A read-only snapshot of a running server."""

    #: Open WebSocket connections (past their handshake).
    connections: int
    users: int
    rooms: int
    messages: int
    history: int
    frames_received: int
    frames_delivered: int
    slow_consumer_drops: int
    ephemeral_dropped: int
    rate_limited: int
    #: Connections open from their accept to their close, of every kind:
    #: plain HTTP, keep-alive, handshakes and WebSockets (what
    #: ``max_connections`` and ``max_connections_per_ip`` count).
    tcp_connections: int
    #: HTTP connections waiting for their next request (keep-alive).
    idle_http_connections: int
    #: WebSocket handshakes accepted whose 101 response is not written yet.
    handshakes: int
    #: Connections refused at accept so far, by HTTP status (429: per IP,
    #: 503: server-wide or out of descriptors).
    connections_refused: dict[int, int]


@attrs.frozen
class ConnectionInfo:
    """One open WebSocket connection, as :meth:`ChatServer.connections` sees it."""

    #: The id sent to the client in its ``welcome`` (unique per connection).
    session_id: str
    user_id: str
    #: The client's address (``"memory"`` for in-memory streams).
    peer: str
    #: Seconds since the connection was accepted.
    age: float
    #: Frames queued for the client or being written (``queue_size`` caps them).
    queued_frames: int
    #: Their bytes (``queue_bytes`` caps them).
    queued_bytes: int
    #: A write to the client is in flight or waits to finish: the client is
    #: not reading as fast as it is sent to (what is sent next is queued).
    writing: bool
