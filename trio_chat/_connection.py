"""One accepted WebSocket: a reader, a writer (when needed) and a heartbeat.

* The **reader** (:meth:`Connection.read`) reads the socket, feeds the bytes
  to the connection's :class:`~trio_chat._ws.WebSocket` (the frame engine)
  and calls the endpoint's handler with each complete message, in the same
  task (chat: parse, rate-limit, pass to the hub; echo: send it back).  It
  also writes what the engine answers by itself -- pongs, the close reply, a
  close frame for a protocol error -- and it alone decides that the closing
  handshake is over.
* The **writer** is the only task that writes queued data frames: it takes
  everything waiting in the connection's bounded queue and writes it in one
  go, within ``write_timeout``, else the connection is aborted.  It runs only
  while there is a backlog: a client that keeps up is written to directly by
  the hub (see :class:`~trio_chat._hub.Outlet`), and an idle connection holds
  no writer task.
* The **heartbeat** (:mod:`trio_chat._heartbeat`: the connection nursery's
  body, not a task of its own) pings every ``ping_interval`` and aborts the
  connection when no pong comes within ``pong_timeout``; it is also the read
  deadline.

When the reader or the heartbeat ends, or the writer fails, the others are
stopped, the hub is told, and the WebSocket is closed (or aborted) under a
deadline.  (A writer that has written its backlog just ends.)  A slow
consumer (its queue overflowed) gets ``slow_consumer_grace`` seconds for the
write in flight and its 1013 close frame, else it is aborted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ._frames import Encoded, text_frame
from ._handlers import control_rate
from ._heartbeat import Heartbeat
from ._http import linger
from ._hub import SLOW_CONSUMER, HubCounters, Outlet
from ._session_ids import session_id
from ._stream import WireStream
from ._ws import WebSocket

if TYPE_CHECKING:
    from ._config import Config
    from ._deflate import DeflateParams
    from ._protocol import ProtocolError

__all__ = ["Connection", "Handler"]

log = logging.getLogger("trio_chat.connection")

#: Seconds allowed for the closing handshake.
CLOSE_TIMEOUT = 2.0
#: Bytes asked of the socket per read.
RECEIVE_SIZE = 65536
#: Bytes read and thrown away, at most, after the server closed a connection
#: that was still sending (see :meth:`Connection._linger`).
LINGER_BYTES = 1 << 20

#: What the connection's reader calls with each message (see ``_handlers``).
Handler = Callable[[str | bytes], Awaitable[None]]


class Connection:
    """An accepted WebSocket and the tasks that serve it.

    One nursery per connection holds the reader (started by :meth:`run`),
    the heartbeat (:meth:`run` itself, in the nursery's body) and, while
    frames are queued, the writer (started when the queue wakes its owner).
    When the connection ends, they all stop and the WebSocket is closed
    under a deadline.

    Args:
        stream: the transport, wrapped for serialized writes.
        deflate: the agreed permessage-deflate parameters, if any.
        prefix: bytes the HTTP front read after the request head (the
            client's first frames, if it did not wait for the 101).
    """

    __slots__ = (
        "_finished",
        "_grace",
        "_handler",
        "_handling",
        "_heartbeat",
        "_nursery",
        "_prefix",
        "_reader_exit",
        "_reader_running",
        "_running",
        "_stopping",
        "_writer_exit",
        "_writer_scope",
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
        self._handling = False
        self._running = False
        self._stopping = False
        self._nursery: trio.Nursery | None = None
        self._heartbeat = Heartbeat()
        #: Set while a writer task runs (there is a backlog).
        self._writer_scope: trio.CancelScope | None = None
        self._writer_exit: trio.Event | None = None
        self._reader_running = False
        self._reader_exit: trio.Event | None = None
        #: The engine is done (closing handshake over, or failed): close the
        #: transport, read no more.
        self._finished = False
        #: When a slow consumer's grace ends (trio time), once it is one.
        self._grace: float | None = None
        #: Cancelled if the connection dies during the opening handshake.
        self.handshake_scope: trio.CancelScope | None = None
        self.outlet = Outlet(stream, config.queue_size, self._on_kill, counters, user_id)
        self.outlet.deflate = self.deflate_bits

    # ------------------------------------------------------------ control

    def is_stopping(self) -> bool:
        """The connection is ending: the heartbeat and writer stop.

        (A method: it changes while the heartbeat awaits.)"""
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
            self._heartbeat.wake()
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
        """The reader task: every byte from the client, until the end.

        Messages go to the handler in this task (no hand-off); whatever the
        engine answers by itself is written here too.  When it ends the
        connection is over: the outlet learns why.
        """
        ws = self.ws
        receive = self.stream.receive_some
        data: bytes | bytearray = self._prefix
        self._prefix = b""
        self._reader_running = True
        try:
            if not data:
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
                    self._heartbeat.ponged()
                if ws.wants_write or not ws.open:
                    await self.write_engine()
                if self._finished:
                    return
                data = await receive(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.outlet.kill(None, "connection lost")
        finally:
            self._reader_running = False
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

    async def write_engine(self) -> bool:
        """Write the engine's own frames; True once the transport must close.

        When the engine has left the OPEN state (the client's close frame,
        a protocol error, a budget, EOF) the outlet is closed first, with
        what the engine sent or received, so that no data frame follows.
        """
        ws = self.ws
        writes = ws.data_to_send()
        if not ws.open and not self.outlet.closed:
            self._handling = False
            first = ws.first_close
            if first is None:
                self.outlet.kill(None, "connection lost")
            else:
                reason = first.reason or ("closed by client" if first.by_client else "closed")
                # Drop what is queued, but let a write in flight finish so
                # that the close frame follows whole frames.
                self.outlet.finish(first.code, reason, drop=True)
        stream = self.stream
        timeout = self.config.write_timeout
        for data in writes:
            if not data:
                self._finished = True  # the closing handshake is over
                break
            try:
                await stream.send_all(data, limit=timeout)
            except trio.TooSlowError:
                self.outlet.kill(None, f"write not finished within {timeout:g} s")
                self._finished = True
                break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.outlet.kill(None, "connection lost while writing")
                self._finished = True
                break
        return self._finished

    # ------------------------------------------------------------ running

    async def run(self, handler: Handler, nursery: trio.Nursery) -> None:
        """Serve the connection until it ends, then close it under a deadline.

        Call it in the body of the connection's *nursery*: it starts the
        reader, which hands messages to *handler*, and runs the heartbeat
        itself, so the nursery's body is the heartbeat task; the writer task
        is started in *nursery* whenever frames are waiting.
        """
        self._handler = handler
        self._handling = not self.outlet.closed
        self._nursery = nursery
        self._running = True
        queue = self.outlet.queue
        queue.wake = self._queue_woke
        nursery.start_soon(self.read)
        if self.outlet.closed:  # killed or drained before we started
            self._on_kill()
        elif len(queue):
            self._start_writer()
        try:
            try:
                await self._heartbeat.run(self)
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
            self._handling = False
            queue.wake = None
            await self._close()

    def _queue_woke(self) -> None:
        """Frames are waiting (or the queue closed): make sure a writer runs.

        A slow consumer's queue closes with what it held dropped: from then
        on the write in flight and the 1013 close frame have
        ``slow_consumer_grace`` seconds in all.
        """
        outlet = self.outlet
        if outlet.closed and outlet.close_code == SLOW_CONSUMER and self._grace is None:
            self._grace = trio.current_time() + self.config.slow_consumer_grace
            if self._writer_scope is not None:
                self._writer_scope.deadline = min(self._writer_scope.deadline, self._grace)
        if (
            outlet.queue.closed
            and self._writer_scope is None
            and not len(outlet.queue)
            and not self.stream.has_tail
        ):
            # Closed with nothing left to write (the usual end): no writer
            # task to start just to find that out.
            if self._nursery is not None:
                self._on_kill()
            return
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer_scope is None and self._nursery is not None:
            self._writer_scope = trio.CancelScope(deadline=self._grace or math.inf)
            self._nursery.start_soon(self._writer_task)

    async def _writer_task(self) -> None:
        idle = False
        try:
            assert self._writer_scope is not None
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

    async def _close(self) -> None:
        """Close the WebSocket as the outlet's fate says, under a deadline.

        A close frame goes out only if the connection can still take whole
        frames; then the reader is given the rest of the deadline to see the
        client's close reply.  Otherwise (an abort, a broken stream) the
        transport is just closed.
        """
        outlet = self.outlet
        ws = self.ws
        if not outlet.closed:
            outlet.closed = True
            outlet.close_code = 1011
            outlet.close_reason = "internal error"
        code = outlet.close_code
        deadline = trio.current_time() + CLOSE_TIMEOUT
        if self._grace is not None:
            deadline = min(deadline, self._grace)
        send = code is not None and ws.open and self.stream.writable
        if send or (code is not None and self._reader_running) or self._must_linger():
            # (Usually the closing handshake is already over: nothing to wait for.)
            with trio.CancelScope(deadline=deadline):
                if send:
                    assert code is not None
                    reason = outlet.close_reason.encode("utf-8")[:120].decode("utf-8", "ignore")
                    ws.send_close(code, reason)
                    await self.write_engine()
                if code is not None and self._reader_running and not self._finished:
                    self._reader_exit = trio.Event()
                    await self._reader_exit.wait()
                if self._must_linger():
                    await self._linger()
        await self.stream.aclose()

    def _must_linger(self) -> bool:
        """Whether the client may still be sending when its reader stopped.

        That is the case when the server ended the closing handshake on its
        own (a protocol error, a budget, a flood): the client's close frame
        never came, and the reader no longer reads.
        """
        ws = self.ws
        sent = ws.close_sent()
        return (
            sent is not None
            and not self._reader_running
            and not self.stream.broken
            and not any(close.by_client for close in ws.closes)
        )

    async def _linger(self) -> None:
        """Half-close, then read and discard until the client's EOF.

        The client's bytes left unread would make the kernel answer the
        close with a reset, which can destroy the close frame in the
        client's own buffer before the client reads it: the client would
        see a lost connection instead of the close code.  At most
        :data:`LINGER_BYTES`, within the rest of the close deadline.
        """
        await linger(self.stream.transport, LINGER_BYTES)
