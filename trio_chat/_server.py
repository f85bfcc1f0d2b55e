"""The server: listeners, the HTTP front, WebSocket connections, shutdown.

:class:`ChatServer` is what both the ``trio-chat`` command and embedders use::

    server = ChatServer(Config(port=0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        ...
        await server.shutdown()
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import json
import logging
import mimetypes
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from ._accept import Front, FrontMetrics
from ._auth import (
    AnonymousAuthenticator,
    Authenticator,
    HandshakeRequest,
    Identity,
    Rejection,
    TokenAuthenticator,
)
from ._config import Config
from ._connection import ChatHandler, Connection, EchoHandler, welcome_frame
from ._handshake import Accepted, check_upgrade, response_bytes
from ._http import (
    PAGE_POLICY,
    STRICT_POLICY,
    HttpRequest,
    HttpResponse,
    Upgrade,
    json_response,
    serve_http,
)
from ._hub import Hub
from ._hub_state import HubStats
from ._logging import SampledLog, clip
from ._metrics import CONTENT_TYPE, Metrics
from ._protocol import (
    ChatAck,
    DirectAck,
    ProtocolError,
    is_valid_room,
    is_valid_user_id,
)
from ._queue import OutboundBudget
from ._ratelimit import IpLimiter, client_key
from ._store import build_hub, hub_state
from ._stream import WireStream

__all__ = ["ChatServer", "ServerStats"]

log = logging.getLogger("trio_chat.server")

#: How a connection ends when its peer goes away mid-way.
_CONNECTION_ENDED = (trio.BrokenResourceError, trio.ClosedResourceError)
_API_ROOM = re.compile(r"^/api/rooms/([^/]+)/messages$")
_FALLBACK_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>trio-chat</title></head>
<body><h1>trio-chat</h1><p>A WebSocket chat server. Connect to <code>/ws</code>.</p></body></html>
"""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*text* as an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@attrs.frozen
class ServerStats:
    """A read-only snapshot of a running server."""

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


