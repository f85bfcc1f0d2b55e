"""The Python client's transport: one WebSocket to the server, and how a
connection ended.

:func:`open_websocket` makes the TCP connection, the TLS handshake for
``wss://`` and the WebSocket handshake; :func:`read_welcome` reads the
server's first frame.  :class:`Ended` says why a connection attempt or a
connection ended, in words for the user (:func:`describe`), with the HTTP
status and the server's reason when it refused the handshake.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse

import attrs
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from ._protocol import Welcome, parse_server_frame

__all__ = [
    "CONNECT_ERRORS",
    "SUBPROTOCOL",
    "AttemptFailed",
    "Ended",
    "describe",
    "ended_by",
    "first_leaf",
    "open_websocket",
    "read_welcome",
]

#: The subprotocol offered in the handshake.
SUBPROTOCOL = "trio-chat.v1"
#: Largest frame accepted from the server (a ``joined`` carries history).
_MAX_FRAME = 16 * 1024 * 1024


@attrs.frozen
class Ended:
    """Why a connection ended."""

    reason: str
    #: HTTP status of a refused handshake.
    status: int | None = None
    #: The server's reason for refusing it (from the response body).
    refusal: str | None = None
    #: The connection got as far as ``welcome``.
    online: bool = False
    #: Seconds it stayed online.
    uptime: float = 0.0


async def open_websocket(
    nursery: trio.Nursery,
    url: str,
    headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None,
) -> trio_websocket.WebSocketConnection:
    """TCP, then TLS for ``wss://``, then the WebSocket handshake to *url*.

    TCP and TLS are set up here rather than by trio-websocket so that a
    failed TLS handshake raises at once (trio-websocket would wait for an
    opening handshake that can no longer come).  trio-websocket runs the
    connection's reader in *nursery*.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        shown = urllib.parse.urlunsplit(parts._replace(query=""))  # no credentials
        raise ValueError(f"not a ws:// or wss:// URL: {shown!r}")
    secure = parts.scheme == "wss"
    host = parts.hostname
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if secure else 80):
        host_header += f":{port}"
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    stream = await trio.open_tcp_stream(host, port)
    if secure:
        context = ssl_context or ssl.create_default_context()
        stream = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
        try:
            await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return await trio_websocket.wrap_client_stream(
        nursery,
        stream,
        host_header,
        resource,
        subprotocols=[SUBPROTOCOL],
        extra_headers=headers,
        max_message_size=_MAX_FRAME,
    )


async def read_welcome(ws: trio_websocket.WebSocketConnection) -> Welcome:
    """The server's first frame, which must be ``welcome``."""
    event = parse_server_frame(await ws.get_message())
    if not isinstance(event, Welcome):
        raise ValueError(f"expected welcome, got {event.type}")
    return event


class AttemptFailed(Exception):
    """A connection attempt that failed before reaching the network."""


#: What a failed connection attempt raises.
CONNECT_ERRORS = (
    AttemptFailed,
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    ValueError,
)


def first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first exception in *group*, however deeply nested."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def ended_by(exc: BaseException) -> Ended:
    """How a connection attempt that raised *exc* ended."""
    if isinstance(exc, ConnectionRejected):
        refusal = _refusal_reason(exc)
        text = f"handshake refused with HTTP {exc.status_code}"
        if refusal:
            text += f": {refusal}"
        if exc.status_code < 400 or exc.status_code in (404, 405, 426):
            # Something answered, but not a WebSocket endpoint (e.g. the page at "/").
            text += " (not a chat WebSocket endpoint: check the URL's path; trio-chat serves /ws)"
        return Ended(text, exc.status_code, refusal)
    return Ended(describe(exc))


#: Longest refusal reason kept from a response body.
_MAX_REASON_CHARS = 300


def _refusal_reason(exc: ConnectionRejected) -> str | None:
    """The server's reason from a refused handshake's body, if it gave one.

    A plain-text body is the reason itself (its first line); a JSON object
    gives its ``reason``, ``message`` or ``error`` string.  Anything else (an
    HTML page) gives None.  Control characters are dropped and the text is
    cut to a few hundred characters: it comes from the network.
    """
    body = exc.body
    if not body:
        return None
    content_type = ""
    for name, value in exc.headers:
        if name.lower() == b"content-type":
            content_type = value.decode("latin-1").split(";")[0].strip().lower()
    text = body[: 16 * 1024].decode("utf-8", errors="replace")
    reason: object = None
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            document = json.loads(text)
        except ValueError:
            return None
        if isinstance(document, dict):
            reason = next(
                (
                    document[k]
                    for k in ("reason", "message", "error")
                    if isinstance(document.get(k), str)
                ),
                None,
            )
    elif content_type in ("", "text/plain"):
        reason = next((line for line in text.splitlines() if line.strip()), None)
    if not isinstance(reason, str):
        return None
    reason = "".join(c for c in reason if c.isprintable()).strip()
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[: _MAX_REASON_CHARS - 1] + "…"
    return reason or None


def describe(exc: BaseException) -> str:
    """*exc*, a connection's end, in a few words for the user."""
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return "connection closed"
        if reason.code == 1006:
            return "connection lost"
        text = f"closed with {reason.code}"
        if reason.reason:
            text += f" ({reason.reason})"
        return text
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # e.g. the TLS error behind a failed handshake
    return str(exc) or type(exc).__name__
