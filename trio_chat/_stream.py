"""The transport under each WebSocket: serialized writes.

:class:`WireStream` owns every write to the real transport (a socket, or
TLS, or an in-memory stream in tests).  It does two things:

* serializes *every* write -- the connection layer's own (the 101 response,
  pings, pongs, close frames) and the pre-encoded data frames -- through one
  lock, so only whole frames ever interleave;
* offers :meth:`write_nowait`, a synchronous, non-blocking write straight to
  the socket for whoever holds no lock and has nothing queued (the hub's fast
  path).  What the kernel does not take becomes the *tail*, written before
  anything else by the next locked write.

Safety rules: a cancelled or failed write leaves the stream *broken* (every
later write fails, so the connection aborts instead of sending a close frame
after half a frame); data frames are refused once a close frame has gone
through :meth:`send_all`; the
socket's file descriptor is read at each write, never cached, so a reused
descriptor is never written to.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["WireStream", "receive_from", "receive_nowait"]

_RETRY = (BlockingIOError, InterruptedError)
#: Bytes read at most when the caller does not say.
_RECEIVE_SIZE = 65536
#: First byte of a server close frame: FIN + opcode 0x8, no RSV bits.
_CLOSE_FRAME = b"\x88"


async def receive_from(transport: trio.abc.Stream, max_bytes: int) -> bytes | bytearray:
    """One read of *transport*, as :meth:`WireStream.receive_some` reads:
    the descriptor itself for a plain socket, else the stream's own read.
    (For whoever reads before a :class:`WireStream` owns the transport.)"""
    if isinstance(transport, trio.SocketStream):
        return await _read_socket(transport.socket, max_bytes)
    return await transport.receive_some(max_bytes)


def receive_nowait(transport: trio.abc.Stream, max_bytes: int) -> bytes | None:
    """What a plain socket *transport* holds now (at most *max_bytes*;
    ``b""`` at end of file), without waiting; None when nothing is there
    yet or *transport* is not a plain socket (then read it as usual).
    A reset raises :class:`trio.BrokenResourceError`."""
    if not isinstance(transport, trio.SocketStream):
        return None
    fd = transport.socket.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("socket is closed")
    try:
        return os.read(fd, max_bytes)
    except _RETRY:
        return None
    except OSError as exc:
        raise trio.BrokenResourceError(f"read failed: {exc}") from exc


async def _read_socket(sock: trio.socket.SocketType, size: int) -> bytes:
    """At most *size* bytes from *sock*, ``b""`` at end of file (one system
    call and one checkpoint when data is waiting); a reset or failed read
    raises :class:`trio.BrokenResourceError`, a closed socket
    :class:`trio.ClosedResourceError`, as ``SocketStream`` does."""
    if size < 1:
        raise ValueError("max_bytes must be >= 1")
    await trio.lowlevel.checkpoint_if_cancelled()
    waited = False
    while True:
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket is closed")
        try:
            data = os.read(fd, size)
        except _RETRY:
            await trio.lowlevel.wait_readable(sock)
            waited = True
            continue
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("socket is closed") from exc
            raise trio.BrokenResourceError(f"read failed: {exc}") from exc
        if not waited:
            # Data was there at once: still a schedule point, so that a
            # client that never stops sending cannot starve the others
            # (and no cancellation here, which would lose the data).
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data


class WireStream(trio.abc.Stream):
    """A :class:`trio.abc.Stream` wrapper that owns all writes to *transport*.

    Args:
        transport: the connected stream.  A :class:`trio.SocketStream` gets the
            non-blocking fast path; any other stream (TLS, memory) works
            through its own ``send_all``.

    Reads go straight to the transport (the reader uses
    ``transport.receive_some`` itself).
    """

    __slots__ = (
        "_broken",
        "_close_sent",
        "_closed",
        "_done",
        "_lock",
        "_sock",
        "_tail",
        "transport",
    )

    def __init__(self, transport: trio.abc.Stream) -> None:
        self.transport = transport
        self._lock = trio.StrictFIFOLock()
        self._tail = b""
        self._broken = False
        self._closed = False
        self._close_sent = False
        self._done = False
        sock = getattr(transport, "socket", None)
        self._sock = sock if isinstance(transport, trio.SocketStream) else None

    # ------------------------------------------------------------- reading

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Read from the transport: at most *max_bytes* (default 65536),
        ``b""`` at end of file.

        On a plain socket it reads the descriptor itself (one system call
        and one checkpoint per read, and a short stack while an idle
        connection waits); a reset or failed read raises
        :class:`trio.BrokenResourceError`, a closed socket
        :class:`trio.ClosedResourceError`, as ``SocketStream`` does.
        """
        sock = self._sock
        if sock is None:
            return await self.transport.receive_some(max_bytes)
        return await _read_socket(sock, _RECEIVE_SIZE if max_bytes is None else max_bytes)

    # ------------------------------------------------------------- writing

    @property
    def busy(self) -> bool:
        """A write is in flight or a tail is waiting: queue, do not write."""
        return self._lock.locked() or bool(self._tail)

    @property
    def has_tail(self) -> bool:
        return bool(self._tail)

    @property
    def writable(self) -> bool:
        """Data frames may still be written."""
        return not (self._broken or self._closed or self._close_sent)

    @property
    def broken(self) -> bool:
        """A write failed or was cancelled part-way: nothing more may be written."""
        return self._broken

    def write_nowait(self, data: bytes) -> bool:
        """Write *data* now, without blocking, if nothing else is in the way.

        Returns False, having written nothing, when the caller must queue
        *data* instead: a write is in flight, a tail is waiting, or the
        transport is not a plain socket.  Otherwise returns True: the kernel
        took *data*, and whatever it did not take is kept as the tail, which
        the caller must get written by a locked write (:meth:`send_frames`
        with ``b""``) -- until then :attr:`busy` is true.

        Raises :class:`trio.BrokenResourceError` if the stream is broken or
        closed (check :attr:`writable` first to avoid it).
        """
        if self._sock is None or self.busy:
            return False
        if not self.writable:
            raise trio.BrokenResourceError("connection is closed")
        self._write_some(data)
        return True

    def _write_some(self, data: bytes) -> bool:
        """One non-blocking write; what the kernel does not take becomes the
        tail.  True if it took all of *data*."""
        assert self._sock is not None
        fd = self._sock.fileno()
        if fd < 0:
            self._broken = True
            raise trio.BrokenResourceError("socket is closed")
        try:
            sent = os.write(fd, data)
        except _RETRY:
            sent = 0
        except OSError as exc:
            self._broken = True
            raise trio.BrokenResourceError(f"write failed: {exc}") from exc
        if sent < len(data):
            self._tail = data[sent:]
            return False
        return True

    async def send_frames(self, data: bytes) -> None:
        """Write whole data frames (and any tail first), under the lock.

        Refuses, with :class:`trio.BrokenResourceError`, once the WebSocket is
        closing: no data frame may follow a close frame.
        """
        async with self._lock:
            if not self.writable:
                raise trio.BrokenResourceError("connection is closed")
            await self._write_locked(data)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """The connection layer's write (as :meth:`send_all`), now, if
        nothing is in the way.

        Returns False, having written nothing, when a write is in flight, a
        tail is waiting or the transport is not a plain socket: then
        :meth:`send_all` must write *data*.  Otherwise True: the kernel took
        *data*, and what it did not take is the tail (:attr:`has_tail`),
        which ``send_all(b"")`` must finish.  The kernel usually takes a
        control frame, or the 101 response, whole and at once: no lock to
        take, no scope to enter.

        Raises :class:`trio.BrokenResourceError` if the stream is broken or
        closed.
        """
        if self._sock is None or self.busy:
            return False
        if self._broken or self._closed:
            raise trio.BrokenResourceError("stream is broken or closed")
        data = bytes(data)
        if data[:1] == _CLOSE_FRAME:
            self._close_sent = True  # see send_all
        self._write_some(data)
        return True

    async def send_all(
        self, data: bytes | bytearray | memoryview, *, limit: float | None = None
    ) -> None:
        """The connection layer's writes: the 101 response, pings, pongs, close.

        *limit* (seconds) bounds the write itself, not the wait for the lock (which a
        data write may hold, under its own timeout): past it, raises
        :class:`trio.TooSlowError` and the stream is broken.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.send_nowait(data):
            if not self._tail:
                # Still a schedule point, as a write under the lock was:
                # the other tasks (the peer's, in a test) run between a
                # connection's control frames.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            data = b""  # the locked write below finishes the tail
        async with self._lock:
            if self._broken or self._closed:
                raise trio.BrokenResourceError("stream is broken or closed")
            data = bytes(data)
            if data[:1] == _CLOSE_FRAME:
                # The connection layer writes each control frame in its own
                # send_all, and a server close frame always starts 0x88 (the
                # HTTP response starts "H").  Once it is on its way no data
                # frame may follow.
                self._close_sent = True
            if limit is None:
                await self._write_locked(data)
            else:
                with trio.fail_after(limit):
                    await self._write_locked(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def _write_locked(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if not data:
            await trio.lowlevel.checkpoint()
            return
        try:
            if self._sock is None:
                await self.transport.send_all(data)
            else:
                await self._socket_write(data)
        except BaseException:
            # Cancelled or failed, perhaps half-way through a frame: nothing
            # more may be written to this transport.
            self._broken = True
            raise

    async def _socket_write(self, data: bytes) -> None:
        sock = self._sock
        assert sock is not None
        view = memoryview(data)
        while view:
            fd = sock.fileno()
            if fd < 0:
                raise trio.ClosedResourceError("socket is closed")
            try:
                sent = os.write(fd, view)
            except _RETRY:
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("socket is closed") from exc
                raise trio.BrokenResourceError(f"write failed: {exc}") from exc
            view = view[sent:]
        # No checkpoint after a write the kernel took at once: yielding after
        # every write would cost more than the write itself.

    # ------------------------------------------------------------- closing

    @property
    def closed(self) -> bool:
        """:meth:`aclose` has closed the transport (and was not cancelled)."""
        return self._done

    async def aclose(self) -> None:
        self._closed = True
        await self.transport.aclose()
        self._done = True
