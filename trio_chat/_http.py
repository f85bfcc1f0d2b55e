"""Plain HTTP on the WebSocket's port, with h11.

:func:`serve_http` reads requests from one TCP (or TLS) stream.  Plain
requests are answered by the router, with keep-alive; a WebSocket upgrade is
handed over, parsed, with any bytes read after its head, to the connection
layer (which answers the 101 itself: no second parse).  An upgrade whose
head arrives whole in the first read, in the strict form clients send, is
parsed once by :mod:`trio_chat._request_head` without h11; everything else
(and the answer to a refused upgrade) goes through h11.  The first request
head must arrive within the handshake timeout (a slowloris client is
disconnected), each later one within the keep-alive idle timeout.  A request
head is at most :data:`MAX_HEAD_BYTES` however TCP splits it (more: 431).
Every response carries ``X-Content-Type-Options: nosniff`` and a
Content-Security-Policy that forbids framing (``frame-ancestors 'none'``,
``X-Frame-Options: DENY``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

import attrs
import h11
import trio

from ._request_head import HEAD_END, parse_upgrade_head
from ._stream import receive_from, receive_nowait

__all__ = ["Handover", "HttpRequest", "HttpResponse", "Upgrade", "json_response", "serve_http"]

#: Largest request head accepted (request line, headers, blank line).
MAX_HEAD_BYTES = 16 * 1024
#: The policy of responses other than the page: nothing may load or frame them.
STRICT_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: The page's policy: its own scripts, styles and images, WebSockets to its
#: own origin, never inline code, never framed.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_REASONS = {
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


@attrs.frozen
class HttpRequest:
    """A parsed request head and its body.

    ``headers`` maps each lowercased name to its (last) value;
    ``header_list`` keeps every header, in order, as the bytes parsed
    (names lowercased); ``http_version`` is like ``b"1.1"``.
    """

    method: str
    target: str
    headers: dict[str, str]
    http_version: bytes
    header_list: Sequence[tuple[bytes, bytes]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def is_upgrade(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()


@attrs.frozen
class HttpResponse:
    """A whole response; *policy* is its Content-Security-Policy."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    policy: str = STRICT_POLICY


class ScopeTracker(Protocol):
    """Where ``serve_http`` keeps the cancel scope of each wait for a request."""

    def add(self, scope: trio.CancelScope, /) -> None: ...
    def discard(self, scope: trio.CancelScope, /) -> None: ...


def json_response(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, json.dumps(obj).encode() + b"\n", "application/json", headers)


def json_content(request: HttpRequest) -> HttpResponse | None:
    """None when *request* says its body is JSON, else the 415 to answer."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        return json_response(415, {"error": "Content-Type must be application/json"})
    return None


def json_object(request: HttpRequest) -> dict[str, Any] | HttpResponse:
    """*request*'s body as a JSON object, or the 400 to answer."""
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        return json_response(400, {"error": "body must be JSON"})
    if not isinstance(body, dict):
        return json_response(400, {"error": "body must be a JSON object"})
    return body


@attrs.frozen
class Upgrade:
    """The router's answer for an accepted upgrade: hand the stream over.

    ``context`` travels to the upgrade handler (the server puts the
    authenticated identity there).
    """

    context: Any = None


Router = Callable[[HttpRequest], Awaitable[HttpResponse | Upgrade]]


@attrs.frozen
class Handover:
    """An accepted upgrade, handed from the HTTP front to the WebSocket."""

    request: HttpRequest
    upgrade: Upgrade
    #: Bytes the client sent after the request head (its first frames).
    prefix: bytes
    deadline: float


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(16384)
        conn.receive_data(cast(bytes, data))


