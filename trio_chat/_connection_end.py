"""How a connection writes, and how it ends: the base of
:class:`~trio_chat._connection.Connection`.

* :meth:`ConnectionEnd.write_engine` writes what the frame engine answers by
  itself (pongs, the close reply, a close frame);
* the **writer** task writes the queued data frames while there is a backlog;
* :meth:`ConnectionEnd._close` closes the WebSocket as the outlet's fate says,
  under a deadline, and the **closer** task does it when the server ends the
  connection while the reader still reads.

The state is :class:`~trio_chat._connection.Connection`'s (its slots); this
class holds the code of these jobs only.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from ._http import linger
from ._hub import SLOW_CONSUMER, Outlet
from ._stream import WireStream
from ._ws import WebSocket

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["CLOSE_TIMEOUT", "LINGER_BYTES", "ConnectionEnd"]

log = logging.getLogger("trio_chat.connection")

#: Seconds allowed for the closing handshake.
CLOSE_TIMEOUT = 2.0
#: Bytes read and thrown away, at most, after the server closed a connection
#: that was still sending (see :meth:`ConnectionEnd._linger`).
LINGER_BYTES = 1 << 20


class ConnectionEnd:
    """The writing and closing half of a connection (see the module doc)."""

    __slots__ = (
        "_closer_exit",
        "_finished",
        "_grace",
        "_handling",
        "_reader_exit",
        "_writer_exit",
        "_writer_scope",
    )

    stream: WireStream
    config: Config
    outlet: Outlet
    ws: WebSocket
    user_id: str
    _nursery: trio.Nursery | None
    _reader_ended: bool

    def __init__(self) -> None:
        #: Messages go to the handler (not once the connection is ending).
        self._handling = False
        #: Set while a closer task runs (see :meth:`_closer`).
        self._closer_exit: trio.Event | None = None
        #: Set while a writer task runs (there is a backlog).
        self._writer_scope: trio.CancelScope | None = None
        self._writer_exit: trio.Event | None = None
        self._reader_exit: trio.Event | None = None
        #: The engine is done (closing handshake over, or failed): close the
        #: transport, read no more.
        self._finished = False
        #: When a slow consumer's grace ends (trio time), once it is one.
        self._grace: float | None = None

    def _on_kill(self) -> None:
        raise NotImplementedError

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
        return await self._write(writes)

    async def _write(self, writes: list[bytes]) -> bool:
        """Write the engine's frames *writes* (see :meth:`write_engine`)."""
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

    async def _writer_done(self) -> None:
        """Wait until no writer task runs (it has been told to stop)."""
        if self._writer_scope is not None:
            self._writer_exit = trio.Event()
            await self._writer_exit.wait()

    def _start_closer(self) -> None:
        if self._closer_exit is None and self._nursery is not None:
            self._closer_exit = trio.Event()
            self._nursery.start_soon(self._closer)

    async def _closer(self) -> None:
        """The server ends the connection while the reader still reads:
        once the writer has stopped, close (the reader reads the client's
        reply meanwhile); then stop the reader if it has not ended."""
        try:
            await self._writer_done()
            await self._close()
            if not self._reader_ended and self._nursery is not None:
                self._nursery.cancel_scope.cancel()
        finally:
            assert self._closer_exit is not None
            self._closer_exit.set()

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
        if send or (code is not None and not self._reader_ended) or self._must_linger():
            # (Usually the closing handshake is already over: nothing to wait for.)
            with trio.CancelScope(deadline=deadline):
                if send:
                    assert code is not None
                    reason = outlet.close_reason.encode("utf-8")[:120].decode("utf-8", "ignore")
                    ws.send_close(code, reason)
                    await self.write_engine()
                if code is not None and not self._reader_ended and not self._finished:
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
            and self._reader_ended
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
