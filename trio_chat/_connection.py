"""One accepted WebSocket: a reader, a writer (when needed) and a heartbeat.

* The **reader** is trio-websocket's own reader task: it parses frames and,
  through :class:`~trio_chat._websocket.Dispatch`, calls the endpoint's
  handler with each complete message, in the same task (chat: parse,
  rate-limit, pass to the hub; echo: send it back).
* The **writer** is the only task that writes queued data frames: it takes
  everything waiting in the connection's bounded queue and writes it in one
  go, within ``write_timeout``, else the connection is aborted.  It runs only
  while there is a backlog: a client that keeps up is written to directly by
  the hub (see :class:`~trio_chat._hub.Outlet`), and an idle connection holds
  no writer task.
* The **heartbeat** (the connection nursery's body, not a task of its own)
  pings every ``ping_interval`` and aborts the connection when no pong comes
  within ``pong_timeout``.  It is also the read deadline: a pong
  cannot be parsed before the frame in front of it is complete, so a client
  that stops in the middle of a frame (like one whose host vanished, or a
  frozen process) is aborted within ``ping_interval + pong_timeout``
  (``tests/test_faults.py``).  A client pausing *between* the fragments of a
  message can still answer pings; it holds at most ``max_message_bytes``.

When the reader or the heartbeat ends, or the writer fails, the others are
stopped, the hub is told, and the WebSocket is closed (or aborted) under a
deadline.  (A writer that has written its backlog just ends.)
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ._frames import binary_frame, text_frame
from ._hub import Hub, HubCounters, Outlet
from ._protocol import (
    Chat,
    Direct,
    Join,
    Presence,
    ProtocolError,
    Welcome,
    parse_client_frame,
)
from ._ratelimit import RateLimiter
from ._stream import WireStream
from ._websocket import Dispatch, reader_task

if TYPE_CHECKING:
    from ._auth import Identity
    from ._config import Config
    from ._metrics import Metrics

__all__ = ["ChatHandler", "Connection", "EchoHandler"]

log = logging.getLogger("trio_chat.connection")

#: Invalid frames in a row that close a connection with 1008.
MAX_INVALID_IN_A_ROW = 20
#: Rate-limit errors in one window after which a connection is closed (1008).
MAX_RATE_STRIKES = 3
#: Seconds allowed for the closing handshake.
CLOSE_TIMEOUT = 2.0

_RATED = (Chat, Direct, Presence)
#: join/leave/typing frames a window allows: this many times the rated
#: frames, and at least CONTROL_RATE_FLOOR.
CONTROL_RATE_FACTOR = 4
CONTROL_RATE_FLOOR = 100


class Connection:
    """An accepted WebSocket and the tasks that serve it.

    One nursery per connection holds the reader (:meth:`read`, started
    before the opening handshake), the heartbeat (:meth:`run` itself, in the
    nursery's body) and, while frames are queued, the writer (started when
    the queue wakes its owner).  When the connection ends, they all stop and
    the WebSocket is closed under a deadline.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        dispatch: Dispatch,
        stream: WireStream,
        config: Config,
        counters: HubCounters,
        *,
        user_id: str = "",
        peer: str = "",
    ) -> None:
        self.ws = ws
        self.dispatch = dispatch
        dispatch.counters = counters
        dispatch.on_close = self._websocket_closed
        self.stream = stream
        self.config = config
        self.user_id = user_id
        self.peer = peer
        self.session_id = secrets.token_urlsafe(9)
        self.started = time.monotonic()
        self._running = False
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        #: The heartbeat's current wait (a sleep or a ping): its deadline
        #: times the heartbeat, and cancelling it stops the heartbeat.
        self._heartbeat_scope = trio.CancelScope()
        #: Set while a writer task runs (there is a backlog).
        self._writer_scope: trio.CancelScope | None = None
        self._writer_exit: trio.Event | None = None
        #: Cancelled if the connection dies during the opening handshake.
        self.handshake_scope: trio.CancelScope | None = None
        self.outlet = Outlet(stream, config.queue_size, self._on_kill, counters, user_id)

    # ------------------------------------------------------------ control

    def _on_kill(self) -> None:
        if self._running:
            self._stopping = True
            if self._writer_scope is not None:
                self._writer_scope.cancel()
            self._heartbeat_scope.cancel()
        elif self.handshake_scope is not None:
            self.handshake_scope.cancel()

    def close(self, code: int | None, reason: str) -> None:
        """Close now, dropping what is queued (None: abort, no close frame)."""
        self.outlet.kill(code, reason)

    def drain(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop handling messages, flush what is queued, then close with *code*."""
        self.dispatch.stop()
        self.outlet.finish(code, reason)
        if not self._running:
            self._on_kill()

    def send(self, frame: bytes) -> None:
        """Queue one pre-encoded frame for this connection."""
        self.outlet.push(frame)

    def send_error(self, err: ProtocolError) -> None:
        self.outlet.push(text_frame(err.to_event().to_json()))

    # ------------------------------------------------------------ running

    async def read(self) -> None:
        """The reader task: trio-websocket's reader, from handshake to end.

        When it ends the connection is over: the outlet learns why.
        """
        try:
            await reader_task(self.ws)
        finally:
            self._websocket_closed()

    def _websocket_closed(self) -> None:
        """The WebSocket is closed or closing: end the connection, saying why."""
        reason = self.ws.closed
        if reason is None or reason.code == 1006:
            # 1006 is trio-websocket's mark for a transport that ended with
            # no close frame (EOF, reset): an abort, not the client's close.
            self.outlet.kill(None, "connection lost")
        else:
            self.outlet.kill(reason.code, reason.reason or "closed by client")

    async def run(
        self, handler: Callable[[str | bytes], Awaitable[None]], nursery: trio.Nursery
    ) -> None:
        """Serve the connection until it ends, then close it under a deadline.

        Call it in the body of the connection's *nursery* (the one running
        :meth:`read`): it starts handing messages to *handler* and runs the
        heartbeat itself, so the nursery's body is the heartbeat task; the
        writer task is started in *nursery* whenever frames are waiting.
        """
        self.dispatch.start(handler)
        self._nursery = nursery
        self._running = True
        queue = self.outlet.queue
        queue.wake = self._start_writer
        if self.outlet.closed:  # killed before we started
            self._on_kill()
        elif len(queue) or queue.closed:
            self._start_writer()
        try:
            try:
                await self._heartbeat()
            except Exception:
                log.exception("unexpected error in the heartbeat of %s", self.user_id)
                self.outlet.kill(1011, "internal error")
            # However it ended (killed, finished, no pong), the writer stops
            # too; once it has, close.
            self._on_kill()
            if self._writer_scope is not None:
                self._writer_exit = trio.Event()
                await self._writer_exit.wait()
        finally:
            self._running = False
            self._nursery = None
            queue.wake = None
            self.dispatch.stop()
            await self._close()

    def _start_writer(self) -> None:
        """Frames are waiting (or the queue closed): make sure a writer runs."""
        if self._writer_scope is None and self._nursery is not None:
            self._writer_scope = trio.CancelScope()
            self._nursery.start_soon(self._writer_task)

    async def _writer_task(self) -> None:
        idle = False
        try:
            with self._writer_scope:
                idle = await self._writer()
        except Exception:
            log.exception("unexpected error in the writer of %s", self.user_id)
            self.outlet.kill(1011, "internal error")
        finally:
            self._writer_scope = None
            if self._writer_exit is not None:
                self._writer_exit.set()
            if not idle:
                # Drained, failed or cancelled: the connection is over.
                self._on_kill()

    async def _writer(self) -> bool:
        """Write everything waiting, in one write per wake, until none is left.

        Runs only while there is a backlog.  Returns True when the backlog
        is written and the connection goes on; False when the connection is
        over: the queue was closed (a drain, or a slow consumer) and is now
        empty, or a write failed or took longer than ``write_timeout``.
        """
        queue = self.outlet.queue
        stream = self.stream
        outlet = self.outlet
        timeout = self.config.write_timeout
        while True:
            batch = queue.take_nowait()
            if batch is None:
                return not queue.closed
            data, frames = batch
            try:
                with trio.fail_after(timeout):
                    await stream.send_frames(data)
            except trio.TooSlowError:
                outlet.kill(None, f"write not finished within {timeout:g} s")
                return False
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outlet.kill(None, "connection lost while writing")
                return False
            queue.written(frames)

    async def _heartbeat(self) -> None:
        """Ping every ``ping_interval``; abort when a pong is ``pong_timeout`` late.

        Each wait runs in one cancel scope whose deadline times it and which
        :meth:`_on_kill` cancels to stop the heartbeat (one scope, not a
        sleep's own scope nested in a stop scope: there are thousands).
        """
        interval = self.config.ping_interval
        timeout = self.config.pong_timeout
        while not self._stopping:
            with trio.CancelScope(deadline=trio.current_time() + interval) as scope:
                self._heartbeat_scope = scope
                await trio.sleep_forever()
            if self._stopping:
                return
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                self._heartbeat_scope = scope
                try:
                    await self.ws.ping()
                except ConnectionClosed:
                    return
            if self._stopping:
                return
            if scope.cancelled_caught:
                self.outlet.kill(None, f"no pong within {timeout:g} s")
                return

    async def _close(self) -> None:
        """Close the WebSocket as the outlet's fate says, under a deadline."""
        outlet = self.outlet
        if not outlet.closed:
            outlet.closed = True
            outlet.close_code = 1011
            outlet.close_reason = "internal error"
        code = outlet.close_code
        with trio.move_on_after(CLOSE_TIMEOUT):
            if code is None or not self.stream.writable:
                await self.stream.aclose()  # abort: no close frame
            elif self.ws.closed is None:
                try:
                    await self.ws.aclose(code, outlet.close_reason[:120] or None)
                except Exception:  # noqa: BLE001 - closing is best effort
                    await self.stream.aclose()
        await self.stream.aclose()


def welcome_frame(session_id: str, user_id: str, config: Config) -> bytes:
    limits = {
        "max_message_bytes": config.max_message_bytes,
        "max_content_chars": config.max_content_chars,
        "rate": {"messages": config.rate_messages, "per_seconds": config.rate_seconds},
        "ping_interval_seconds": config.ping_interval,
    }
    return text_frame(Welcome(session_id, user_id, limits).to_json())


class ChatHandler:
    """The chat endpoint's reader logic for one connection."""

    def __init__(
        self,
        conn: Connection,
        hub: Hub,
        identity: Identity,
        metrics: Metrics | None = None,
    ) -> None:
        self.conn = conn
        self.hub = hub
        self.identity = identity
        self.metrics = metrics
        config = conn.config
        self.max_bytes = config.max_message_bytes
        self.max_chars = config.max_content_chars
        self.limiter = RateLimiter(config.rate_messages, config.rate_seconds)
        #: join, leave and typing are outside the protocol's rate, but each
        #: can make the server write to a whole room: a much wider window
        #: keeps a flood of them from amplifying without bound.
        self.control_limiter = RateLimiter(
            max(config.rate_messages * CONTROL_RATE_FACTOR, CONTROL_RATE_FLOOR),
            config.rate_seconds,
        )
        self.invalid_in_a_row = 0

    async def __call__(self, message: str | bytes) -> None:
        conn = self.conn
        try:
            if isinstance(message, bytes):
                raise ProtocolError(400, "binary frames are not accepted; send JSON text")
            if len(message) * 4 > self.max_bytes and len(message.encode()) > self.max_bytes:
                conn.close(1009, f"frame larger than {self.max_bytes} bytes")
                return
            event = parse_client_frame(message, max_content_chars=self.max_chars)
        except ProtocolError as err:
            self._refuse(err)
            self.invalid_in_a_row += 1
            if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW:
                conn.close(1008, f"{MAX_INVALID_IN_A_ROW} invalid frames in a row")
            return
        except Exception:
            log.exception("unexpected error reading a frame from %s", conn.user_id)
            self._refuse(ProtocolError(500, "internal server error"))
            return
        self.invalid_in_a_row = 0
        limiter = self.limiter if isinstance(event, _RATED) else self.control_limiter
        retry = limiter.check(trio.current_time())
        if retry is not None:
            if self.metrics is not None:
                self.metrics.rate_limited += 1
            if limiter.strikes > MAX_RATE_STRIKES:
                conn.close(1008, "still flooding after rate-limit errors")
                return
            self._refuse(
                ProtocolError(429, f"rate limit exceeded: retry in {retry} ms", event.ref, retry)
            )
            return
        if isinstance(event, Join) and not self.identity.may_join(event.room):
            self._refuse(ProtocolError(403, f"not allowed to join room {event.room!r}", event.ref))
            return
        await self.hub.submit(conn.outlet, event)

    def _refuse(self, err: ProtocolError) -> None:
        self.hub.counters.error(err.code)
        self.conn.send_error(err)


class EchoHandler:
    """The echo endpoint: every message goes back to its sender as it came."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def __call__(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.conn.send(text_frame(message))
        else:
            self.conn.send(binary_frame(message))
