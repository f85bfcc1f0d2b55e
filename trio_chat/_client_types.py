"""The Python client's small public types: its errors, its connection
state and the event that reports it, and its reconnect policy.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import ClassVar

import attrs

__all__ = ["Backoff", "ClientError", "ConnectError", "ConnectionState", "StateChanged"]


class ClientError(Exception):
    """A request refused by the server, or given up by the client.

    ``code`` is the protocol's error code (400, 403, 404, 413, 429, 500) when
    the server answered with an ``error`` frame or when the client saw
    beforehand that the server would (a bad room name, content over the
    server's limits).  It is 0 when the client gave up on its own: the room
    was left before the message was delivered, the client closed, or the
    message was not acknowledged after ``max_send_attempts`` connections.
    ``retry_after_ms`` is set for 429.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        ref: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after_ms = retry_after_ms

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConnectionState(enum.Enum):
    """Where the client's connection stands."""

    #: Opening a WebSocket and waiting for the server's ``welcome``.
    CONNECTING = "connecting"
    #: ``welcome`` received: frames flow.
    ONLINE = "online"
    #: The connection was lost; waiting ``delay`` seconds before the next attempt.
    RECONNECTING = "reconnecting"
    #: Stopped for good: the block was left, or reconnecting failed for good.
    CLOSED = "closed"


@attrs.frozen
class StateChanged:
    """An event in the client's stream: the connection changed state.

    ``attempt`` counts the failed attempts in a row so far, ``delay`` is the
    wait before the next attempt (``RECONNECTING``) and ``reason`` says why the
    previous connection ended or why the client stopped.
    """

    type: ClassVar[str] = "state"
    state: ConnectionState
    attempt: int = 0
    delay: float | None = None
    reason: str | None = None


@attrs.frozen
class Backoff:
    """When to reconnect: exponential backoff with full jitter.

    The delay before retry number *n* (0 for the first) is uniform in
    ``[0, min(cap, base * 2**n))``.  A connection that stayed up for
    ``reset_after`` seconds resets *n* to 0.  ``max_attempts`` failed attempts
    in a row stop the client (``None``: never give up).
    """

    base: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    cap: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    reset_after: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    max_attempts: int | None = None

    def delay(self, attempt: int, random: Callable[[], float]) -> float:
        """Seconds to wait before retry number *attempt*; *random* gives [0, 1)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 64))
        return random() * ceiling


class ConnectError(Exception):
    """The client could not connect (first attempt), or was refused for good.

    ``status`` is the HTTP status when the server refused the handshake
    (401: missing or bad token, 403: origin or room rules, 429: too many
    connections or handshakes, 503: full), else None (network error,
    timeout).  ``reason`` is the server's own explanation from the refusal's
    body (``"token expired"``), when it gave one; the message includes it.
    """

    def __init__(self, message: str, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
