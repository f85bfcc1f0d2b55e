"""Bounded frame queues between the hub and each connection's writer.

The hub puts pre-encoded frames in with :meth:`FrameQueue.put_nowait` (never
blocks); the writer takes *everything* waiting in one call
(:meth:`FrameQueue.take_nowait`, or :meth:`FrameQueue.take_all` to wait),
joined into one bytes object for one write.  It replaces a memory channel here
because there are thousands of these: it holds one list and at most one
parked task, a fraction of a channel's memory, and hands over a whole backlog
in one step.  Its ``wake`` hook lets the owner run a writer task only while
there is a backlog.

Every queue counts the bytes it holds (waiting, and the batch being written)
and reports them to one :class:`OutboundBudget` per server, which bounds them
per connection and in all; the owner (the hub's
:class:`~trio_chat._hub.Outlet`) asks the budget before each put.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import trio

__all__ = ["DEFAULT_QUEUE_BYTES", "DEFAULT_QUEUE_BYTES_TOTAL", "FrameQueue", "OutboundBudget"]

#: Outbound bytes one connection may have queued or in flight (1 MiB).
DEFAULT_QUEUE_BYTES = 1 << 20
#: Outbound bytes all connections together may have queued or in flight.
DEFAULT_QUEUE_BYTES_TOTAL = 256 << 20


class OutboundBudget:
    """The server-wide account of outbound bytes held for connections.

    Args:
        per_connection: bytes one queue may hold (waiting + being written).
        total: bytes every queue together may hold.

    ``held`` is the running total; ``peak`` the highest it has been (for
    tests and benchmarks).  Queues holding bytes are listed in
    :attr:`backlogged`, so that the largest can be found when the total is
    reached (:meth:`largest`): a scan of the connections that have a backlog,
    only when the server-wide bound is hit.
    """

    __slots__ = ("backlogged", "held", "peak", "per_connection", "total")

    def __init__(
        self, per_connection: int = DEFAULT_QUEUE_BYTES, total: int = DEFAULT_QUEUE_BYTES_TOTAL
    ) -> None:
        self.per_connection = per_connection
        self.total = total
        self.held = 0
        self.peak = 0
        #: Queues holding bytes, with their owners (a dict as an ordered set:
        #: the oldest backlog first).
        self.backlogged: dict[FrameQueue, None] = {}

    def _add(self, queue: FrameQueue, n: int) -> None:
        if n:
            if not queue.bytes:
                self.backlogged[queue] = None
            self.held += n
            self.peak = max(self.peak, self.held)

    def _sub(self, queue: FrameQueue, n: int) -> None:
        if n:
            self.held -= n
            if not queue.bytes:
                self.backlogged.pop(queue, None)

    def largest(self) -> Iterator[FrameQueue]:
        """Open queues holding bytes, the largest backlog first (oldest on ties)."""
        queues = [q for q in self.backlogged if not q.closed]
        queues.sort(key=lambda q: q.bytes, reverse=True)
        return iter(queues)

    @property
    def largest_bytes(self) -> int:
        """Bytes held by the queue holding the most (0 if none)."""
        return max((q.bytes for q in self.backlogged), default=0)


class FrameQueue:
    """FIFO of frame chunks with one consumer task.

    ``frames`` counts the frames put in and not yet confirmed written (see
    :meth:`written`), ``bytes`` the bytes; both are what the owner bounds.
    ``owner`` is whatever the owner wants found from the queue (the hub's
    outlet, when the server-wide budget must choose whom to drop).
    """

    __slots__ = (
        "_budget",
        "_bytes_waiting",
        "_chunks",
        "_closed",
        "_frames_waiting",
        "_in_flight",
        "_waiter",
        "bytes",
        "frames",
        "owner",
        "wake",
    )

    def __init__(self, budget: OutboundBudget | None = None, owner: Any = None) -> None:
        self._chunks: list[bytes] = []
        self._frames_waiting = 0
        self._bytes_waiting = 0
        #: Bytes of the batch the writer took and has not confirmed.
        self._in_flight = 0
        #: Frames queued or being written.
        self.frames = 0
        #: Bytes queued or being written.
        self.bytes = 0
        self._budget = budget if budget is not None else OutboundBudget()
        self.owner = owner
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False
        #: Called when data arrives (or the queue closes) and no task is
        #: waiting in :meth:`take_all`: the owner starts a consumer then.
        self.wake: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Bytes the writer took and has not confirmed written."""
        return self._in_flight

    @property
    def waiting_bytes(self) -> int:
        """Bytes queued and not yet taken by the writer."""
        return self._bytes_waiting

    def put_nowait(self, data: bytes, frames: int, held: int | None = None) -> None:
        """Append *data* (holding *frames* whole frames; 0 for a wake-up).

        *held* is the bytes it accounts for, ``len(data)`` by default (a
        wake-up for a transport's unwritten tail accounts for that tail).
        """
        if self._closed:
            raise trio.ClosedResourceError("queue is closed")
        n = len(data) if held is None else held
        self._chunks.append(data)
        self._frames_waiting += frames
        self.frames += frames
        self._bytes_waiting += n
        self._budget._add(self, n)
        self.bytes += n
        self._notify()

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        elif self.wake is not None:
            self.wake()

    def close(self, *, drop: bool = False) -> None:
        """No more puts; :meth:`take_all` drains what is left, then ends.

        With *drop*, what is waiting is discarded first (a write already
        taken by the writer is not affected, and stays counted until
        :meth:`written` or :meth:`release`).
        """
        self._closed = True
        if drop:
            self._chunks.clear()
            self.frames -= self._frames_waiting
            self._frames_waiting = 0
            self._release_waiting()
        self._notify()

    def release(self) -> None:
        """The connection is gone: forget every byte still counted."""
        self._chunks.clear()
        self.frames = self._frames_waiting = 0
        self._release_waiting()
        n, self._in_flight = self._in_flight, 0
        self.bytes -= n
        self._budget._sub(self, n)

    def _release_waiting(self) -> None:
        n, self._bytes_waiting = self._bytes_waiting, 0
        self.bytes -= n
        self._budget._sub(self, n)

    def _take(self) -> tuple[bytes, int]:
        chunks, self._chunks = self._chunks, []
        frames, self._frames_waiting = self._frames_waiting, 0
        self._in_flight += self._bytes_waiting
        self._bytes_waiting = 0
        return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), frames

    async def take_all(self) -> tuple[bytes, int]:
        """Wait for data; return all of it joined, and its frame count.

        Raises :class:`trio.EndOfChannel` once closed and empty.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._chunks:
            if self._closed:
                raise trio.EndOfChannel
            if self._waiter is not None:
                raise trio.BusyResourceError("another task is already taking")
            self._waiter = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            if not self._chunks:
                raise trio.EndOfChannel
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self._take()

    def take_nowait(self) -> tuple[bytes, int] | None:
        """Everything waiting, joined, and its frame count; None if empty."""
        if not self._chunks:
            return None
        return self._take()

    def written(self, frames: int) -> None:
        """The writer confirms *frames* frames (all it took) reached the transport."""
        self.frames -= frames
        n, self._in_flight = self._in_flight, 0
        self.bytes -= n
        self._budget._sub(self, n)
