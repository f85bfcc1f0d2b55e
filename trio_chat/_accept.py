"""Accepting connections: each one counts from its TCP accept to its close.

:class:`Front` admits every accepted stream against the server-wide and the
per-IP connection limits (plain HTTP, keep-alive and WebSocket alike), keeps
the HTTP connections that wait for a request in :class:`IdleConnections`
(oldest idle first), and runs the accept loops.

When the process runs out of file descriptors (``EMFILE``/``ENFILE`` at
accept) the accept loop sheds load instead of retrying in a hot loop: it
closes the oldest quarter of the idle HTTP connections; if none is idle it
answers the next waiting client 503 through a descriptor kept in reserve
for this (on TLS: closes it unanswered, see :meth:`Front.refuse`); for
:data:`PRESSURE_SECONDS` after, plain HTTP requests are answered 503 and
their connections closed (WebSocket upgrades still pass).
One warning per ``log_interval`` says so, then a count; never a traceback.

Also here: who an accepted stream is from (:func:`peer_of`, :func:`local_of`)
and its TLS handshake (:func:`tls_context`, :func:`tls_handshake`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._config import Config
from ._logging import SampledLog
from ._ratelimit import IpLimiter, IpRefusal

__all__ = ["Front", "IdleConnections", "local_of", "peer_of", "tls_context", "tls_handshake"]

log = logging.getLogger("trio_chat.server")

#: accept() errors that mean "no descriptor or memory for one more socket".
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: After running out of descriptors, plain HTTP requests get 503 this long.
PRESSURE_SECONDS = 1.0
#: Connections refused over a limit wait at most this for their request
#: head before the refusal is written (so that closing does not reset the
#: connection and lose the answer) ...
REFUSAL_LINGER = 1.0
#: ... and at most this many at once wait so; more are closed at once.
MAX_LINGERING = 64
_REASONS = {429: b"Too Many Requests", 503: b"Service Unavailable"}


def refusal_bytes(status: int, reason: str) -> bytes:
    """A whole HTTP/1.1 response refusing a connection (it then closes);
    a client may try again after a second (``retry-after``)."""
    body = reason.encode("ascii", "replace") + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\nretry-after: 1\r\n"
        b"server: trio-chat\r\nx-content-type-options: nosniff\r\n\r\n%s"
        % (status, _REASONS.get(status, b""), len(body), body)
    )


def peer_of(transport: trio.abc.Stream) -> str:
    """The client's address of an accepted stream (``"memory"`` if no socket)."""
    sock = getattr(transport, "socket", None)
    if sock is None:
        return "memory"
    try:
        address = sock.getpeername()
    except OSError:
        return "?"
    return _address_name(address)


def _address_name(address: object) -> str:
    """The client's address as :func:`peer_of` says it, from a socket address."""
    return str(address[0]) if isinstance(address, tuple) else str(address or "local")