class ChatServer:
    """A trio_chat server, standalone or embedded in a trio program.

    Args:
        config: the settings (:class:`Config`).
        authenticator: decides who may connect; default: JWTs when
            ``config.secret`` is set, else anonymous names.
        echo: serve the plain echo endpoint on ``/ws`` instead of chat.
        hub: a hub to use instead of the one *config* describes (the
            memory store, or the SQLite store in ``config.data_dir``; the
            Redis backplane provides its own).

    Raises:
        StoreError: the SQLite store cannot be opened or read.

    ``await nursery.start(server.serve)`` starts it and returns the bound port
    once it is listening; :meth:`shutdown` drains it gracefully.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        authenticator: Authenticator | None = None,
        echo: bool = False,
        hub: Hub | None = None,
    ) -> None:
        self.config = config = config if config is not None else Config()
        if authenticator is None:
            authenticator = (
                TokenAuthenticator(config.secret, config.max_token_lifetime)
                if config.secret
                else AnonymousAuthenticator()
            )
        self.authenticator = authenticator
        self.echo = echo
        if hub is None:
            # The store (``config.store``/``data_dir``) is opened and loaded here;
            # a bad database raises StoreError.
            hub = Hub(hub_state(config)) if echo else build_hub(config)
        self.hub = hub
        self.hub.counters.outbound = OutboundBudget(config.queue_bytes, config.queue_bytes_total)
        self.metrics = Metrics(self.hub, lambda: len(self._connections))
        self.port: int | None = None
        self.draining = False
        self.started_at = time.monotonic()
        self._ip_limits = IpLimiter(config.max_connections_per_ip, config.max_handshakes_per_ip)
        self._sampled = SampledLog(config.log_interval)
        self._front = Front(config.max_connections, self._ip_limits, self._sampled)
        self.metrics.registry.register(FrontMetrics(self._front))
        self._connections: set[Connection] = set()
        self._upgrading = 0
        self._idle_scopes = self._front.idle
        self._handshake_scopes: set[trio.CancelScope] = set()
        self._accept_scope: trio.CancelScope | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._ssl_context: ssl.SSLContext | None = None
        if config.certfile is not None:
            self._ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl_context.load_cert_chain(config.certfile, config.keyfile)
        #: Extra checks a backplane may register: () -> (healthy, detail).
        self.health_checks: list[Callable[[], tuple[bool, dict[str, Any]]]] = []

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.tls else "ws"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}/ws"

    async def serve(
        self,
        *,
        listeners: list[trio.SocketListener] | None = None,
        task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until :meth:`shutdown` (or cancellation).

        Calls ``task_status.started(port)`` once listening.  *listeners* may
        be given (e.g. a shared ``SO_REUSEPORT`` socket); by default it opens
        ``config.host:config.port``.  An empty list listens nowhere (the port
        is None): streams come only through :meth:`serve_stream`, as in
        tests over in-memory streams.
        """
        try:
            async with trio.open_nursery() as root:
                await root.start(self.hub.run)
                root.start_soon(self._summarize_logs)
                if listeners is None:
                    listeners = await trio.open_tcp_listeners(
                        self.config.port, host=self.config.host
                    )
                self.port = listeners[0].socket.getsockname()[1] if listeners else None
                self._front.open_reserve()
                async with trio.open_nursery() as connections:
                    self._conn_nursery = connections
                    with trio.CancelScope() as self._accept_scope:
                        task_status.started(self.port)
                        if not listeners:
                            await trio.sleep_forever()
                        async with trio.open_nursery() as accepting:
                            for listener in listeners:
                                accepting.start_soon(
                                    self._front.serve_listener,
                                    listener,
                                    connections,
                                    self.handle_stream,
                                )
                root.cancel_scope.cancel()
        finally:
            self._front.close_reserve()
            self._summarize(every=True)
            self._stopped.set()

    async def _summarize_logs(self) -> None:
        while True:
            await trio.sleep(self.config.log_interval)
            self._summarize()

    def _summarize(self, *, every: bool = False) -> None:
        """One line per kind of event logged only in part in the last interval."""
        for kind, count in self._sampled.due(trio.current_time(), every=every):
            log.info(
                "%s: %d more in the last %g s (not logged one by one)",
                kind,
                count,
                self.config.log_interval,
            )

    async def shutdown(self) -> None:
        """Drain gracefully, then return once the server has stopped.

        Stops accepting WebSockets (new upgrades get HTTP 503), lets each
        connection's writer flush what is queued, closes every WebSocket with
        1001 and waits at most ``config.shutdown_grace`` seconds before
        cancelling what is left.  Until the last WebSocket is gone the port
        still answers plain HTTP, each response closing its connection, so
        that ``/healthz`` can tell load balancers (503, ``"draining"``); then
        the listeners close.
        """
        if not self.draining:
            self.draining = True
            log.info("shutting down: draining %d connections", len(self._connections))
            if self._conn_nursery is not None:
                self._conn_nursery.cancel_scope.deadline = (
                    trio.current_time() + self.config.shutdown_grace
                )
            for scope in list(self._idle_scopes) + list(self._handshake_scopes):
                scope.cancel()
            for conn in list(self._connections):
                conn.drain(1001, "server shutting down")
            self._stop_accepting_if_drained()
        await self._stopped.wait()

    def _stop_accepting_if_drained(self) -> None:
        """During a shutdown, once no WebSocket is left: close the listeners
        and end idle plain-HTTP connections."""
        if self.draining and not self._connections and not self._upgrading:
            if self._accept_scope is not None:
                self._accept_scope.cancel()
            # Also those of connections accepted just before the listeners
            # closed, whose handlers have not started waiting yet.
            self._idle_scopes.close()

    # ------------------------------------------------------------ embedding

    async def publish(
        self, room: str, content: str, *, user_id: str = "server", ref: str | None = None
    ) -> ChatAck:
        """Publish *content* into *room* as *user_id*, like a client's chat.

        The message gets the room's next id, enters its history and reaches
        every member.  Raises :class:`ProtocolError` for a bad room or content.
        """
        self._check_message(room=room, content=content, user_id=user_id)
        return await self.hub.publish(room, content, user_id=user_id, ref=ref)

    async def send_direct(
        self, to: str, content: str, *, user_id: str = "server", ref: str | None = None
    ) -> DirectAck:
        """Send a direct message to every connection of *to*, as *user_id*.

        Raises :class:`ProtocolError` (404) when *to* is not connected.
        """
        self._check_message(content=content, user_id=user_id)
        if not is_valid_user_id(to):
            raise ProtocolError(400, "to: not a valid user id")
        return await self.hub.direct(to, content, user_id=user_id, ref=ref)

    def stats(self) -> ServerStats:
        """Counts of connections, rooms, messages and drops, right now."""
        hub: HubStats = self.hub.stats()
        counters = self.hub.counters
        return ServerStats(
            connections=len(self._connections),
            users=hub.users,
            rooms=hub.rooms,
            messages=hub.messages,
            history=hub.history,
            frames_received=counters.frames_received,
            frames_delivered=counters.frames_delivered,
            slow_consumer_drops=counters.slow_consumers,
            ephemeral_dropped=counters.ephemeral_dropped,
            rate_limited=self.metrics.rate_limited,
        )

    def connections(self, user_id: str | None = None) -> list[ConnectionInfo]:
        """The open WebSocket connections (of *user_id* only, if given)."""
        now = time.monotonic()
        return [
            ConnectionInfo(conn.session_id, conn.user_id, conn.peer, now - conn.started)
            for conn in self._connections
            if user_id is None or conn.user_id == user_id
        ]

    def close_connection(
        self, session_id: str, code: int | None = 1000, reason: str = "", *, drain: bool = False
    ) -> bool:
        """Close one connection by its session id; False if it is not open.

        With a *code*, what is queued for it is dropped and it gets a close
        frame with *code* and *reason*; with ``code=None`` its transport is
        aborted (no close frame); with *drain*, what is queued is written
        first, then it is closed with *code* (1001 by default).
        """
        for conn in self._connections:
            if conn.session_id == session_id:
                if drain:
                    conn.drain(1001 if code is None else code, reason or "closed by the server")
                else:
                    conn.close(code, reason or "closed by the server")
                return True
        return False

    def _check_message(self, *, content: str, user_id: str, room: str | None = None) -> None:
        if room is not None and not is_valid_room(room):
            raise ProtocolError(400, "room: not a valid room name")
        if not is_valid_user_id(user_id):
            raise ProtocolError(400, "user_id: not a valid user id")
        if not isinstance(content, str) or not content:
            raise ProtocolError(400, "content: must be a non-empty string")
        if len(content) > self.config.max_content_chars:
            raise ProtocolError(
                413, f"content: longer than {self.config.max_content_chars} characters"
            )

    # ------------------------------------------------------------ connections

    @staticmethod
    def _peer_of(transport: trio.abc.Stream) -> str:
        sock = getattr(transport, "socket", None)
        if sock is None:
            return "memory"
        try:
            address = sock.getpeername()
        except OSError:
            return "?"
        return address[0] if isinstance(address, tuple) else str(address or "local")

    @staticmethod
    def _local_of(transport: trio.abc.Stream) -> str | None:
        """The address the client reached (a listening address), if a socket."""
        sock = getattr(transport, "socket", None)
        try:
            address = sock.getsockname() if sock is not None else None
        except OSError:
            return None
        return address[0] if isinstance(address, tuple) else None

    def serve_stream(self, transport: trio.abc.Stream, peer: str = "memory") -> None:
        """Serve an already connected stream beside the listeners' connections.

        Only while :meth:`serve` runs; the stream is answered like an accepted
        TCP connection (during a drain: upgrades refused with 503) and
        :meth:`shutdown` drains and closes it with the others.
        """
        if self._conn_nursery is None or self._stopped.is_set():
            raise RuntimeError("the server is not serving")
        self._conn_nursery.start_soon(self.handle_stream, transport, peer)

    async def handle_stream(self, transport: trio.abc.Stream, peer: str | None = None) -> None:
        """Serve one connected stream (TCP, TLS or in-memory) to its end.

        *peer* names the client (its IP, for per-IP limits and logs); by
        default it is read from the socket, or ``"memory"``.  The stream
        counts against the server-wide and per-IP connection limits until it
        closes; over one, it is answered 503 or 429 and closed.
        """
        if peer is None:
            peer = self._peer_of(transport)
        local = self._local_of(transport)
        key = client_key(peer)
        refusal = self._front.admit(key)
        if refusal is not None:
            try:
                if self._ssl_context is None:
                    await self._front.refuse(transport, refusal, peer)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await transport.aclose()
            return
        try:
            await self._handle_admitted(transport, peer, local)
        finally:
            self._front.release(key)

    async def _handle_admitted(
        self, transport: trio.abc.Stream, peer: str, local: str | None
    ) -> None:
        # One budget for TLS, the request head and the WebSocket handshake.
        deadline = trio.current_time() + self.config.handshake_timeout
        try:
            if self._ssl_context is not None:
                transport = trio.SSLStream(transport, self._ssl_context, server_side=True)
                with trio.CancelScope(deadline=deadline) as scope:
                    try:
                        await transport.do_handshake()
                    except trio.BrokenResourceError:
                        return
                if scope.cancelled_caught:
                    return
            handover = await serve_http(
                transport,
                lambda request: self._answer(request, peer, local),
                head_timeout=self.config.handshake_timeout,
                idle_timeout=self.config.http_idle_timeout,
                max_body=self.config.max_message_bytes,
                idle_scopes=self._idle_scopes,
                first_deadline=deadline,
                write_timeout=self.config.write_timeout,
            )
            if handover is not None:
                (identity, accepted), prefix = handover.upgrade.context, handover.prefix
                deadline = handover.deadline
                del handover  # the parsed request is not kept for the WebSocket's life
                await self._serve_websocket(
                    identity, accepted, prefix, transport, deadline=deadline, peer=peer
                )
        except* _CONNECTION_ENDED as group:
            log.debug("connection from %s ended: %r", peer, group.exceptions)
        except* Exception:
            # Whatever goes wrong with one connection ends that connection,
            # never the server.
            log.exception("unexpected error serving a connection from %s", peer)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await transport.aclose()

    async def _serve_websocket(
        self,
        identity: Identity,
        accepted: Accepted,
        prefix: bytes,
        transport: trio.abc.Stream,
        *,
        deadline: float,
        peer: str,
    ) -> None:
        """Answer 101 (within the handshake deadline), then serve the WebSocket.

        *prefix* holds what the client sent after its request head (frames
        it did not wait to send): the connection's reader takes it first.
        """
        stream = WireStream(transport)
        conn = Connection(
            stream,
            self.config,
            self.hub.counters,
            user_id=identity.user_id,
            peer=peer,
            deflate=accepted.deflate,
            prefix=prefix,
        )
        del prefix
        self._upgrading += 1
        upgrading = True
        try:
            answered = False
            with trio.CancelScope(deadline=deadline) as scope:
                conn.handshake_scope = scope
                self._handshake_scopes.add(scope)
                try:
                    await stream.send_all(response_bytes(accepted))
                    answered = True
                except _CONNECTION_ENDED:
                    pass
                finally:
                    conn.handshake_scope = None
                    self._handshake_scopes.discard(scope)
            if not answered or self.draining:
                if not answered:
                    log.info("handshake with %s not completed", peer)
                return
            del accepted
            self._upgrading -= 1
            upgrading = False
            self.metrics.handshakes_accepted += 1
            async with trio.open_nursery() as nursery:
                await self._run_connection(conn, identity, nursery)
                nursery.cancel_scope.cancel()
        finally:
            if upgrading:
                self._upgrading -= 1
            self._stop_accepting_if_drained()

    async def _run_connection(
        self, conn: Connection, identity: Identity, nursery: trio.Nursery
    ) -> None:
        self._connections.add(conn)
        log.info("connect user=%s peer=%s session=%s", identity.user_id, conn.peer, conn.session_id)
        try:
            if self.echo:
                await conn.run(EchoHandler(conn), nursery)
                return
            conn.send(welcome_frame(conn.session_id, identity.user_id, self.config))
            await self.hub.connect(conn.outlet, identity.user_id, self._client_of(identity, conn))
            try:
                await conn.run(ChatHandler(conn, self.hub, identity, self.metrics), nursery)
            finally:
                self.hub.depart(conn.outlet)
        finally:
            self._connections.discard(conn)
            self._stop_accepting_if_drained()
            conn.outlet.release()
            # What really happened: the close frame that began the closing
            # handshake (sent or received), or an abort.
            first = conn.ws.first_close
            by = None if first is None else "client" if first.by_client else "server"
            self.metrics.connection_closed(None if first is None else first.code, by)
            log.info(
                "disconnect user=%s peer=%s session=%s duration=%.1fs code=%s by=%s reason=%s",
                identity.user_id,
                conn.peer,
                conn.session_id,
                time.monotonic() - conn.started,
                "abort" if first is None else first.code,
                by or "-",
                conn.outlet.close_reason or "-",
            )

    def _client_of(self, identity: Identity, conn: Connection) -> str:
        """Who a connection's room quota belongs to: its user when users are
        authenticated, else its IP (an IPv6 /64)."""
        if isinstance(self.authenticator, AnonymousAuthenticator):
            return "ip:" + client_key(conn.peer)
        return "user:" + identity.user_id

    # ------------------------------------------------------------ HTTP routes

    async def _answer(
        self, request: HttpRequest, peer: str, local: str | None = None
    ) -> HttpResponse | Upgrade:
        pressure = not request.is_upgrade and self._front.under_pressure()
        if pressure and request.path != "/metrics":
            # Out of descriptors a moment ago: plain HTTP waits, WebSockets
            # pass, and /metrics still answers (then closes) for operators.
            self._front.shed_request()
            return HttpResponse(
                503, b"server overloaded\n", headers=(("connection", "close"), ("retry-after", "1"))
            )
        answer = await self._route(request, peer, local)
        if (self.draining or pressure) and isinstance(answer, HttpResponse):
            # No keep-alive while draining (the listeners are about to
            # close) or short of descriptors.
            answer = attrs.evolve(answer, headers=(*answer.headers, ("connection", "close")))
        return answer

    async def _route(
        self, request: HttpRequest, peer: str, local: str | None = None
    ) -> HttpResponse | Upgrade:
        path = request.path
        if path == "/ws":
            if request.method != "GET":
                return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET"),))
            if not request.is_upgrade:
                return HttpResponse(
                    426, b"this endpoint speaks WebSocket\n", headers=(("upgrade", "websocket"),)
                )
            return self._check_upgrade(request, peer, local)
        if request.method not in ("GET", "HEAD") and (
            path in ("/", "/healthz", "/metrics", "/trio-chat.js") or path.startswith("/static/")
        ):
            return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET, HEAD"),))
        if path == "/healthz":
            return self._healthz()
        if path == "/metrics":
            return HttpResponse(200, self.metrics.render(), CONTENT_TYPE)
        if path == "/":
            return self._static("index.html") or HttpResponse(
                200, _FALLBACK_PAGE, "text/html; charset=utf-8", policy=PAGE_POLICY
            )
        if path == "/trio-chat.js":
            return self._static("trio-chat.js") or HttpResponse(404, b"not found\n")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :]) or HttpResponse(404, b"not found\n")
        if path.startswith("/api/"):
            return await self._api(request, peer)
        return HttpResponse(404, b"not found\n")

    def _refuse(
        self,
        status: int,
        reason: str,
        peer: str,
        public: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> HttpResponse:
        """Refuse a handshake: counted, logged (in full once per status per
        interval, then counted), answered with *public* (default: *reason*,
        clipped), never the client's own header values in full."""
        self.metrics.handshake_refused(status)
        if self._sampled.hit(f"handshake refused {status}", trio.current_time()):
            log.info("handshake refused peer=%s status=%d reason=%s", peer, status, reason)
        body = clip(reason, 120) if public is None else public
        return HttpResponse(status, body.encode("utf-8", "replace") + b"\n", headers=headers)

    def _check_upgrade(
        self, request: HttpRequest, peer: str, local: str | None = None
    ) -> HttpResponse | Upgrade:
        headers = request.headers
        if self.draining:
            return self._refuse(503, "server shutting down", peer)
        accepted = check_upgrade(
            request.raw.http_version,
            request.raw.headers,
            deflate=self.config.permessage_deflate == "on",
        )
        if not isinstance(accepted, Accepted):
            return self._refuse(accepted.status, accepted.reason, peer, headers=accepted.headers)
        # The per-IP rate first: every later check costs more than counting.
        refusal = self._ip_limits.handshake(client_key(peer), trio.current_time())
        if refusal is not None:
            return self._refuse(refusal.status, refusal.reason, peer)
        if not self._origin_allowed(headers, local):
            origin = clip(headers.get("origin", ""), 100)
            host = clip(headers.get("host", ""), 100)
            return self._refuse(
                403, f"origin {origin!r} not allowed for host {host!r}", peer, "origin not allowed"
            )
        if self.echo:
            identity = Identity("echo")
        else:
            try:
                identity = self.authenticator(
                    HandshakeRequest.from_target(request.target, headers, peer)
                )
            except Rejection as rejection:
                return self._refuse(rejection.status, rejection.reason, peer)
        return Upgrade((identity, accepted))

    def _origin_allowed(self, headers: dict[str, str], local: str | None = None) -> bool:
        """The Origin rule: no Origin (not a browser), an allowed origin, or
        by default the same host, which must also name this server (its
        listening address, ``localhost`` on loopback, or a public name), so
        that a rebound DNS name (``evil.example`` resolving to us) does not
        pass as "same host"."""
        origin = headers.get("origin")
        if origin is None:
            return True
        # Scheme and host compare without regard to case (RFC 6454).
        origin = origin.rstrip("/").lower()
        allowed = self.config.allowed_origins
        if allowed:
            return "*" in allowed or origin in {o.rstrip("/").lower() for o in allowed}
        scheme, _, host = origin.partition("://")
        if scheme not in ("http", "https") or host != headers.get("host", "").lower():
            return False
        return self._names_this_server(host, local)

    def _names_this_server(self, host: str, local: str | None) -> bool:
        """Whether the Host value *host* (lowercased) names this server."""
        if host.startswith("["):
            name = host[1:].partition("]")[0]
        else:
            name = host.rpartition(":")[0] if host.count(":") == 1 else host
        if name in {n.lower() for n in self.config.public_names}:
            return True
        address = _ip(name)
        if local is None:  # an in-memory stream: the configured address
            return name == "localhost" or (address is not None and address == _ip(self.config.host))
        here = _ip(local)
        if here is None:
            return False
        if name == "localhost":
            return here.is_loopback
        return address is not None and address == here

    def _healthz(self) -> HttpResponse:
        body: dict[str, Any] = {
            "status": "draining" if self.draining else "ok",
            "connections": len(self._connections),
            "uptime_seconds": round(time.monotonic() - self.started_at, 3),
        }
        if self.config.healthz_version:
            from . import __version__

            body["version"] = __version__
        healthy = not self.draining
        for check in self.health_checks:
            ok, detail = check()
            body.update(detail)
            if not ok and healthy:
                body["status"] = "degraded"
        if not self.config.healthz_node:
            # The node id names the host and the process: not for anyone who asks.
            body.pop("node", None)
        return json_response(200 if healthy else 503, body)

    def _static(self, name: str) -> HttpResponse | None:
        if not name or "/" in name or name.startswith("."):
            return None
        resource = importlib.resources.files("trio_chat") / "static" / name
        try:
            data = resource.read_bytes()
        except (FileNotFoundError, IsADirectoryError, OSError):
            return None
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            kind = "text/javascript"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        policy = PAGE_POLICY if kind.startswith("text/html") else STRICT_POLICY
        return HttpResponse(200, data, kind, (("cache-control", "no-cache"),), policy)

    # ------------------------------------------------------------ HTTP API

    async def _api(self, request: HttpRequest, peer: str = "memory") -> HttpResponse:
        match = _API_ROOM.match(request.path)
        if request.path == "/api/rooms":
            if request.method != "GET":
                return HttpResponse(405, b"method not allowed\n", headers=(("allow", "GET"),))
        elif match is None:
            return json_response(404, {"error": "not found"})
        elif request.method != "POST":
            return HttpResponse(405, b"method not allowed\n", headers=(("allow", "POST"),))
        admin = self._api_auth(request)
        if isinstance(admin, HttpResponse):
            return admin
        if match is None:
            rooms = []
            state = self.hub.state
            for name in state.room_names():
                if admin.may_join(name):
                    rooms.append(
                        {
                            "name": name,
                            "members": len(state.members(name)),
                            "last_id": state.last_id(name),
                        }
                    )
            return json_response(200, {"rooms": rooms})
        room = match.group(1)
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            return json_response(415, {"error": "Content-Type must be application/json"})
        if not admin.may_join(room):
            return json_response(403, {"error": "this token may not publish to that room"})
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            return json_response(400, {"error": "body must be JSON"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "body must be a JSON object"})
        content, user_id = body.get("content"), body.get("user_id", "server")
        if not isinstance(user_id, str) or not isinstance(content, str):
            return json_response(400, {"error": "content and user_id must be strings"})
        try:
            self._check_message(room=room, content=content, user_id=user_id)
            ack = await self.hub.publish(room, content, user_id=user_id, create=False)
        except ProtocolError as err:
            return json_response(err.code, {"error": err.message})
        log.info(
            "api publish room=%s id=%d user=%s by=%s peer=%s chars=%d",
            room,
            ack.id,
            user_id,
            admin.user_id,
            peer,
            len(content),
        )
        return json_response(201, {"id": ack.id, "time": ack.time})

    def _api_auth(self, request: HttpRequest) -> Identity | HttpResponse:
        """The admin identity of the request's ``Authorization: Bearer``
        token (never one from the query string), or the refusal."""
        if not self.config.secret:
            return json_response(401, {"error": "the HTTP API needs the server to have a secret"})
        if not self._origin_allowed(request.headers):
            return json_response(403, {"error": "origin not allowed"})
        handshake = HandshakeRequest.from_target(request.target, request.headers, "")
        token = handshake.bearer_token(query=False)
        if token is None:
            return json_response(401, {"error": "missing Authorization: Bearer token"})
        try:
            identity = TokenAuthenticator(
                self.config.secret, self.config.max_token_lifetime
            ).verify(token)
        except Rejection as rejection:
            return json_response(401, {"error": rejection.reason})
        if not identity.admin:
            return json_response(403, {"error": "token is not an admin token"})
        return identity
