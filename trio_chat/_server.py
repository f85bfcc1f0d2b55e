"""The server: listeners, connections from accept to close, the drain.

:class:`ChatServer` is what both the ``trio-chat`` command and embedders use::

    server = ChatServer(Config(port=0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        ...
        await server.shutdown()

It accepts connections (TLS, the per-IP and server-wide limits), hands their
HTTP requests to the application (:mod:`trio_chat._app`: routes, the upgrade
policy), serves each accepted WebSocket in its own nursery, and drains them
all on :meth:`ChatServer.shutdown`.  :func:`build_server` assembles the
server a :class:`Config` describes, as ``trio-chat serve`` runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from ._accept import Front, FrontMetrics, local_of, peer_of, tls_context, tls_handshake
from ._app import HttpApp
from ._auth import AnonymousAuthenticator, Authenticator, Identity, TokenAuthenticator
from ._config import Config
from ._connection import Connection
from ._embed import EmbeddingApi
from ._handlers import ChatHandler, EchoHandler, welcome_frame
from ._handshake import Accepted, response_bytes
from ._http import serve_http
from ._hub import Hub
from ._logging import SampledLog
from ._metrics import Metrics
from ._moderator import ModerationApi
from ._policy import Policy, Screen
from ._queue import OutboundBudget
from ._ratelimit import IpLimiter, client_key
from ._store import build_hub, hub_state
from ._stream import WireStream

__all__ = ["ChatServer", "build_server"]

log = logging.getLogger("trio_chat.server")

#: How a connection ends when its peer goes away mid-way.
_CONNECTION_ENDED = (trio.BrokenResourceError, trio.ClosedResourceError)


class ChatServer(EmbeddingApi, ModerationApi):
    """A trio_chat server, standalone or embedded in a trio program.

    Args:
        config: the settings (:class:`Config`).
        authenticator: decides who may connect; default: JWTs when
            ``config.secret`` is set, else anonymous names.
        echo: serve the plain echo endpoint on ``/ws`` instead of chat.
        hub: a hub to use instead of the one *config* describes (the
            memory store, the SQLite store in ``config.data_dir``, or the
            Redis backplane with ``config.redis_url``).
        policy: consulted about every chat, direct message, join and
            presence change before it reaches the hub (:class:`Policy`).

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
        policy: Policy | None = None,
    ) -> None:
        self.config = config = config if config is not None else Config()
        if authenticator is None:
            authenticator = (
                TokenAuthenticator(config.secret, config.max_token_lifetime)
                if config.secret
                else AnonymousAuthenticator(
                    max_names=config.anonymous_names, hold=config.anonymous_name_hold
                )
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
        self._front = Front(config.max_connections, self._ip_limits, self._sampled, tls=config.tls)
        self.metrics.registry.register(FrontMetrics(self._front))
        self._connections: set[Connection] = set()
        self._app = HttpApp(
            self,
            front=self._front,
            ip_limits=self._ip_limits,
            sampled=self._sampled,
            connection_count=lambda: len(self._connections),
        )
        self._upgrading = 0
        self._handshake_scopes: set[trio.CancelScope] = set()
        self._accept_scope: trio.CancelScope | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._ssl_context = tls_context(config)
        #: Mutes and the message policy, in front of the hub.
        self.screen = Screen(policy, config.hook_timeout, config.max_content_chars)
        self._init_embedding()
        self._init_moderation()
        #: Checks for ``/healthz``: () -> (healthy, detail); the hub's first.
        self.health_checks: list[Callable[[], tuple[bool, dict[str, Any]]]] = [self.hub.health]

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
                await self._start_moderation(root)
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
            for scope in list(self._front.idle) + list(self._handshake_scopes):
                scope.cancel()
            for conn in list(self._connections):
                conn.drain(1001, "server shutting down")
            self._close_embedding("server shutting down")
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
            self._front.idle.close()

    # ------------------------------------------------------------ connections

    def serve_stream(self, transport: trio.abc.Stream, peer: str = "memory") -> None:
        """Serve an already connected stream beside the listeners' connections.

        Only while :meth:`serve` runs; the stream is answered like an accepted
        TCP connection (during a drain: upgrades refused with 503) and
        :meth:`shutdown` drains and closes it with the others.
        """
        if self._conn_nursery is None or self._stopped.is_set():
            raise RuntimeError("the server is not serving")
        self._conn_nursery.start_soon(self.handle_stream, transport, peer)

    async def handle_stream(
        self, transport: trio.abc.Stream, peer: str | None = None, local: str | None = None
    ) -> None:
        """Serve one connected stream (TCP, TLS or in-memory) to its end.

        *peer* names the client (its IP, for per-IP limits and logs); by
        default it is read from the socket, or ``"memory"``.  *local* is the
        address the client reached; by default it is read from the socket
        (None for an in-memory stream).  The stream
        counts against the server-wide and per-IP connection limits until it
        closes; over one, it is answered 503 or 429 and closed (on TLS:
        closed unanswered, before any TLS byte).
        """
        if peer is None:
            peer = peer_of(transport)
        if local is None:
            local = local_of(transport)
        key = client_key(peer)
        refusal = self._front.admit(key)
        if refusal is not None:
            try:
                await self._front.refuse(transport, refusal, peer)
            finally:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
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
        stream: WireStream | None = None
        try:
            if self._ssl_context is not None:
                transport = trio.SSLStream(transport, self._ssl_context, server_side=True)
                if not await tls_handshake(transport, deadline):
                    return
            handover = await serve_http(
                transport,
                lambda request: self._app.answer(request, peer, local),
                head_timeout=self.config.handshake_timeout,
                idle_timeout=self.config.http_idle_timeout,
                max_body=self.config.max_message_bytes,
                idle_scopes=self._front.idle,
                first_deadline=deadline,
                write_timeout=self.config.write_timeout,
            )
            if handover is not None:
                (identity, accepted), prefix = handover.upgrade.context, handover.prefix
                deadline = handover.deadline
                del handover  # the parsed request is not kept for the WebSocket's life
                stream = WireStream(transport)
                await self._serve_websocket(
                    identity, accepted, prefix, stream, deadline=deadline, peer=peer
                )
        except* _CONNECTION_ENDED as group:
            log.debug("connection from %s ended: %r", peer, group.exceptions)
        except* Exception:
            # Whatever goes wrong with one connection ends that connection,
            # never the server.
            log.exception("unexpected error serving a connection from %s", peer)
        finally:
            if stream is None or not stream.closed:  # (else the WebSocket closed it)
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 1):
                    await transport.aclose()

    async def _serve_websocket(
        self,
        identity: Identity,
        accepted: Accepted,
        prefix: bytes,
        stream: WireStream,
        *,
        deadline: float,
        peer: str,
    ) -> None:
        """Answer 101 (within the handshake deadline), then serve the WebSocket.

        *prefix* holds what the client sent after its request head (frames
        it did not wait to send): the connection's reader takes it first.
        """
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
            head = response_bytes(accepted)
            # The welcome frame goes out with the 101, in the same write, when
            # the kernel takes them at once (else it is queued, as usual).
            welcome = (
                b"" if self.echo else welcome_frame(conn.session_id, identity.user_id, self.config)
            )
            try:
                # Usually the kernel takes the 101 at once: nothing to wait for.
                written = stream.send_nowait(head + welcome)
                answered = written and not stream.has_tail
            except _CONNECTION_ENDED:
                written = True
            if not written:
                welcome = b""  # (to queue once the connection runs)
            if not written or stream.has_tail:
                with trio.CancelScope(deadline=deadline) as scope:
                    conn.handshake_scope = scope
                    self._handshake_scopes.add(scope)
                    try:
                        await stream.send_all(b"" if written else head)
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
                await self._run_connection(conn, identity, nursery, welcomed=bool(welcome))
                if nursery.child_tasks:
                    nursery.cancel_scope.cancel()
        finally:
            if upgrading:
                self._upgrading -= 1
            self._stop_accepting_if_drained()

    async def _run_connection(
        self, conn: Connection, identity: Identity, nursery: trio.Nursery, *, welcomed: bool
    ) -> None:
        self._connections.add(conn)
        log.info("connect user=%s peer=%s session=%s", identity.user_id, conn.peer, conn.session_id)
        try:
            if self.echo:
                await conn.run(EchoHandler(conn), nursery)
                return
            if not welcomed:
                conn.send(welcome_frame(conn.session_id, identity.user_id, self.config))
            await self.hub.connect(conn.outlet, identity.user_id, self._client_of(identity, conn))
            try:
                await conn.run(
                    ChatHandler(
                        conn,
                        self.hub,
                        identity,
                        self.metrics,
                        screen=self.screen,
                        commands=self.commands,
                    ),
                    nursery,
                )
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


def build_server(config: Config, *, echo: bool = False) -> ChatServer:
    """The server *config* describes, as ``trio-chat serve`` runs it.

    The one assembly of the command and of each of its ``--workers``: the
    hub from ``config`` (its store opened and loaded; with
    ``config.redis_url`` the Redis backplane).  *echo* serves the plain echo
    endpoint instead of chat (never shared through Redis).

    Raises:
        StoreError: the SQLite store cannot be opened or read.
        ConfigError: the Redis URL cannot work (or coredis is missing).
    """
    return ChatServer(config, echo=echo)