def local_of(transport: trio.abc.Stream) -> str | None:
    """The address the client reached (a listening address), if a socket."""
    sock = getattr(transport, "socket", None)
    try:
        address = sock.getsockname() if sock is not None else None
    except OSError:
        return None
    return address[0] if isinstance(address, tuple) else None


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context (``config.certfile``), or None for plain TCP."""
    if config.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.certfile, config.keyfile)
    return context


async def tls_handshake(stream: trio.SSLStream[trio.abc.Stream], deadline: float) -> bool:
    """Do *stream*'s TLS handshake by *deadline*; False if the client
    failed it or was too slow."""
    with trio.CancelScope(deadline=deadline):
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError:
            return False
        return True
    return False


class IdleConnections:
    """Cancel scopes of HTTP connections waiting for a request, oldest first.

    ``serve_http`` adds the scope of each wait and discards it when a
    request arrives.  :meth:`shed` cancels the oldest; :meth:`close` (at
    shutdown) cancels every one and every one added after.
    """

    def __init__(self) -> None:
        self._scopes: dict[trio.CancelScope, None] = {}  # insertion order: oldest first
        self.closed = False

    def __len__(self) -> int:
        return len(self._scopes)

    def __iter__(self) -> Iterator[trio.CancelScope]:
        return iter(list(self._scopes))

    def add(self, scope: trio.CancelScope) -> None:
        self._scopes[scope] = None
        if self.closed:
            scope.cancel()

    def discard(self, scope: trio.CancelScope) -> None:
        self._scopes.pop(scope, None)

    def shed(self, count: int) -> int:
        """End the *count* connections idle the longest; how many there were."""
        victims = list(self._scopes)[:count]
        for scope in victims:
            del self._scopes[scope]
            scope.cancel()
        return len(victims)

    def close(self) -> None:
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()


class Front:
    """Accept-time accounting and load shedding for one server.

    Args:
        max_connections: connections open at once, server-wide (more: 503).
        ip_limits: the per-IP limiter (more than its cap from one IP: 429).
        sampled: the server's sampled log (one line per kind per interval).
        tls: the listeners speak TLS: a refusal at accept is a bare close
            (see :meth:`refuse`).
    """

    def __init__(
        self, max_connections: int, ip_limits: IpLimiter, sampled: SampledLog, *, tls: bool = False
    ) -> None:
        self.max_connections = max_connections
        self.ip_limits = ip_limits
        self.sampled = sampled
        self.tls = tls
        self.idle = IdleConnections()
        #: connections admitted and not yet closed (HTTP and WebSocket)
        self.open = 0
        #: connections refused at accept, by HTTP status
        self.refused: dict[int, int] = {}
        #: accepts that failed for lack of descriptors
        self.exhausted = 0
        #: idle HTTP connections closed to free descriptors
        self.shed_idle = 0
        #: clients answered 503 (on TLS: closed) through the reserve descriptor
        self.shed_refused = 0
        #: plain HTTP requests answered 503 under descriptor pressure
        self.shed_requests = 0
        self._lingering = 0
        self._pressure_until = -math.inf
        self._released = trio.Event()
        self._reserve: int | None = None

    # ------------------------------------------------------------ accounting

    def admit(self, key: str) -> IpRefusal | None:
        """Count a new connection from client *key*, or say why not."""
        if self.open >= self.max_connections:
            return IpRefusal(503, "server at capacity")
        refusal = self.ip_limits.connect(key)
        if refusal is not None:
            return refusal
        self.open += 1
        return None

    def release(self, key: str) -> None:
        """An admitted connection has closed (its descriptor is free)."""
        self.open -= 1
        self.ip_limits.closed(key)
        self._released.set()

    def under_pressure(self) -> bool:
        """Whether descriptors ran out less than PRESSURE_SECONDS ago."""
        return trio.current_time() < self._pressure_until

    def shed_request(self) -> None:
        self.shed_requests += 1

    async def refuse(self, stream: trio.abc.Stream, refusal: IpRefusal, peer: str) -> None:
        """Count and log a connection over a limit, and answer it with
        *refusal* (the caller closes it).

        The request head is awaited for up to :data:`REFUSAL_LINGER`, by at
        most :data:`MAX_LINGERING` refusals at once; beyond those the
        connection is closed without an answer.  On TLS it returns at once,
        for a bare close: a plain answer means nothing to a TLS client (and
        must never be written where it expects TLS records), and a TLS
        handshake costs too much for a refusal.
        """
        status = refusal.status
        self.refused[status] = self.refused.get(status, 0) + 1
        if self.sampled.hit(f"connection refused {status}", trio.current_time()):
            log.info("connection refused peer=%s status=%d reason=%s", peer, status, refusal.reason)
        if self.tls or self._lingering >= MAX_LINGERING:
            return
        self._lingering += 1
        try:
            with trio.move_on_after(REFUSAL_LINGER):
                seen = b""
                while b"\r\n\r\n" not in seen:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    seen = seen[-3:] + chunk
                await stream.send_all(refusal_bytes(status, refusal.reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._lingering -= 1

    # ------------------------------------------------------------ accept loop

    def open_reserve(self) -> None:
        """Hold one spare descriptor, to answer 503 when they run out."""
        if self._reserve is None:
            try:
                self._reserve = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                self._reserve = None

    def close_reserve(self) -> None:
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    async def serve_listener(
        self,
        listener: trio.SocketListener,
        nursery: trio.Nursery,
        handler: Callable[[trio.SocketStream, str | None, str | None], Awaitable[None]],
    ) -> None:
        """Accept on *listener* until cancelled, each stream served by
        ``handler(stream, peer, local)`` in *nursery* (*peer*: the client's
        address, when ``accept`` told it; *local*: the address it reached,
        when the listener is bound to one; else None); closes the listener
        at the end.

        After each wait, up to :data:`ACCEPT_BATCH` more connections that
        are already waiting are taken at once (as asyncio does), so that a
        storm of connections does not overflow the kernel's accept queue
        while the loop waits its turn once per connection.
        """
        async with listener:
            local = _bound_address(listener)
            ready = _nonblocking_twin(listener)
            try:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno not in CAPACITY_ERRNOS:
                            raise
                        await self._exhausted(listener, exc)
                        continue
                    nursery.start_soon(handler, stream, None, local)
                    if ready is not None:
                        for stream, peer in _accept_waiting(ready):
                            nursery.start_soon(handler, stream, peer, local)
            finally:
                if ready is not None:
                    ready.detach()  # the listener's descriptor: it closes it

    async def _exhausted(self, listener: trio.SocketListener, exc: OSError) -> None:
        now = trio.current_time()
        self.exhausted += 1
        self._pressure_until = now + PRESSURE_SECONDS
        self._released = trio.Event()
        shed = self.idle.shed(max(1, len(self.idle) // 4))
        self.shed_idle += shed
        answered = 0 if shed else await self._answer_with_reserve(listener)
        if self.sampled.hit("load shed", now):
            log.warning(
                "out of file descriptors (%s) with %d connections open: closed %d idle HTTP "
                "connections, answered %d with 503; plain HTTP gets 503 for %g s",
                errno.errorcode.get(exc.errno or 0, exc.errno),
                self.open,
                shed,
                answered,
                PRESSURE_SECONDS,
            )
        if not answered:
            # Let the closed connections' handlers free their descriptors
            # (or, with nothing to close, do not spin on accept).
            with trio.move_on_after(0.1):
                await self._released.wait()

    async def _answer_with_reserve(self, listener: trio.SocketListener) -> int:
        """Accept one waiting client on the reserve descriptor and answer it
        503 at once (on TLS: close it unanswered); 1 if one was answered.

        trio's accept tries accept(2) before it first yields, so no other
        task can take the freed descriptor in between.
        """
        if self._reserve is None:
            return 0
        self.close_reserve()
        stream = None
        try:
            with trio.move_on_after(0.05):
                stream = await listener.accept()
        except OSError:
            stream = None
        finally:
            if stream is not None:
                answer = b"" if self.tls else refusal_bytes(503, "server overloaded")
                _answer_now(stream.socket, answer)
            self.open_reserve()
        if stream is None:
            return 0
        self.shed_refused += 1
        self.refused[503] = self.refused.get(503, 0) + 1
        return 1


#: Connections taken from the accept queue per wake of an accept loop.
ACCEPT_BATCH = 500


def _bound_address(listener: trio.SocketListener) -> str | None:
    """The one address every connection of *listener* reaches (what
    :func:`local_of` would say for each), or None when it listens on a
    wildcard address (each connection's own address must then be asked)."""
    try:
        address = listener.socket.getsockname()
        if ipaddress.ip_address(address[0]).is_unspecified:
            return None
    except (AttributeError, OSError, TypeError, ValueError, IndexError):
        return None
    return str(address[0])


def _nonblocking_twin(listener: trio.SocketListener) -> socket.socket | None:
    """A stdlib socket object on *listener*'s own descriptor (already
    non-blocking), to take waiting connections without yielding; the
    caller must ``detach()`` it, never close it.  None if that fails: the
    loop then accepts one per wake."""
    try:
        sock = listener.socket
        twin = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    except (AttributeError, OSError):
        return None
    try:
        twin.setblocking(False)
    except OSError:
        twin.detach()
        return None
    return twin


def _accept_waiting(twin: socket.socket) -> Iterator[tuple[trio.SocketStream, str]]:
    """The connections already waiting in the accept queue, at most
    ACCEPT_BATCH, each with its client's address; stops at the first error
    (the loop's own accept sees it again, and deals with running out of
    descriptors)."""
    for _ in range(ACCEPT_BATCH):
        try:
            raw, address = twin.accept()
        except OSError:
            return
        yield trio.SocketStream(trio.socket.from_stdlib_socket(raw)), _address_name(address)


def _answer_now(sock: trio.socket.SocketType, response: bytes) -> None:
    """Write *response* (if any) if the socket takes it at once, then close it.

    Whatever request already arrived is read first, so that the close is
    less likely to reset the connection and lose the answer.
    """
    try:
        fd = sock.fileno()
        try:
            os.read(fd, 65536)
        except BlockingIOError:
            pass
        if response:
            os.write(fd, response)
    except OSError:
        pass
    finally:
        sock.close()


class FrontMetrics:
    """The front's gauges and counters, for the server's registry."""

    def __init__(self, front: Front) -> None:
        self.front = front

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        front = self.front
        yield GaugeMetricFamily(
            "trio_chat_tcp_connections_open",
            "Connections open, from TCP accept to close (plain HTTP and WebSocket).",
            value=front.open,
        )
        yield GaugeMetricFamily(
            "trio_chat_http_idle_connections",
            "HTTP connections waiting for a request (keep-alive).",
            value=len(front.idle),
        )
        refused = CounterMetricFamily(
            "trio_chat_connections_refused",
            "Connections refused at accept, by HTTP status.",
            labels=["status"],
        )
        for status, n in sorted(front.refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        yield CounterMetricFamily(
            "trio_chat_accept_exhausted",
            "Accepts that failed for lack of file descriptors.",
            value=front.exhausted,
        )
        shed = CounterMetricFamily(
            "trio_chat_load_shed",
            "Load shed while out of file descriptors, by action.",
            labels=["action"],
        )
        shed.add_metric(["idle_closed"], front.shed_idle)
        shed.add_metric(["refused_503"], front.shed_refused)
        shed.add_metric(["request_503"], front.shed_requests)
        yield shed
