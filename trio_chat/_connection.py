"""One accepted WebSocket: a reader, a writer (when needed) and a heartbeat.

* The **reader** (:meth:`Connection.read`, the body of the connection's
  nursery: no task of its own) reads the socket, feeds the bytes to the
  connection's :class:`~trio_chat._ws.WebSocket` (the frame engine) and calls
  the endpoint's handler with each complete message, in the same task (chat:
  parse, rate-limit, pass to the hub; echo: send it back).  It also writes
  what the engine answers by itself -- pongs, the close reply, a close frame
  for a protocol error -- and it alone decides that the closing handshake is
  over.
* The **writer** is the only task that writes queued data frames: it takes
  everything waiting in the connection's bounded queue and writes it in one
  go, within ``write_timeout``, else the connection is aborted.  It runs only
  while there is a backlog: a client that keeps up is written to directly by
  the hub (see :class:`~trio_chat._hub.Outlet`), and an idle connection holds
  no writer task.
* The **heartbeat** (:mod:`trio_chat._heartbeat`: one task per server for
  all connections) pings every ``ping_interval`` and aborts the connection
  when no pong comes within ``pong_timeout``; it is also the read deadline.
  A ping the socket does not take at once is written by a task of the
  connection's nursery.

When the reader ends, or the heartbeat or the writer fails, the others are
stopped, the hub is told, and the WebSocket is closed (or aborted) under a
deadline.  (A writer that has written its backlog just ends.)  When the
server ends the connection while the reader still reads (a drain, a kill, a
missing pong), a *closer* task writes the close frame and waits for the
client's reply, while the reader reads it; a connection the client closes
needs no task but its reader.  A slow
consumer (its queue overflowed) gets ``slow_consumer_grace`` seconds for the
write in flight and its 1013 close frame, else it is aborted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._connection_end import CLOSE_TIMEOUT, ConnectionEnd
from ._frames import Encoded, text_frame
from ._handlers import control_rate
from ._heartbeat import Heartbeats
from ._hub import HubCounters, Outlet
from ._session_ids import session_id
from ._stream import WireStream
from ._ws import WebSocket

if TYPE_CHECKING:
    from ._config import Config
    from ._deflate import DeflateParams
    from ._protocol import ProtocolError

__all__ = ["CLOSE_TIMEOUT", "Connection", "Handler"]

log = logging.getLogger("trio_chat.connection")

#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536

#: What the connection's reader calls with each message (see ``_handlers``).
Handler = Callable[[str | bytes], Awaitable[None]]


class Connection(ConnectionEnd):
    """An accepted WebSocket and the tasks that serve it.

    One nursery per connection: its body is the reader (:meth:`run`);
    while frames are queued it holds the writer (started when the queue
    wakes its owner), and when the server ends the connection first, the
    closer.  The server's :class:`~trio_chat._heartbeat.Heartbeats` pings
    it.  When the connection ends, they all stop and the WebSocket is
    closed under a deadline.

    Args:
        stream: the transport, wrapped for serialized writes.
        heartbeats: the server's heartbeat, which pings the connection
            while it runs.
        deflate: the agreed permessage-deflate parameters, if any.
        prefix: bytes the HTTP front read after the request head (the
            client's first frames, if it did not wait for the 101).
    """

    __slots__ = (
        "_handler",
        "_heartbeats",
        "_nursery",
        "_pings",
        "_prefix",
        "_reader",
        "_reader_ended",
        "_running",
        "_stopping",
        "config",
        "counters",
        "deflate_bits",
        "handshake_scope",
        "outlet",
        "peer",
        "session_id",
        "started",
        "stream",
        "user_id",
        "ws",
    )

    def __init__(
        self,
        stream: WireStream,
        config: Config,
        counters: HubCounters,
        heartbeats: Heartbeats,
        *,
        user_id: str = "",
        peer: str = "",
        deflate: DeflateParams | None = None,
        prefix: bytes = b"",
    ) -> None:
        self.stream = stream
        self.config = config
        self.counters = counters
        self.user_id = user_id
        self.peer = peer
        self.ws = WebSocket(
            max_message_bytes=config.max_message_bytes,
            deflate=deflate is not None,
            max_pings=control_rate(config),
            ping_seconds=config.rate_seconds,
            now=trio.current_time,
        )
        #: The window the hub compresses this client's frames with (0: none).
        self.deflate_bits = 0 if deflate is None else deflate.server_bits
        self._prefix = prefix
        self.session_id = session_id()
        self.started = time.monotonic()
        self._handler: Handler | None = None
        super().__init__()
        self._running = False
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._heartbeats = heartbeats
        self._pings = 0
        #: The reader has returned (the client's side is over).
        self._reader_ended = False
        #: The task that runs the reader (while it runs).
        self._reader: trio.lowlevel.Task | None = None
        #: Cancelled if the connection dies during the opening handshake.
        self.handshake_scope: trio.CancelScope | None = None
        self.outlet = Outlet(stream, config.queue_size, self._on_kill, counters, user_id)
        self.outlet.deflate = self.deflate_bits

    # ------------------------------------------------------------ control

    def is_stopping(self) -> bool:
        """The connection is ending: the heartbeat and writer stop."""
        return self._stopping

    def _on_kill(self) -> None:
        if self._running:
            self._stopping = True
            self._handling = False
            # (cancel() costs even when repeated: it describes the caller
            # first; a connection's end calls this several times.)
            writer = self._writer_scope
            if writer is not None and not writer.cancel_called:
                writer.cancel()
            self._heartbeats.discard(self)
            if not self._reader_ended and trio.lowlevel.current_task() is not self._reader:
                # (The reader itself starts the closer, if need be, once the
                # step that ended the connection is over.)
                self._start_closer()
        elif self.handshake_scope is not None:
            self.handshake_scope.cancel()

    def close(self, code: int | None, reason: str) -> None:
        """Close now, dropping what is queued (None: abort, no close frame)."""
        self._handling = False
        self.outlet.kill(code, reason)

    def drain(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop handling messages, flush what is queued, then close with *code*."""
        self._handling = False
        self.outlet.finish(code, reason)
        if not self._running:
            self._on_kill()

    def send(self, frame: bytes) -> None:
        """Queue one pre-encoded frame for this connection."""
        self.outlet.push(frame)

    def send_message(self, message: str | bytes) -> None:
        """Queue one message, compressed if this client agreed to deflate."""
        if isinstance(message, str):
            encoded = Encoded(message.encode("utf-8"))
        else:
            encoded = Encoded(message, binary=True)
        self.outlet.push(encoded.for_bits(self.deflate_bits))

    def send_error(self, err: ProtocolError) -> None:
        self.outlet.push(text_frame(err.to_event().to_json()))

    def start_task(self, fn: Callable[..., Awaitable[None]], *args: object) -> bool:
        """Run *fn(*args)* in the connection's nursery, so that it ends with
        the connection; False (not started) once the connection is ending."""
        if self._nursery is None or self._stopping:
            return False
        self._nursery.start_soon(fn, *args)
        return True

    # ------------------------------------------------------------ reading

    async def read(self) -> None:
        """The reader: every byte from the client, until the end.

        Messages go to the handler in this task (no hand-off); whatever the
        engine answers by itself is written here too.  When it ends the
        connection is over: the outlet learns why.
        """
        ws = self.ws
        receive = self.stream.receive_some
        data: bytes | bytearray = self._prefix
        self._prefix = b""
        try:
            if not data:
                if self._stopping:
                    self._start_closer()
                data = await receive(RECEIVE_SIZE)
            while True:
                messages = ws.receive(data)
                if ws.wants_write and ws.open:
                    # Pongs first: their pings came before the end of the
                    # messages (a ping between the fragments of a message).
                    await self.write_engine()
                for message in messages:
                    if self._handling:
                        await self._handle(message)
                if ws.ponged:
                    ws.ponged = False
                    self._heartbeats.ponged(self)
                if ws.wants_write or not ws.open:
                    await self.write_engine()
                if self._finished:
                    return
                if self._stopping:
                    self._start_closer()
                data = await receive(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outlet.kill(None, "connection lost")
        finally:
            self._reader_ended = True
            if self._reader_exit is not None:
                self._reader_exit.set()
            # However it ended, the connection is over.
            if not self.outlet.closed:
                self.outlet.kill(None, "connection lost")
            self._on_kill()

    async def _handle(self, message: str | bytes) -> None:
        self.counters.frames_received += 1
        assert self._handler is not None
        try:
            await self._handler(message)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise
        except Exception:
            # Handlers answer their own faults (error 500); this is the last
            # line that keeps one connection's bug from reaching the server.
            log.exception("unexpected error handling a message")

    # ------------------------------------------------------------ heartbeat

    def ping(self) -> bool:
        """The heartbeat's ping (see :class:`~trio_chat._heartbeat.Heartbeats`):
        written now when the socket takes it whole, else by a task; False
        when the connection is ending (no more pings)."""
        ws = self.ws
        if self._stopping or not ws.open:
            return False
        self._pings += 1
        ws.send_ping(self._pings.to_bytes(4, "big"))
        data = b"".join(ws.data_to_send())
        stream = self.stream
        try:
            written = stream.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outlet.kill(None, "connection lost while writing")
            return False
        if not written or stream.has_tail:
            self.start_task(self._write_late, b"" if written else data)
        return not self._stopping

    async def _write_late(self, data: bytes) -> None:
        """Write a ping the socket did not take at once (and any tail)."""
        timeout = self.config.write_timeout
        try:
            await self.stream.send_all(data, limit=timeout)
        except trio.TooSlowError:
            self.outlet.kill(None, f"write not finished within {timeout:g} s")
            self._finished = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outlet.kill(None, "connection lost while writing")
            self._finished = True

    def pong_late(self) -> None:
        """No pong within ``pong_timeout`` of the ping: abort."""
        if self.ws.pong_pending and not self._stopping:
            self.outlet.kill(None, f"no pong within {self.config.pong_timeout:g} s")

    # ------------------------------------------------------------ running

    async def run(self, handler: Handler, nursery: trio.Nursery) -> None:
        """Serve the connection until it ends, then close it under a deadline.

        Call it in the body of the connection's *nursery*: the body is the
        reader, which hands messages to *handler*; the heartbeat pings the
        connection meanwhile; the writer task is started in *nursery*
        whenever frames are waiting, the closer when the server ends the
        connection while the reader still reads.
        """
        self._handler = handler
        self._handling = not self.outlet.closed
        self._nursery = nursery
        self._running = True
        queue = self.outlet.queue
        queue.wake = self._queue_woke
        self._heartbeats.add(self)
        self._reader = trio.lowlevel.current_task()
        if self.outlet.closed:  # killed or drained before we started
            self._on_kill()
        elif len(queue):
            self._start_writer()
        try:
            await self.read()
            # The client's side is over (or the closer closed the transport).
            if self._closer_exit is not None:
                await self._closer_exit.wait()
            else:
                await self._writer_done()
        finally:
            self._heartbeats.discard(self)
            self._reader = None
            self._running = False
            self._nursery = None
            self._handling = False
            queue.wake = None
            if self._closer_exit is None:
                await self._close()
