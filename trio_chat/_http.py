"""Plain HTTP on the WebSocket's port, with h11.

:func:`serve_http` reads requests from one TCP (or TLS) stream.  Plain
requests are answered by the router, with keep-alive; a WebSocket upgrade is
handed over, parsed, with any bytes read after its head, to the connection
layer (which answers the 101 itself: no second parse).  Every request head
must arrive within the handshake
timeout (a slowloris client is disconnected).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import h11
import trio

__all__ = ["Handover", "HttpRequest", "HttpResponse", "Upgrade", "json_response", "serve_http"]

#: Largest request head accepted.
MAX_HEAD_BYTES = 16 * 1024
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
    """A parsed request head (header names lowercased) and its body."""

    method: str
    target: str
    headers: dict[str, str]
    raw: h11.Request
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def is_upgrade(self) -> bool:
        return "websocket" in self.headers.get("upgrade", "").lower()


@attrs.frozen
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, json.dumps(obj).encode() + b"\n", "application/json", headers)


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
        conn.receive_data(data)


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
    idle_scopes: set[trio.CancelScope] | None = None,
    first_deadline: float | None = None,
    write_timeout: float | None = None,
) -> Handover | None:
    """Answer requests on *stream* until it closes, or until an upgrade.

    Returns None when the HTTP conversation is over (the caller closes the
    stream), or a :class:`Handover` when the router accepted a WebSocket
    upgrade: the request, the router's :class:`Upgrade`, anything read after
    the request head, and the handshake deadline.
    Returning, rather than calling on, lets the HTTP parser's state be freed
    for the WebSocket's whole life.  Waiting for the next request happens
    inside a cancel scope kept in *idle_scopes*, so a graceful shutdown can
    end idle keep-alive connections at once.  *first_deadline* bounds the
    first request head instead of *head_timeout* (the connection's whole
    handshake budget, when a TLS handshake has already used part of it).
    Each response must be written within *write_timeout* (default:
    *head_timeout*), else the conversation ends: a client that sends
    requests but never reads the answers does not hold a task forever.
    """
    if write_timeout is None:
        write_timeout = head_timeout
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def respond(response: HttpResponse, *, head_only: bool = False) -> bool:
        """Send *response*; False if it was not written in time."""
        with trio.move_on_after(write_timeout):
            await send_response(conn, stream, response, head_only=head_only)
            return True
        return False

    while True:
        deadline = trio.current_time() + head_timeout
        if first_deadline is not None:
            deadline, first_deadline = min(deadline, first_deadline), None
        with trio.CancelScope(deadline=deadline) as scope:
            if idle_scopes is not None:
                idle_scopes.add(scope)
            try:
                event = await _next_event(conn, stream)
            except h11.RemoteProtocolError as exc:
                with trio.move_on_after(write_timeout):
                    await _refuse_malformed(conn, stream, exc)
                return None
            finally:
                if idle_scopes is not None:
                    idle_scopes.discard(scope)
        if scope.cancelled_caught or isinstance(event, h11.ConnectionClosed):
            return  # slow or idle client, or gone: just close
        if not isinstance(event, h11.Request):
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
        request = HttpRequest(
            event.method.decode("ascii", "replace"),
            event.target.decode("ascii", "replace"),
            headers,
            event,
        )
        if request.is_upgrade:
            answer = await router(request)
            if isinstance(answer, Upgrade):
                trailing, _ = conn.trailing_data
                return Handover(request, answer, bytes(trailing), deadline)
            await respond(answer)
            return  # never keep a refused upgrade's connection alive
        with trio.move_on_after(head_timeout) as body_scope:
            body = await _read_body(conn, stream, max_body)
        if body_scope.cancelled_caught:
            return
        if body is None:
            await respond(HttpResponse(413, b"request body too large\n"))
            return
        request = attrs.evolve(request, body=body)
        try:
            answer = await router(request)
        except h11.RemoteProtocolError as exc:  # pragma: no cover - defensive
            with trio.move_on_after(write_timeout):
                await _refuse_malformed(conn, stream, exc)
            return
        assert isinstance(answer, HttpResponse)
        if not await respond(answer, head_only=request.method == "HEAD"):
            return
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> bytes | None:
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            event = await _next_event(conn, stream)
        except h11.RemoteProtocolError:
            return None
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            parts.append(bytes(event.data))
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return b"".join(parts)


async def _refuse_malformed(
    conn: h11.Connection, stream: trio.abc.Stream, exc: h11.RemoteProtocolError
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
    body = f"malformed request: {exc}\n".encode()
    try:
        await send_response(
            conn, stream, HttpResponse(status, body, headers=(("connection", "close"),))
        )
    except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