async def _next_head(conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> Any:
    """The next event, reading at most *limit* bytes in all until the request
    head is complete: the head limit is exact whatever the TCP split.

    Raises RemoteProtocolError (431) for a longer head.
    """
    buffered = len(conn.trailing_data[0])  # a pipelined request already read
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        room = limit - buffered
        if room <= 0:
            raise h11.RemoteProtocolError(
                f"request head longer than {limit} bytes", error_status_hint=431
            )
        data = await stream.receive_some(room)
        buffered += len(data)
        conn.receive_data(cast(bytes, data))


async def send_response(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    response: HttpResponse,
    *,
    head_only: bool = False,
) -> None:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("server", "trio-chat"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", response.policy),
        *response.headers,
    ]
    await _send(
        conn,
        stream,
        h11.Response(
            status_code=response.status,
            headers=headers,
            reason=_REASONS.get(response.status, b""),
        ),
    )
    if response.body and not head_only:
        await _send(conn, stream, h11.Data(data=response.body))
    await _send(conn, stream, h11.EndOfMessage())


async def serve_http(
    stream: trio.abc.Stream,
    router: Router,
    *,
    head_timeout: float,
    max_body: int,
    idle_timeout: float | None = None,
    idle_scopes: ScopeTracker | None = None,
    first_deadline: float | None = None,
    write_timeout: float | None = None,
) -> Handover | None:
    """Answer requests on *stream* until it closes, or until an upgrade.

    Returns None when the HTTP conversation is over (the caller closes the
    stream), or a :class:`Handover` when the router accepted a WebSocket
    upgrade: the request, the router's :class:`Upgrade`, anything read after
    the request head, and the handshake deadline.
    Returning, rather than calling on, lets the HTTP parser's state be freed
    for the WebSocket's whole life.  A keep-alive connection waits at most
    *idle_timeout* (default: *head_timeout*) for each request after the
    first.  Waiting for the next request happens inside a cancel scope kept
    in *idle_scopes*, so a graceful shutdown, or load shedding, can end idle
    keep-alive connections at once.  *first_deadline* bounds the
    first request head instead of *head_timeout* (the connection's whole
    handshake budget, when a TLS handshake has already used part of it).
    Each response must be written within *write_timeout* (default:
    *head_timeout*), else the conversation ends: a client that sends
    requests but never reads the answers does not hold a task forever.
    """
    if write_timeout is None:
        write_timeout = head_timeout
    if idle_timeout is None:
        idle_timeout = head_timeout
    deadline = trio.current_time() + head_timeout
    if first_deadline is not None:
        deadline = min(deadline, first_deadline)
    # The first read: a WebSocket upgrade's head usually arrives whole in
    # it, and is often there already (then there is nothing to wait for).
    data: bytes | bytearray | None = receive_nowait(stream, MAX_HEAD_BYTES)
    if data is None:
        with trio.CancelScope(deadline=deadline) as scope:
            if idle_scopes is not None:
                idle_scopes.add(scope)
            try:
                data = await receive_from(stream, MAX_HEAD_BYTES)
            finally:
                if idle_scopes is not None:
                    idle_scopes.discard(scope)
        if data is None:
            return None  # slow client (the scope was cancelled): just close
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    end = data.find(HEAD_END) + len(HEAD_END)
    head = parse_upgrade_head(data[:end]) if end >= len(HEAD_END) else None
    if head is not None:
        # The strict upgrade form, parsed once; anything else goes to h11.
        request = _request_of(b"GET", head.target, b"1.1", head.headers)
        answer = await router(request)
        if isinstance(answer, Upgrade):
            return Handover(request, answer, bytes(data[end:]), deadline)
        # Refused: h11 writes the answer, as for any request.
        conn.receive_data(bytes(data[:end]))
        conn.next_event()
        with trio.move_on_after(write_timeout):
            await send_response(conn, stream, answer)
        return None  # never keep a refused upgrade's connection alive
    conn.receive_data(cast(bytes, data))

    async def respond(response: HttpResponse, *, head_only: bool = False) -> bool:
        """Send *response*; False if it was not written in time."""
        with trio.move_on_after(write_timeout):
            await send_response(conn, stream, response, head_only=head_only)
            return True
        return False

    first = True
    while True:
        if not first:
            deadline = trio.current_time() + idle_timeout
        first = False
        with trio.CancelScope(deadline=deadline) as scope:
            if idle_scopes is not None:
                idle_scopes.add(scope)
            try:
                event = await _next_head(conn, stream, MAX_HEAD_BYTES)
            except h11.RemoteProtocolError as exc:
                with trio.move_on_after(write_timeout):
                    await _refuse_malformed(conn, stream, exc)
                return None
            finally:
                if idle_scopes is not None:
                    idle_scopes.discard(scope)
        if scope.cancelled_caught or isinstance(event, h11.ConnectionClosed):
            return None  # slow or idle client, or gone: just close
        if not isinstance(event, h11.Request):
            return None
        request = _request_of(event.method, event.target, event.http_version, event.headers)
        if request.is_upgrade:
            answer = await router(request)
            if isinstance(answer, Upgrade):
                trailing, _ = conn.trailing_data
                return Handover(request, answer, bytes(trailing), deadline)
            await respond(answer)
            return None  # never keep a refused upgrade's connection alive
        with trio.move_on_after(head_timeout) as body_scope:
            body = await _read_body(conn, stream, max_body)
        if body_scope.cancelled_caught:
            return None
        if isinstance(body, HttpResponse):
            if await respond(attrs.evolve(body, headers=(("connection", "close"),))):
                try:
                    await _linger(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            return None
        request = attrs.evolve(request, body=body)
        try:
            answer = await router(request)
        except h11.RemoteProtocolError as exc:  # pragma: no cover - defensive
            with trio.move_on_after(write_timeout):
                await _refuse_malformed(conn, stream, exc)
            return None
        assert isinstance(answer, HttpResponse)
        if not await respond(answer, head_only=request.method == "HEAD"):
            return None
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return None
        conn.start_next_cycle()


def _request_of(
    method: bytes, target: bytes, http_version: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> HttpRequest:
    """The :class:`HttpRequest` of a parsed head (names already lowercased)."""
    return HttpRequest(
        method.decode("ascii", "replace"),
        target.decode("ascii", "replace"),
        {k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
        http_version,
        headers,
    )


async def _read_body(
    conn: h11.Connection, stream: trio.abc.Stream, limit: int
) -> bytes | HttpResponse:
    """The request body, or the refusal to send: 413 over *limit* bytes, 400
    when malformed (a bad chunk size, say)."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            event = await _next_event(conn, stream)
        except h11.RemoteProtocolError:
            return HttpResponse(400, b"malformed request body\n")
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return HttpResponse(413, b"request body too large\n")
            parts.append(bytes(event.data))
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return b"".join(parts)


async def _refuse_malformed(
    conn: h11.Connection, stream: trio.abc.Stream, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
    # h11's message, never the client's bytes.
    body = f"malformed request: {str(exc)[:100]}\n".encode("utf-8", "replace")
    try:
        await send_response(
            conn, stream, HttpResponse(status, body, headers=(("connection", "close"),))
        )
        await _linger(stream)
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass


#: After refusing a request mid-way, read and drop at most this many more
#: bytes, for at most LINGER_SECONDS: closing with unread data would reset
#: the connection, and the client could lose the answer.
LINGER_BYTES = 64 * 1024
LINGER_SECONDS = 0.5


async def _linger(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(LINGER_SECONDS):
        await linger(stream, LINGER_BYTES)


async def linger(stream: trio.abc.Stream, max_bytes: int) -> None:
    """Half-close *stream*, then read and drop up to *max_bytes* until EOF.

    Closing a socket whose receive buffer holds unread bytes makes the
    kernel answer with a reset, and the reset can destroy what was just
    sent (an HTTP answer, a close frame) in the client's buffer before the
    client reads it.  The caller bounds the time.  A client that has already
    reset the connection ends it at once.
    """
    try:
        if isinstance(stream, trio.SocketStream):
            stream.socket.shutdown(socket.SHUT_WR)
        dropped = 0
        while dropped < max_bytes:
            chunk = await stream.receive_some(16384)
            if not chunk:
                return
            dropped += len(chunk)
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        # (shutdown() of a socket the client already reset: ENOTCONN.)
        return
